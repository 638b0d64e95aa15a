"""Held-out (and validation) accuracy during RL through the `evaluate` harness, decoding greedily on the RL engine
with the learner's current parameters (no reload, no second KV cache)."""

from __future__ import annotations

from etils import epath

from mathjax_train.config import Config, EvalConfig, GenerateConfig
from mathjax_train.eval.completions import plain_source
from mathjax_train.eval.harness import evaluate, sampling_params
from mathjax_train.eval.results import SAMPLES_FILE


def heldout_accuracy(cfg: Config, sampler, checkpoint: str, out_dir: epath.Path, dataset: str, limit: int) -> dict:
    """{accuracy, problems, correct, samples} on `dataset` (rl.heldout or rl.validation, its first `limit`
    problems); `checkpoint` is a saved directory holding the parameters the sampler has now (the harness
    records and checks it; a finished `out_dir` is read back)."""
    rl = cfg.rl
    ecfg = EvalConfig(
        checkpoint=checkpoint,
        dataset=dataset,
        template=cfg.data.template,
        output_dir=str(out_dir),
        limit=limit,
        answer_fallback=rl.answer_fallback,
        grading_timeout_s=rl.grading_timeout_s,
        generate=GenerateConfig(max_new_tokens=rl.max_new_tokens),
    )

    def source(c, prompts):
        return plain_source(
            sampler.model,
            sampling_params(c),
            prompts,
            engine=sampler.engine,
            add_special_tokens=sampler.add_special_tokens,
        )

    report = evaluate(ecfg, make_source=source, progress=False).report
    n = report["num_problems"]
    return {
        "accuracy": report["accuracy"],
        "problems": n,
        "correct": round(report["accuracy"] * n),
        "samples": str(out_dir / SAMPLES_FILE),  # per-problem results, for the paired before/after difference
    }
