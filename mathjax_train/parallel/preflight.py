"""Start-of-run checks across hosts: process and device counts fit the mesh and the batch, and every
host runs the same code and config (a pod where one worker kept an old checkout trains garbage or
hangs in a collective, so this fails first, naming the hosts that differ)."""

from __future__ import annotations

import hashlib
import json
import math
import socket
import subprocess
from collections import defaultdict
from importlib import metadata
from pathlib import Path

import jax

from mathjax_train.config import Config, to_dict
from mathjax_train.errors import PreflightError
from mathjax_train.parallel.host_gather import allgather_json
from mathjax_train.parallel.topology import matches_device_kind, parse_topology

PACKAGE_DIR = Path(__file__).resolve().parents[1]
CODE_FIELDS = ("package", "source_sha256", "config_sha256", "jax", "jaxlib")


def source_hash(package_dir: Path = PACKAGE_DIR) -> str:
    """sha256 over the package's .py files (relative path and bytes), so uncommitted edits count."""
    h = hashlib.sha256()
    for path in sorted(package_dir.rglob("*.py")):
        h.update(path.relative_to(package_dir).as_posix().encode() + b"\0")
        h.update(path.read_bytes() + b"\0")
    return h.hexdigest()


def git_commit(package_dir: Path = PACKAGE_DIR) -> str | None:
    """The checkout's commit (informational: a host installed from a tarball has none)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=package_dir, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def config_hash(cfg: Config) -> str:
    """The run's config without the per-host field (distributed.process_id)."""
    d = to_dict(cfg)
    d["distributed"] = {k: v for k, v in d["distributed"].items() if k != "process_id"}
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()


def host_record(cfg: Config) -> dict:
    """What this host knows about itself."""
    local = jax.local_devices()
    return {
        "process": jax.process_index(),
        "host": socket.gethostname(),
        "local_devices": len(local),
        "device_kind": local[0].device_kind if local else "",
        "package": _version("mathjax-train"),
        "source_sha256": source_hash(),
        "git": git_commit(),
        "config_sha256": config_hash(cfg),
        "jax": jax.__version__,
        "jaxlib": _version("jaxlib"),
    }


def gather_records(record: dict) -> list[dict]:
    """Every process's record, in process order."""
    return allgather_json(record)


def _name(r: dict) -> str:
    return f"process {r['process']} ({r['host']})"


def check_same_code(records: list[dict]) -> None:
    """Raise naming the hosts whose code, config or JAX differ from process 0's."""
    ref = records[0]
    problems = []
    for field in CODE_FIELDS + ("local_devices", "device_kind"):
        groups = defaultdict(list)
        for r in records:
            groups[r[field]].append(r)
        if len(groups) > 1:
            differ = [r for r in records if r[field] != ref[field]]
            problems.append(
                f"{field}: {_name(ref)} has {ref[field]!r}, but "
                + ", ".join(f"{_name(r)} has {r[field]!r}" for r in differ)
            )
    if problems:
        raise PreflightError(
            "preflight: the hosts differ; install the same code, config and JAX on every "
            "worker (e.g. re-run tpu_scripts/setup.sh) and launch the same command:\n  " + "\n  ".join(problems)
        )


def batch_axes(bsharding) -> tuple[str, ...]:
    first = bsharding.spec[0] if len(bsharding.spec) else None
    return () if first is None else ((first,) if isinstance(first, str) else tuple(first))


def check_layout(cfg: Config, mesh, bsharding, records: list[dict]) -> dict:
    """Process and device counts against the config, the mesh and the batch; returns the figures."""
    processes, devices = jax.process_count(), jax.device_count()
    want = cfg.distributed.num_processes
    if want and want != processes:
        raise PreflightError(f"preflight: distributed.num_processes is {want} but {processes} processes joined")
    if len(records) != processes:
        raise PreflightError(f"preflight: {len(records)} host records for {processes} processes")
    if mesh.devices.size != devices or set(mesh.devices.flat) != set(jax.devices()):
        raise PreflightError(
            f"preflight: the mesh {dict(mesh.shape)} covers {mesh.devices.size} devices, but "
            f"{devices} devices exist; every device must be in the mesh"
        )
    if cfg.mesh.topology:
        check_topology(cfg.mesh.topology, devices, processes, records[0]["device_kind"])
    local_sum = sum(r["local_devices"] for r in records)
    if local_sum != devices:
        raise PreflightError(f"preflight: the hosts report {local_sum} local devices in all, but jax sees {devices}")
    shards = math.prod(mesh.shape[a] for a in batch_axes(bsharding))
    rows = cfg.train.batch_size // cfg.train.microbatches
    if rows % shards:
        raise PreflightError(
            f"preflight: train.batch_size / train.microbatches = {rows} rows per micro-batch "
            f"cannot be split over the {shards} batch shards of mesh axes "
            f"{batch_axes(bsharding)} {dict(mesh.shape)}; make it a multiple of {shards}"
        )
    if cfg.train.batch_size % processes:
        raise PreflightError(
            f"preflight: train.batch_size ({cfg.train.batch_size}) must be a multiple of the "
            f"number of hosts ({processes})"
        )
    check_host_rows(host_row_blocks(bsharding, cfg.train.batch_size, cfg.train.seq_len), cfg.train.batch_size)
    return {
        "processes": processes,
        "devices": devices,
        "local_devices": records[0]["local_devices"],
        "device_kind": records[0]["device_kind"],
        "mesh": dict(mesh.shape),
        "batch_shards": shards,
        "rows_per_host": cfg.train.batch_size // processes,
    }


def check_topology(name: str, devices: int, processes: int, device_kind: str) -> None:
    """A recipe written for one slice must not silently run on another (on TPU; CPU runs skip it)."""
    topo = parse_topology(name)
    if not device_kind.lower().startswith("tpu"):
        return
    problems = []
    if not matches_device_kind(topo, device_kind):
        problems.append(f"the devices are {device_kind!r}, not {topo.family.name}")
    if devices != topo.chips or processes != topo.hosts:
        problems.append(f"{devices} chips on {processes} hosts joined, {topo.name} has {topo.chips} on {topo.hosts}")
    if problems:
        raise PreflightError(
            f"preflight: mesh.topology is {topo.name} but {'; '.join(problems)}; use the recipe "
            f"for this slice (configs/) or override mesh.topology=<slice> after checking "
            f"`mathjax-train plan`"
        )


def host_row_blocks(bsharding, batch_size: int, seq_len: int) -> dict[int, set[tuple[int, int]]]:
    """Process -> the (start, stop) row blocks of the global batch its devices hold."""
    out: dict[int, set[tuple[int, int]]] = defaultdict(set)
    for device, index in bsharding.devices_indices_map((batch_size, seq_len)).items():
        rows = index[0]
        out[device.process_index].add((rows.start or 0, batch_size if rows.stop is None else rows.stop))
    return dict(out)


def check_host_rows(blocks: dict[int, set[tuple[int, int]]], batch_size: int) -> None:
    """Each host must hold its own batch_size / hosts rows: no row on two hosts (the trainer gives every
    host different data, so a shared row would silently differ between hosts)."""
    per_host = batch_size // len(blocks)
    owner: dict[tuple[int, int], int] = {}
    for proc, bl in sorted(blocks.items()):
        for b in bl:
            if b in owner:
                raise PreflightError(
                    f"preflight: rows {b[0]}-{b[1] - 1} of the batch live on process {owner[b]} and "
                    f"process {proc}: a mesh axis that shards parameters only (tensor) spans hosts; "
                    "keep mesh.tensor within a host (at most its local devices)"
                )
            owner[b] = proc
        held = sum(stop - start for start, stop in bl)
        if held != per_host:
            raise PreflightError(f"preflight: process {proc} holds {held} rows of each batch but loads {per_host}")


def run_preflight(cfg: Config, mesh, bsharding) -> dict:
    """All checks; every host takes part (one allgather) and all raise the same error."""
    records = gather_records(host_record(cfg))
    check_same_code(records)
    layout = check_layout(cfg, mesh, bsharding, records)
    code = {k: records[0][k] for k in ("package", "git", "jax", "jaxlib")}
    code["source_sha256"] = records[0]["source_sha256"][:16]
    return {"event": "preflight", "ok": True, **layout, "code": code, "hosts": [r["host"] for r in records]}
