"""What the RL tests share: a small run's config on a tiny checkpoint, and its metrics without timings."""

import json

from mathjax_train.config import load_config
from mathjax_train.model import checkpoint as model_ckpt
from mathjax_train.rl.trainer import TIMING_KEYS


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def rl_overrides(ckpt, tmp_path, name) -> list[str]:
    """A 2-step run on one device: 2 prompts x 2 samples of 8 tokens, 2 passes of 2 minibatches, KL and entropy on,
    held-out and validation scored; written under tmp_path (prompts, held-out and validation JSONL, OUTPUT_DIR)."""
    prompts = write_jsonl(
        tmp_path / "prompts.jsonl", [{"question": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(1, 9)]
    )
    heldout = write_jsonl(
        tmp_path / "heldout.jsonl", [{"question": f"What is {i} times 2?", "answer": str(2 * i)} for i in range(3)]
    )
    validation = write_jsonl(
        tmp_path / "validation.jsonl", [{"question": f"What is {i} plus {i}?", "answer": str(2 * i)} for i in range(2)]
    )
    scan = model_ckpt.load_model_config(ckpt).scan_layers
    return [
        f"output_dir={tmp_path / name}",
        f"init_from={ckpt}",
        "model.dtype=float32",
        f"model.scan_layers={scan}",
        "mesh.data=1",  # one device (test_rl_sharded.py runs the learner over eight)
        "train.steps=2",
        "train.seq_len=48",
        "train.seed=5",
        "data.template=question_answer",
        "optimizer.learning_rate=1e-2",
        "optimizer.warmup_steps=0",
        "checkpoint.every_steps=1",
        f"rl.prompts={{{prompts}: 1.0}}",
        "rl.prompts_per_step=2",
        "rl.group_size=2",
        "rl.max_new_tokens=8",
        "rl.updates_per_batch=2",
        "rl.minibatches=2",
        "rl.entropy_coef=0.05",
        "rl.kl_coef=0.1",
        "rl.answer_fallback=last_number",
        f"rl.heldout={heldout}",
        f"rl.validation={validation}",
        "rl.engine.decode_steps=8",
        "rl.engine.page_size=64",
    ]


def rl_config(ckpt, tmp_path, name, *extra):
    return load_config(None, [*rl_overrides(ckpt, tmp_path, name), *extra])


def comparable(path):
    """A run's metrics rows without the timings."""
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]
