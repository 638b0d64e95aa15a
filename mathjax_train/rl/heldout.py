"""Held-out (and validation) accuracy during RL through the `evaluate` harness, decoding greedily on the RL engine
with the learner's current parameters (no reload, no second KV cache); on several hosts each host scores its
share of the problems."""

from __future__ import annotations

import json

import jax
from etils import epath

from mathjax_train.config import Config, EvalConfig, GenerateConfig
from mathjax_train.eval.completions import plain_source
from mathjax_train.eval.harness import evaluate, sampling_params
from mathjax_train.eval.report import REPORT_FILE
from mathjax_train.eval.results import SAMPLES_FILE
from mathjax_train.parallel.host_gather import barrier


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

    if jax.process_count() == 1:
        report = evaluate(ecfg, make_source=source, progress=False).report
    else:  # each host its shard; once all are done, process 0 joins them and the others read the joined report
        evaluate(ecfg, make_source=source, progress=False, join=False)
        barrier(f"rl:{out_dir.parent.name}/{out_dir.name} shards")
        if jax.process_index() == 0:
            evaluate(ecfg, make_source=source, progress=False)  # every shard is read back, nothing is sampled
        barrier(f"rl:{out_dir.parent.name}/{out_dir.name} joined")
        report = json.loads((out_dir / REPORT_FILE).read_text())
    n = report["num_problems"]
    return {
        "accuracy": report["accuracy"],
        "problems": n,
        "correct": round(report["accuracy"] * n),
        "samples": str(out_dir / SAMPLES_FILE),  # per-problem results, for the paired before/after difference
    }
