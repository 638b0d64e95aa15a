"""Run a pipeline: each stage in order, skipping the ones already done with the same config and inputs.

A stage runs again when it never finished (resumed in place: its command continues from what it
wrote), when its config or the content of an input changed, when the content of one of its
recorded outputs changed since it finished, or when an earlier stage ran again; a stage that runs
again for any reason but the first starts from an empty directory. Every host of a pod runs the
same pipeline; process 0 decides, hashes and writes the manifest, and tells the others.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from etils import epath

from mathjax_train.config import ConfigError, DistributedConfig
from mathjax_train.data.run_dir import diff_settings
from mathjax_train.pipeline import manifest as mf
from mathjax_train.pipeline.hashing import content_hash
from mathjax_train.pipeline.spec import Pipeline, Stage
from mathjax_train.pipeline.stages import ON_EVERY_HOST, RUNNERS, StagePreempted, barrier, log

# fields that name files or checkpoints a stage reads (lists: every entry); named datasets are not files
INPUT_FIELDS = {
    "train": ("init_from", "data.tokenizer", "data.jsonl"),
    "rl": ("init_from", "rl.prompts", "rl.heldout", "rl.validation"),
    "sample": ("checkpoints", "dataset"),
    "augment": ("seeds", "teacher_checkpoint", "benchmarks"),
    "decontaminate": ("input", "benchmarks"),
    "select": ("inputs",),
    "evaluate": ("checkpoints", "eval.dataset", "eval.exemplars"),
    "scaling": ("data", "train.init_from", "train.data.tokenizer", "eval.dataset", "eval.exemplars"),
    "export": ("checkpoint",),
}
SKIP, RESUME, FRESH = 0, 1, 2


@dataclass
class Decision:
    action: int
    reason: str


def _field(cfg, dotted: str):
    node = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def input_paths(stage: Stage, produced: set[str]) -> dict[str, str]:
    """field -> path of every file or checkpoint the stage reads. A path that no earlier stage makes
    must exist; a named dataset (gsm8k, ...) or benchmark counts by the file behind it."""
    out = {}
    for dotted in INPUT_FIELDS.get(stage.kind, ()):
        value = _field(stage.cfg, dotted)
        values = list(value) if isinstance(value, (list, dict)) else [value]  # a dict: its keys (rl.prompts)
        for i, v in enumerate(values):
            named = ("dataset", "benchmarks", "seeds", "prompts", "heldout", "validation")
            if not v or (dotted.endswith(named) and not v.endswith(".jsonl")):
                continue
            where = f"{dotted}[{i}]" if isinstance(value, (list, dict)) else dotted
            if v not in produced and not epath.Path(v).exists():
                raise FileNotFoundError(f"stages.{stage.name}.{where}: {v} not found")
            out[where] = v
    return out | named_dataset_files(stage)


def named_dataset_files(stage: Stage) -> dict[str, str]:
    """field -> file behind a named dataset or benchmark the stage reads (gsm8k, math, math500), so
    their content is an input too."""
    from mathjax_train.data import manual_dir
    from mathjax_train.eval.datasets import NAMED, dataset_path

    c, out = stage.cfg, {}
    if stage.kind == "sample" and c.dataset in ("gsm8k", "math"):
        out["dataset"] = manual_dir.split_file(c.dataset, c.split, c.data_dir or None)
    if stage.kind == "augment" and c.seeds in ("gsm8k", "math"):
        out["seeds"] = manual_dir.split_file(c.seeds, "train", c.data_dir or None)
    if stage.kind in ("decontaminate", "augment"):
        for i, b in enumerate(c.benchmarks):
            if b in ("gsm8k", "math"):
                out[f"benchmarks[{i}]"] = manual_dir.split_file(b, "test", c.data_dir or None)
    if stage.kind in ("evaluate", "scaling") and c.eval.dataset in NAMED:
        out["eval.dataset"] = dataset_path(c.eval.dataset, c.eval.split, c.eval.data_dir or None)
    return {k: str(v) for k, v in out.items()}


class Hashes:
    """Content hashes, each path hashed once per run unless a stage has written it since."""

    def __init__(self):
        self.cache: dict[str, str | None] = {}

    def get(self, path: str) -> str | None:
        if path not in self.cache:
            self.cache[path] = content_hash(path)
        return self.cache[path]

    def forget_under(self, prefix: str) -> None:
        self.cache = {p: h for p, h in self.cache.items() if not p.startswith(prefix)}


def _diff_keys(old: dict, new: dict, prefix: str = "") -> list[str]:
    keys = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += _diff_keys(a, b, f"{prefix}{k}.")
        elif a != b:
            keys.append(f"{prefix}{k}")
    return keys


def decide(stage: Stage, record: dict | None, inputs: dict, hashes: Hashes, earlier_ran: str | None) -> Decision:
    if record is None:
        return Decision(FRESH, "not run yet")
    if earlier_ran:
        return Decision(FRESH, f"an earlier stage ({earlier_ran}) runs again")
    if record.get("config_hash") != stage.config_hash():
        changed = _diff_keys(record.get("config", {}), stage.config_dict())
        return Decision(FRESH, f"config changed: {', '.join(changed[:5]) or 'config_hash'}")
    if record.get("inputs") != inputs:
        return Decision(FRESH, f"input changed: {', '.join(diff_settings(record.get('inputs', {}), inputs))}")
    if record.get("status") != "done":
        return Decision(RESUME, f"unfinished ({record.get('status')})")
    for name, out in record.get("outputs", {}).items():
        if hashes.get(out["path"]) != out["sha256"]:
            return Decision(FRESH, f"output {name} ({out['path']}) changed since the stage finished")
    return Decision(SKIP, "done, same config and inputs")


def _broadcast(action: int) -> int:
    import jax

    if jax.process_count() == 1:
        return action
    import numpy as np
    from jax.experimental import multihost_utils

    return int(multihost_utils.broadcast_one_to_all(np.asarray([action], np.int32))[0])


def run_pipeline(pipe: Pipeline, *, dry_run: bool = False, stop_after: str | None = None) -> dict:
    """Run (or resume) the pipeline; returns {stage: {action, reason, status}}. `dry_run` only says
    what would run and why; `stop_after` ends the run after that stage."""
    import jax

    from mathjax_train.parallel.distributed import maybe_initialize

    if stop_after is not None and stop_after not in [s.name for s in pipe.stages]:
        raise ConfigError(
            f"--stop-after {stop_after!r}: no such stage; stages: {', '.join(s.name for s in pipe.stages)}"
        )
    maybe_initialize(DistributedConfig())
    host, hosts = jax.process_index(), jax.process_count()
    main = host == 0
    manifest = mf.read(pipe.run_dir) if main else {"stages": {}}
    code = mf.code_version() if main else {}
    manifest.update(pipeline=pipe.source, run_dir=pipe.run_dir)
    hashes = Hashes()
    produced: set[str] = set()
    summary: dict[str, dict] = {}
    earlier_ran = None
    for stage in pipe.stages:
        action, inputs, reason = FRESH, {}, ""
        if main:
            inputs_at = input_paths(stage, produced)
            inputs = {f: {"path": p, "sha256": hashes.get(p)} for f, p in inputs_at.items()}
            d = decide(stage, manifest["stages"].get(stage.name), inputs, hashes, earlier_ran)
            action, reason = d.action, d.reason
        produced |= set(stage.outputs.values())
        if dry_run:
            summary[stage.name] = {"action": ("skip", "resume", "run")[action], "reason": reason}
            earlier_ran = earlier_ran or (stage.name if action != SKIP else None)
            continue
        action = _broadcast(action)
        if action == SKIP:
            summary[stage.name] = {"action": "skip", "reason": reason, "status": "done"}
            log(f"{stage.name} ({stage.kind}): skipped: {reason}")
        else:
            earlier_ran = earlier_ran or stage.name
            log(f"{stage.name} ({stage.kind}): {'resuming' if action == RESUME else 'running'}: {reason}")
            if main and action == FRESH and epath.Path(stage.dir).exists():
                epath.Path(stage.dir).rmtree()
            hashes.forget_under(stage.dir)
            barrier(f"{stage.name}:start")
            summary[stage.name] = _run_stage(
                stage, manifest, code, inputs, reason, host, hosts, hashes, action == RESUME
            )
        if stop_after == stage.name:
            break
    return summary


def _run_stage(
    stage: Stage,
    manifest: dict,
    code: dict,
    inputs: dict,
    reason: str,
    host: int,
    hosts: int,
    hashes: Hashes,
    resumed: bool,
) -> dict:
    main = host == 0
    record = {
        "kind": stage.kind,
        "status": "running",
        "reason": reason,
        "resumed": resumed,
        "config": stage.config_dict(),
        "config_hash": stage.config_hash(),
        "inputs": inputs,
        "code": code,
        "dir": stage.dir,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if main:
        manifest["stages"][stage.name] = record
        mf.write(manifest["run_dir"], manifest)
    t0 = time.time()
    try:
        if main or stage.kind in ON_EVERY_HOST:
            metrics, files = RUNNERS[stage.kind](stage, host, hosts)
        else:
            metrics, files = {}, {}
        barrier(f"{stage.name}:end")
    except BaseException as e:
        if main:
            status = (
                "preempted" if isinstance(e, StagePreempted) else "failed" if isinstance(e, Exception) else "running"
            )
            record.update(status=status, error=f"{type(e).__name__}: {e}")
            mf.write(manifest["run_dir"], manifest)
        raise
    if main:
        hashes.forget_under(stage.dir)
        record.update(
            status="done",
            metrics=metrics,
            seconds=round(time.time() - t0, 6),
            outputs={k: {"path": p, "sha256": hashes.get(p)} for k, p in files.items()},
            finished_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        )
        mf.write(manifest["run_dir"], manifest)
        log(f"{stage.name}: done in {record['seconds']:.1f}s: {json.dumps(metrics, default=str)[:300]}")
    return {"action": "resume" if resumed else "run", "reason": reason, "status": "done"}
