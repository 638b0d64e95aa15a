"""Through the real trainer: the SeqIO mixture's iterator state rides in the checkpoint and a resumed
run sees the same batches (bitwise-equal losses) as an uninterrupted one."""

import json
import shutil
from pathlib import Path

import pytest

from data_fixtures import setup_data
from mathjax_train.config import load_config

pytestmark = pytest.mark.slow
SMOKE = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"


def _cfg(out, paths, *extra):
    return load_config(
        str(SMOKE),
        [
            f"output_dir={out}",
            "model.dtype=float32",
            "model.vocab_size=320",
            "model.bos_token_id=1",
            "model.eos_token_id=[2]",
            "model.max_position_embeddings=256",
            "train.seq_len=160",
            "train.steps=6",
            "train.log_every_steps=1",
            "checkpoint.every_steps=3",
            "data.mixture=gsm8k_math_synthetic",
            "data.template=question_answer",
            f"data.tokenizer={paths['tok']}",
            f"data.data_dir={paths['manual']}",
            f"data.jsonl=[{paths['synth']}]",
            *extra,
        ],
    )


def _metrics(out):
    return [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]


def test_resumed_training_sees_the_same_data(tmp_path):
    import orbax.checkpoint as ocp

    from mathjax_train.train.checkpointing import TrainCheckpointer
    from mathjax_train.train.trainer import train

    paths = setup_data(tmp_path / "data")
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    done = train(_cfg(straight, paths), log=lambda *_: None)
    assert done["status"] == "finished" and done["data_state"]["counters"]["examples"] > 0
    # the same run interrupted after step 3: its step-3 checkpoint, and nothing later
    shutil.copytree(straight, resumed)
    shutil.rmtree(resumed / "checkpoints" / "6")
    ckpt = TrainCheckpointer(str(resumed), _cfg(resumed, paths).checkpoint)
    assert ckpt.latest_step() == 3
    meta = ckpt.manager.restore(3, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    ckpt.close()
    assert meta["data_state"]["kind"] == "sft_mixture" and sum(meta["data_state"]["counts"].values()) > 0
    again = train(_cfg(resumed, paths), log=lambda *_: None)
    assert again["resumed_from"] == 3 and again["status"] == "finished"
    a, b = _metrics(straight), _metrics(resumed)
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(1, 7))
    for x, y in zip(a[3:], b[3:]):
        for key in ("loss", "target_tokens", "grad_norm"):
            assert x[key] == y[key], (x["step"], key)  # bitwise: the same batches were seen
    assert again["data_state"] == done["data_state"]  # same position and counts after 6 steps
