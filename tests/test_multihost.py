"""Two real processes on localhost train together through jax.distributed (gloo CPU collectives):
they agree on every loss, match a one-process run over the same global batches, write one
checkpoint per saved step and one metrics stream; a host with different code is named and stopped."""

import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import threading

import jax
import numpy as np
import pytest

from mathjax_train.config import ConfigError, DistributedConfig, load_config
from mathjax_train.data.toy_copy import ToyCopyIterator
from mathjax_train.parallel import distributed, preflight
from mathjax_train.parallel.mesh import make_mesh
from mathjax_train.parallel.rules import axis_rules, batch_sharding
from mathjax_train.train.optimizer import make_optimizer
from mathjax_train.train.state import init_state, state_layout
from mathjax_train.train.step import make_train_step
from train_helpers import REPO, SMOKE, read_metrics, tiny_config

STEPS, EVERY = 4, 2
LOCAL_DEVICES = 4
TIMEOUT_S = 300


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(out_dir, extra=(), cwd=REPO, overrides_by_process=None):
    """Start processes 0 and 1 of one run; returns [(returncode, stdout, stderr)] in process order."""
    port = _free_port()
    env = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        TF_CPP_MIN_LOG_LEVEL="3",
        XLA_FLAGS=f"--xla_force_host_platform_device_count={LOCAL_DEVICES}",
    )
    procs = []
    for i in range(2):
        args = [
            sys.executable,
            "-m",
            "mathjax_train.cli",
            "train",
            "--config",
            str(SMOKE),
            f"output_dir={out_dir}",
            "model.dtype=float32",
            f"train.steps={STEPS}",
            f"checkpoint.every_steps={EVERY}",
            "train.log_every_steps=1",
            f"distributed.coordinator_address=127.0.0.1:{port}",
            "distributed.num_processes=2",
            f"distributed.process_id={i}",
            *extra,
            *((overrides_by_process or {}).get(i, ())),
        ]
        procs.append(
            subprocess.Popen(
                args,
                cwd=(cwd[i] if isinstance(cwd, tuple) else cwd),
                env=env,
                text=True,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        )
    results = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=TIMEOUT_S)
            results.append((p.returncode, out, err))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    return results


def _json_lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def _reference_losses(tmp_path) -> list[float]:
    """The same run in this process on 8 devices: each step's global batch is host 0's rows and host
    1's rows (ToyCopyIterator shard 0 and 1), the same initial parameters (seed) and optimizer."""
    cfg = tiny_config(tmp_path / "ref", f"train.steps={STEPS}")
    mesh = make_mesh(cfg.mesh, devices=jax.devices()[: 2 * LOCAL_DEVICES])
    rules = axis_rules(cfg.mesh.rules)
    tx, schedule = make_optimizer(cfg.optimizer, cfg.train.steps)
    layout = state_layout(cfg.model, tx, mesh, rules)
    state = init_state(cfg.model, tx, layout, cfg.train.seed)
    bsh = batch_sharding(mesh, rules)
    step = make_train_step(cfg, cfg.model, tx, schedule, layout, mesh, rules, bsh)
    rows = cfg.train.batch_size // 2
    hosts = [
        ToyCopyIterator(cfg.model.vocab_size, rows, cfg.train.seq_len, seed=cfg.data.seed, shard_index=i)
        for i in range(2)
    ]
    losses = []
    with jax.set_mesh(mesh):
        for _ in range(STEPS):
            parts = [next(h) for h in hosts]
            batch = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
            state, m = step(state, jax.device_put(batch, bsh))
            losses.append(float(jax.device_get(m["loss"])))
    return losses


def test_two_processes_train_as_one(tmp_path):
    out = tmp_path / "run"
    results = _launch(out)
    for i, (rc, stdout, stderr) in enumerate(results):
        assert rc == 0, f"process {i} exited {rc}:\n{stderr[-3000:]}"
    summaries = [_json_lines(stdout)[-1] for _, stdout, _ in results]
    assert [s["status"] for s in summaries] == ["finished", "finished"]

    # preflight ran across both hosts (printed by process 0 only)
    pre = [e for e in _json_lines(results[0][1]) if e.get("event") == "preflight"]
    assert len(pre) == 1 and pre[0]["processes"] == 2 and pre[0]["devices"] == 2 * LOCAL_DEVICES
    assert pre[0]["local_devices"] == LOCAL_DEVICES and pre[0]["rows_per_host"] == 4
    assert not [e for e in _json_lines(results[1][1]) if e.get("event") == "preflight"]

    # both processes hold the same (replicated) loss, and process 0 wrote exactly one row per step
    last = [s["last_metrics"] for s in summaries]
    assert last[0]["step"] == last[1]["step"] == STEPS
    for key in ("loss", "grad_norm", "accuracy", "target_tokens"):
        assert last[0][key] == last[1][key], key
    rows = read_metrics(out)
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    assert rows[-1]["loss"] == last[0]["loss"]
    assert len(list((out / "tensorboard").glob("events.out.tfevents.*"))) == 1

    # the global batch really is host 0's rows + host 1's rows: same losses as one process over them
    np.testing.assert_allclose([r["loss"] for r in rows], _reference_losses(tmp_path), rtol=1e-5)

    # one checkpoint directory per saved step, each complete, nothing left half-written
    ckpt = out / "checkpoints"
    assert sorted(p.name for p in ckpt.iterdir()) == [str(s) for s in range(EVERY, STEPS + 1, EVERY)]
    for step_dir in ckpt.iterdir():
        assert sorted(p.name for p in step_dir.iterdir() if p.is_dir()) == ["meta", "params", "train_state"]
        assert (step_dir / "params" / "commit_success.txt").exists()


def test_a_host_with_different_code_and_config_is_named(tmp_path):
    """Process 1 runs from a copy of the package with one edited file and another learning rate."""
    alt = tmp_path / "alt"
    shutil.copytree(REPO / "mathjax_train", alt / "mathjax_train", ignore=shutil.ignore_patterns("__pycache__"))
    with (alt / "mathjax_train" / "model" / "decoder.py").open("a") as f:
        f.write("\n# an edit that only this host has\n")
    results = _launch(tmp_path / "run", cwd=(REPO, alt), overrides_by_process={1: ["optimizer.learning_rate=1e-3"]})
    for i, (rc, _, stderr) in enumerate(results):
        assert rc == 2, f"process {i} exited {rc}:\n{stderr[-3000:]}"
        msg = stderr[stderr.index("mathjax-train train: error: preflight") :]
        assert "source_sha256: process 0 (" in msg and ", but process 1 (" in msg
        assert "config_sha256: process 0" in msg
        assert "jax:" not in msg and "package:" not in msg  # only what differs is named
    assert not (tmp_path / "run" / "checkpoints").exists()


# ---- start-up pieces, in this process: coordinator and TPU environment, preflight checks ----


def test_coordinator_address_and_port_resolution(monkeypatch):
    monkeypatch.delenv("JAX_COORDINATOR_PORT", raising=False)
    resolve = distributed.resolve_init_args
    assert resolve(DistributedConfig(), None) is None  # one process: nothing to start
    assert resolve(DistributedConfig(initialize="never", coordinator_address="h:1", num_processes=2), None) is None
    args = resolve(DistributedConfig(coordinator_address="10.0.0.2", num_processes=4, process_id=3), None)
    assert args == {
        "coordinator_address": f"10.0.0.2:{distributed.DEFAULT_COORDINATOR_PORT}",
        "num_processes": 4,
        "process_id": 3,
        "initialization_timeout": 300,
    }
    monkeypatch.setenv("JAX_COORDINATOR_PORT", "9999")
    assert (
        resolve(DistributedConfig(coordinator_address="h", num_processes=2, process_id=0), None)["coordinator_address"]
        == "h:9999"
    )
    assert (
        resolve(DistributedConfig(coordinator_address="h", coordinator_port=7000, num_processes=2, process_id=0), None)[
            "coordinator_address"
        ]
        == "h:7000"
    )
    assert (
        resolve(
            DistributedConfig(coordinator_address="h:1234", coordinator_port=7000, num_processes=2, process_id=1), None
        )["coordinator_address"]
        == "h:1234"
    )
    with pytest.raises(ConfigError, match="distributed.process_id must be set"):
        resolve(DistributedConfig(coordinator_address="h:1", num_processes=2), None)
    with pytest.raises(ConfigError, match="no valid port"):
        resolve(DistributedConfig(coordinator_address="h:http", num_processes=2, process_id=0), None)
    monkeypatch.setenv("JAX_COORDINATOR_PORT", "eighty")
    with pytest.raises(ConfigError, match=r"\$JAX_COORDINATOR_PORT: 'eighty' is not a TCP port"):
        resolve(DistributedConfig(coordinator_address="h", num_processes=2, process_id=0), None)
    with pytest.raises(ConfigError, match="distributed.coordinator_port: 70000 is not a TCP port"):
        load_config(None, ["distributed.coordinator_port=70000"])


def test_tpu_environment_from_variables(monkeypatch):
    """GKE (and hand-exported) variables: worker list, worker id, multislice; the config still wins."""
    monkeypatch.delenv("JAX_COORDINATOR_PORT", raising=False)
    monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "w-0,w-1,w-2,w-3")
    monkeypatch.setenv("TPU_WORKER_ID", "2")
    monkeypatch.setenv("MEGASCALE_NUM_SLICES", "2")
    monkeypatch.setenv("MEGASCALE_SLICE_ID", "1")
    monkeypatch.setenv("MEGASCALE_COORDINATOR_ADDRESS", "w-0.slice-0:8080")
    tpu = distributed.detect_tpu_environment()
    assert (tpu.num_processes, tpu.process_id, tpu.coordinator_host, tpu.source) == (8, 6, "w-0.slice-0", "env")
    args = distributed.resolve_init_args(DistributedConfig(), tpu)
    assert args["coordinator_address"] == f"w-0.slice-0:{distributed.DEFAULT_COORDINATOR_PORT}"
    assert (args["num_processes"], args["process_id"]) == (8, 6)
    args = distributed.resolve_init_args(DistributedConfig(coordinator_port=8476, process_id=0), tpu)
    assert args["process_id"] == 0 and args["coordinator_address"] == "w-0.slice-0:8476"
    monkeypatch.setenv("TPU_WORKER_ID", "7")
    with pytest.raises(ConfigError, match="worker 7 is not one of the 4 workers"):
        distributed.detect_tpu_environment()


class _Metadata(http.server.BaseHTTPRequestHandler):
    attributes = {}
    seen = []

    def do_GET(self):  # noqa: N802
        key = self.path.rsplit("/", 1)[-1]
        self.seen.append((key, self.headers.get("Metadata-Flavor")))
        value = self.attributes.get(key)
        self.send_response(200 if value is not None else 404)
        self.end_headers()
        self.wfile.write((value or "not found").encode())

    def log_message(self, *args):
        pass


@pytest.fixture
def metadata_server(monkeypatch):
    for var in (
        "TPU_WORKER_HOSTNAMES",
        "TPU_PROCESS_ADDRESSES",
        "TPU_WORKER_ID",
        "MEGASCALE_NUM_SLICES",
        "MEGASCALE_SLICE_ID",
        "MEGASCALE_COORDINATOR_ADDRESS",
        "TPU_ACCELERATOR_TYPE",
    ):
        monkeypatch.delenv(var, raising=False)
    server = http.server.HTTPServer(("127.0.0.1", 0), _Metadata)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("GCE_METADATA_IP", f"127.0.0.1:{server.server_port}")
    _Metadata.seen.clear()
    yield _Metadata
    server.shutdown()


def test_tpu_environment_from_the_metadata_server(metadata_server):
    """A TPU VM learns its slice from the GCE metadata server (here a real one on localhost)."""
    metadata_server.attributes = {
        "agent-worker-number": "1",
        "accelerator-type": "v5p-32",
        "worker-network-endpoints": "n0:a:10.0.0.5,n1:b:10.0.0.6,n2:c:10.0.0.7,n3:d:10.0.0.8",
        "tpu-env": "ZONE: 'us-east5-a'\nMEGASCALE_NUM_SLICES: '1'\n",
    }
    tpu = distributed.detect_tpu_environment(query_metadata=True)
    assert tpu.worker_hostnames == ["10.0.0.5", "10.0.0.6", "10.0.0.7", "10.0.0.8"]
    assert (tpu.process_id, tpu.num_processes, tpu.accelerator_type, tpu.source) == (1, 4, "v5p-32", "metadata")
    assert all(flavor == "Google" for _, flavor in metadata_server.seen)
    # a single-host TPU VM has no worker list: not a multi-host environment
    metadata_server.attributes = {"agent-worker-number": "0"}
    assert distributed.detect_tpu_environment(query_metadata=True) is None


def test_no_tpu_means_no_network(metadata_server, monkeypatch):
    monkeypatch.setattr(distributed, "on_tpu_vm", lambda: False)
    assert distributed.detect_tpu_environment() is None
    assert metadata_server.seen == []


def _records(**changes):
    base = {
        "process": 0,
        "host": "w-0",
        "local_devices": 4,
        "device_kind": "TPU v5",
        "package": "0.1.0",
        "source_sha256": "a" * 64,
        "git": "abc",
        "config_sha256": "c" * 64,
        "jax": "0.10.2",
        "jaxlib": "0.10.2",
    }
    out = [dict(base, process=i, host=f"w-{i}") for i in range(4)]
    for i, fields in changes.items():
        out[int(i[1:])].update(fields)
    return out


def test_same_code_check_names_the_hosts_that_differ():
    preflight.check_same_code(_records(p2={"git": "other"}))  # the commit alone is informational
    with pytest.raises(preflight.PreflightError) as e:
        preflight.check_same_code(_records(p2={"source_sha256": "b" * 64}, p3={"jax": "0.4.30"}))
    msg = str(e.value)
    assert "source_sha256: process 0 (w-0) has 'aaaa" in msg and "process 2 (w-2) has 'bbbb" in msg
    assert "jax: process 0 (w-0) has '0.10.2', but process 3 (w-3) has '0.4.30'" in msg
    assert "process 1 (w-1)" not in msg


def test_source_hash_sees_an_edit(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "a.py").write_text("x = 1\n")
    (pkg / "sub" / "b.py").write_text("y = 2\n")
    before = preflight.source_hash(pkg)
    (pkg / "sub" / "b.py").write_text("y = 3\n")
    assert preflight.source_hash(pkg) != before


def test_layout_checks_in_one_process(tmp_path):
    cfg = tiny_config(tmp_path, "mesh.data=2", "mesh.fsdp=4")
    mesh = make_mesh(cfg.mesh)
    rules = axis_rules(cfg.mesh.rules)
    bsh = batch_sharding(mesh, rules)
    records = preflight.gather_records(preflight.host_record(cfg))
    assert len(records) == 1 and records[0]["local_devices"] == 8
    assert records[0]["source_sha256"] == preflight.source_hash()
    report = preflight.run_preflight(cfg, mesh, bsh)
    assert report["devices"] == 8 and report["batch_shards"] == 8 and report["processes"] == 1
    with pytest.raises(preflight.PreflightError, match="distributed.num_processes is 2 but 1 processes joined"):
        preflight.check_layout(
            tiny_config(
                tmp_path, "distributed.num_processes=2", "distributed.process_id=0", "distributed.initialize=never"
            ),
            mesh,
            bsh,
            records,
        )
    with pytest.raises(preflight.PreflightError, match="12 rows per micro-batch cannot be split over the 8 batch"):
        preflight.check_layout(tiny_config(tmp_path, "train.batch_size=12"), mesh, bsh, records)
    # a recipe for a TPU slice refuses other hardware (CPU runs are exempt)
    preflight.check_topology("v5p-32", 8, 1, "cpu")
    with pytest.raises(
        preflight.PreflightError,
        match=r"mesh.topology is v5p-32 but the devices are 'TPU v4', "
        r"not v5p; 32 chips on 8 hosts joined, v5p-32 has 16 on 4",
    ):
        preflight.check_topology("v5p-32", 32, 8, "TPU v4")


def test_an_unreachable_metadata_server_means_single_host(monkeypatch, capsys):
    monkeypatch.setenv("GCE_METADATA_IP", f"127.0.0.1:{_free_port()}")  # nothing listens there
    for var in ("TPU_WORKER_HOSTNAMES", "TPU_PROCESS_ADDRESSES"):
        monkeypatch.delenv(var, raising=False)
    assert distributed.detect_tpu_environment(query_metadata=True) is None
    assert "no TPU metadata server" in capsys.readouterr().err


def test_rows_shared_between_hosts_are_refused():
    # 2 hosts, batch 8: host 0 holds rows 0-3, host 1 rows 4-7 -> fine
    preflight.check_host_rows({0: {(0, 2), (2, 4)}, 1: {(4, 6), (6, 8)}}, 8)
    # tensor across hosts: both hosts hold rows 0-3 and 4-7 would be nobody's own
    with pytest.raises(preflight.PreflightError, match="rows 0-3 of the batch live on process 0 and process 1"):
        preflight.check_host_rows({0: {(0, 4)}, 1: {(0, 4)}}, 8)
    with pytest.raises(preflight.PreflightError, match="process 0 holds 6 rows of each batch but loads 4"):
        preflight.check_host_rows({0: {(0, 4), (4, 6)}, 1: {(6, 8)}}, 8)
