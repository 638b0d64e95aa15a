"""What each stage kind runs: the existing command's function on the stage's typed config.

Each runner (RUNNERS, by kind) returns the stage's metrics and the files whose content hashes the
manifest records (name -> path). Training and sampling run on every host (train shards itself; rft
takes the questions i % hosts == host, then process 0 merges the shards); the other kinds run on
process 0.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Callable

from etils import epath

from mathjax_train.config import ConfigError, EvalConfig
from mathjax_train.pipeline.spec import Stage, join_path

ON_EVERY_HOST = ("train", "sample", "scaling")


class StagePreempted(RuntimeError):
    """A training stage stopped at a preemption (SIGTERM) with a checkpoint; re-run to resume."""


def log(msg: str) -> None:
    import sys

    print(f"[pipeline] {msg}", file=sys.stderr, flush=True)


def _train(cfg) -> dict:
    from mathjax_train.train.trainer import train

    summary = train(cfg, log=lambda s: None)
    if summary["status"] == "preempted":
        raise StagePreempted(f"{cfg.output_dir}: preempted at step {summary['step']}")
    return {
        "status": summary["status"],
        "step": summary["step"],
        "resumed_from": summary["resumed_from"],
        "last_metrics": summary["last_metrics"],
    }


def run_rl_stage(stage: Stage, host: int, hosts: int) -> tuple[dict, dict]:
    """`mathjax-train rl` on the stage's config (init_from: an earlier stage's checkpoint), on process 0 (rl
    runs on one host); its OUTPUT_DIR is a checkpoint for later evaluate, export or train stages."""
    from mathjax_train.rl.trainer import run_rl

    summary = run_rl(stage.cfg, log=lambda s: None)
    if summary["status"] == "preempted":
        raise StagePreempted(f"{stage.cfg.output_dir}: preempted at step {summary['steps']}")
    keys = ("status", "steps", "sampled_tokens", "heldout_accuracy_before", "heldout_accuracy_after")
    metrics = {k: summary[k] for k in keys}
    if "best" in summary:
        metrics["best"] = {k: v for k, v in summary["best"].items() if k in ("step", "validation_accuracy", "dir")}
    return metrics, {"checkpoint": stage.dir}


def _eval_files(out_dir: str) -> dict[str, str]:
    from mathjax_train.eval.results import SAMPLES_FILE

    return {"samples": join_path(out_dir, SAMPLES_FILE)}


def _evaluate(cfg: EvalConfig) -> dict:
    from mathjax_train.eval.harness import evaluate

    r = evaluate(cfg, progress=False).report
    return {
        "problems": r["num_problems"],
        "accuracy": r["accuracy"],
        "pass@k": r["pass@k"],
        "maj@k": r["maj@k"],
        "report": join_path(cfg.output_dir, "report.json"),
    }


def run_tokenizer(stage: Stage, host: int, hosts: int) -> tuple[dict, dict]:
    from mathjax_train.data.tokenizer_training import build_tokenizer

    info = build_tokenizer(stage.dir, stage.cfg)
    return {k: info[k] for k in ("vocab_size", "corpus_texts", "corpus_chars")}, {"dir": stage.dir}


def run_problems(stage: Stage, host: int, hosts: int) -> tuple[dict, dict]:
    from mathjax_train.data.procedural import write_problems

    out = stage.outputs["problems"]
    return {"problems": write_problems(out, stage.cfg)}, {"problems": out}


def run_train(stage: Stage, host: int, hosts: int) -> tuple[dict, dict]:
    return _train(stage.cfg), {"checkpoint": stage.dir}


def run_sample(stage: Stage, host: int, hosts: int) -> tuple[dict, dict]:
    from mathjax_train.synth.rft_job import run_rft

    stats = run_rft(stage.cfg, progress=False)  # shard_index/num_shards -1/0: this host of jax's processes
    barrier(f"{stage.name}:shards")
    if stats["num_shards"] > 1 and host == 0:
        from mathjax_train.synth.rft_output import merge_shards

        stats["merged"] = merge_shards(stage.cfg.output, stats["num_shards"])
    return stats, {"samples": stage.outputs["samples"]}


def run_augment(stage: Stage, host: int, hosts: int) -> tuple[dict, dict]:
    """New questions from seed problems by a teacher (a checkpoint stage's model or an endpoint), on
    process 0; the kept rows are SFT JSONL, ready for a train stage's `data.jsonl`."""
    from mathjax_train.synth.augment import run_augment_job

    r = run_augment_job(stage.cfg)
    metrics = {"seeds": r.seeds, "candidates": r.candidates, "kept": r.kept, "teacher_calls": r.teacher_calls}
    return metrics | {"dropped": dict(r.dropped), "kept_by_method": dict(r.kept_by_method)}, dict(stage.outputs)


def run_decontaminate(stage: Stage, host: int, hosts: int) -> tuple[dict, dict]:
    from mathjax_train.synth.decontaminate import decontaminate_with

    return decontaminate_with(stage.cfg, stage.outputs["output"], stage.outputs["report"]), dict(stage.outputs)


def run_select(stage: Stage, host: int, hosts: int) -> tuple[dict, dict]:
    from mathjax_train.synth.rft_pool import pool_files

    c = stage.cfg
    stats = pool_files(c.inputs, stage.outputs["output"], c.max_paths_per_question, c.include_references, c.check_steps)
    return stats, {"output": stage.outputs["output"]}


def checkpoint_labels(stage: Stage) -> list[str]:
    """A name per evaluated checkpoint: the stage that made it, else its position (unique)."""
    labels = []
    for i in range(len(stage.cfg.checkpoints)):
        label = stage.uses.get(f"checkpoints[{i}]", f"checkpoint{i}")
        labels.append(label if label not in labels else f"{label}_{i}")
    return labels


def run_evaluate(stage: Stage, host: int, hosts: int) -> tuple[dict, dict]:
    c = stage.cfg
    metrics, files = {}, {}
    for label, ckpt in zip(checkpoint_labels(stage), c.checkpoints):
        runs = [("greedy", c.eval.generate)]
        if c.sampled.num_samples:
            runs.append(("sampled", c.sampled))
        m = metrics[label] = {"checkpoint": ckpt}
        for mode, gen in runs:
            out = join_path(stage.dir, label, mode)
            m[mode] = _evaluate(dataclasses.replace(c.eval, checkpoint=ckpt, output_dir=out, generate=gen))
            files[f"{label}.{mode}"] = _eval_files(out)["samples"]
        log(
            f"{stage.name}: {label}: greedy accuracy {m['greedy']['accuracy']:.3f}"
            + (
                f", pass@{c.sampled.num_samples} {m['sampled']['pass@k'].get(str(c.sampled.num_samples))}"
                if "sampled" in m
                else ""
            )
        )
    return metrics, files


def _first_rows(src: str, n: int) -> list[str]:
    """The first `n` rows (lines) of a JSONL file, or an error when it has fewer."""
    rows = [line for line in epath.Path(src).read_text().splitlines(keepends=True) if line.strip()][:n]
    if len(rows) < n:
        raise ConfigError(f"{src}: {n} rows asked for (scaling sizes), the file has {len(rows)}")
    return rows


def run_scaling(stage: Stage, host: int, hosts: int) -> tuple[dict, dict]:
    from mathjax_train.synth.scaling import fit_log_linear, plot_fit, read_point

    c = stage.cfg
    points, files = [], {}
    for size in sorted(set(c.sizes)):
        size_dir = join_path(stage.dir, f"size-{size}")
        subset = join_path(size_dir, "train.jsonl")
        rows = _first_rows(c.data, size)
        if host == 0:
            epath.Path(size_dir).mkdir(parents=True, exist_ok=True)
            epath.Path(subset).write_text("".join(rows))
        barrier(f"{stage.name}:subset-{size}")
        data = dataclasses.replace(c.train.data, jsonl=[subset])
        train = dataclasses.replace(c.train.train)
        if c.epochs:
            train.steps = max(1, math.ceil(c.epochs * size / c.train.train.batch_size))
        tcfg = dataclasses.replace(c.train, output_dir=join_path(size_dir, "train"), data=data, train=train)
        _train(tcfg)
        if host == 0:
            eval_dir = join_path(size_dir, "eval")
            ev = _evaluate(dataclasses.replace(c.eval, checkpoint=tcfg.output_dir, output_dir=eval_dir))
            points.append(read_point(f"{ev['report']}:{size}", c.metric))
            files[f"size-{size}.eval"] = _eval_files(eval_dir)["samples"]
            log(f"{stage.name}: {size} rows, {tcfg.train.steps} steps: {c.metric} {points[-1].value:.3f}")
    if host != 0:
        return {}, {}
    fit = fit_log_linear(points, c.metric)
    body = fit.as_dict()
    epath.Path(stage.outputs["fit"]).write_text(json.dumps(body, indent=1))
    plot_fit(fit, stage.outputs["plot"])
    return {k: body[k] for k in ("slope", "intercept", "r2", "gain_per_doubling")} | {
        "sizes": [p.size for p in fit.points],
        c.metric: [p.value for p in fit.points],
    }, {"fit": stage.outputs["fit"], "checkpoint": stage.outputs["checkpoint"], **files}


def run_export(stage: Stage, host: int, hosts: int) -> tuple[dict, dict]:
    from mathjax_train.convert.export_hf import export_hf

    c, out = stage.cfg, stage.outputs["hf_dir"]
    files = export_hf(c.checkpoint, out, dtype=c.dtype or None, max_shard_bytes=int(c.max_shard_gb * 2**30))
    return {"files": files}, {"hf_dir": out}


RUNNERS: dict[str, Callable[[Stage, int, int], tuple[dict, dict]]] = {
    "tokenizer": run_tokenizer,
    "problems": run_problems,
    "train": run_train,
    "rl": run_rl_stage,
    "sample": run_sample,
    "augment": run_augment,
    "decontaminate": run_decontaminate,
    "select": run_select,
    "evaluate": run_evaluate,
    "scaling": run_scaling,
    "export": run_export,
}


def barrier(name: str) -> None:
    """Wait for every host (a no-op on one)."""
    import jax

    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(f"pipeline:{name}")
