"""RUN_DIR/manifest.json: per stage its resolved config, inputs and outputs with content hashes,
the code version, metrics, timings and status (running | done | failed | preempted), so any result can be
traced to the data and checkpoint that made it. Written whole and atomically, by process 0 only."""

from __future__ import annotations

import json
from importlib import metadata

from etils import epath

from mathjax_train.errors import InputError
from mathjax_train.pipeline.spec import join_path

MANIFEST = "manifest.json"


def code_version() -> dict:
    """The git commit when the package runs from a checkout, its installed version, and a hash of its
    sources (so uncommitted edits show)."""
    from mathjax_train.parallel.preflight import git_commit, source_hash

    try:
        version = metadata.version("mathjax-train")
    except metadata.PackageNotFoundError:
        version = None
    return {"git_commit": git_commit(), "package_version": version, "source_sha256": source_hash()}


def path(run_dir: str) -> str:
    return join_path(run_dir, MANIFEST)


def read(run_dir: str) -> dict:
    p = epath.Path(path(run_dir))
    if not p.exists():
        return {"stages": {}}
    try:
        data = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise InputError(
            f"{p}: not valid JSON (line {e.lineno}: {e.msg}); delete it to run every stage again"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("stages"), dict):
        raise InputError(f"{p}: not a pipeline manifest (no `stages` mapping)")
    return data


def write(run_dir: str, manifest: dict) -> None:
    p = epath.Path(path(run_dir))
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = epath.Path(str(p) + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=False))
    tmp.replace(p)
