"""The two-stage recipe (Skywork-Math) on CPU: the real stage configs with a tiny model and a
synthetic file; stage 2 starts from stage 1's last weights and reads only the hard rows."""

import json
from pathlib import Path

import numpy as np
import pytest

from hf_fixtures import make_hf_model
from mathjax_train.cli import main
from mathjax_train.config import load_config
from mathjax_train.data.sources import make_train_iterator
from mathjax_train.model.checkpoint import load_model_config, load_params, resolve
from mathjax_train.train.trainer import train

pytestmark = pytest.mark.slow
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TINY = [
    "model.dtype=float32",
    "model.attention_kernel=dot",
    "train.steps=2",
    "train.batch_size=8",
    "train.seq_len=256",
    "checkpoint.every_steps=2",
    "train.log_every_steps=1",
    "data.mixture=synthetic",
    "data.rates={}",
    "data.pack=true",
]


def _rows(n):
    for i in range(n):
        level = 1 + i % 5
        a, b = 3 + i, 4 + 2 * i
        yield {
            "id": f"s{i}",
            "question": f"What is {a} + {b}?",
            "solution": f"{a} + {b} = {a + b}.",
            "answer": str(a + b),
            "level": level,
            "source": "synthetic/test",
        }


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("two_stage")
    make_hf_model(d / "hf", "llama", kv_heads=2, seed=5)
    assert main(["import-hf", str(d / "hf"), str(d / "base"), "--dtype", "float32"]) == 0
    synthetic = d / "synthetic.jsonl"
    synthetic.write_text("".join(json.dumps(r) + "\n" for r in _rows(60)))
    return d, synthetic


def test_stage2_continues_from_stage1_on_the_hard_subset(setup):
    d, synthetic = setup
    s1 = load_config(
        str(CONFIGS / "mistral_7b_two_stage1_v5p-32.yaml"),
        [f"init_from={d / 'base'}", f"output_dir={d / 'stage1'}", f"data.jsonl=[{synthetic}]", *TINY],
    )
    assert train(s1, log=lambda s: None)["status"] == "finished"

    s2 = load_config(
        str(CONFIGS / "mistral_7b_two_stage2_v5p-32.yaml"),
        [f"init_from={d / 'stage1'}", f"output_dir={d / 'stage2'}", f"data.jsonl=[{synthetic}]", *TINY],
    )
    assert s2.data.min_level == 4 and s2.optimizer.learning_rate < s1.optimizer.learning_rate
    it = make_train_iterator(s2, rows=8)
    reader = it.readers["synthetic"]
    assert sorted({r["level"] for r in reader.rows}) == [4, 5] and len(reader.rows) == 24
    assert reader.records.below_min_level == {"train": 36}  # left out and counted, never silently

    # stage 2's first state is stage 1's last weights (a fresh optimizer)
    assert train(s2, max_steps_this_run=0, log=lambda s: None)["status"] == "stopped"
    cfg = load_model_config(d / "stage1")
    assert resolve(d / "stage1").step == 2 and resolve(d / "stage2").step == 0
    p1, p2 = load_params(d / "stage1", cfg), load_params(d / "stage2", cfg)
    np.testing.assert_array_equal(
        np.asarray(p1["layers"]["mlp"]["up_proj"]["kernel"]), np.asarray(p2["layers"]["mlp"]["up_proj"]["kernel"])
    )
    base = load_params(d / "base", load_model_config(d / "base"))
    assert not np.array_equal(
        np.asarray(base["layers"]["mlp"]["up_proj"]["kernel"]), np.asarray(p2["layers"]["mlp"]["up_proj"]["kernel"])
    )
    assert train(s2, log=lambda s: None)["step"] == 2
