"""Session state, pool isolation between snippets, supervisor recovery and leak checks."""

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from mathjax_train.tools.interpreter import InterpreterPool, Limits, Session, execute

IS_ROOT = os.geteuid() == 0


def _descendants(root_pid: int) -> set[int]:
    """All live (non-zombie) processes below `root_pid`, from /proc parent links."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = set(), [root_pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _settled_descendants(expected: int, timeout: float = 3.0) -> set[int]:
    deadline = time.monotonic() + timeout
    procs = _descendants(os.getpid())
    while len(procs) != expected and time.monotonic() < deadline:
        time.sleep(0.05)
        procs = _descendants(os.getpid())
    return procs


def test_session_keeps_state_across_blocks():
    with Session(timeout_s=3) as s:
        assert s.run("import math\nx = 41").ok
        assert s.run("def g(n):\n    return n + 1").ok
        r = s.run("g(x) + math.floor(0.5)")
        assert (r.ok, r.output) == (True, "42\n")
        r = s.run("undefined_name")
        assert r.error == "NameError: name 'undefined_name' is not defined"
        assert s.run("x").output == "41\n"  # an ordinary error does not lose state


@pytest.mark.parametrize(
    "killer,expect",
    [
        ("while True:\n    pass", "TimeoutError"),
        ("import os\nos._exit(3)", "ProcessExited"),
        (
            "import sys\nsys.setrecursionlimit(10**7)\na, b = [], []\n"
            "for _ in range(3 * 10**5):\n    a, b = [a], [b]\na == b",
            "ProcessCrashed",
        ),
    ],
)
def test_session_restarts_after_timeout_or_crash(killer, expect):
    with Session(timeout_s=2) as s:
        assert s.run("x = 1").ok
        r = s.run(killer)
        assert not r.ok and r.error.startswith(expect), r
        assert "state" in r.error and "lost" in r.error
        r = s.run("x")  # fresh interpreter: earlier variables are gone, but it works
        assert r.error == "NameError: name 'x' is not defined"
        assert s.run("y = 2\ny * 3").output == "6\n"


def test_session_per_block_cpu_limit_is_reported_as_timeout():
    # wall limit far away: the per-block CPU soft limit (SIGXCPU -> exception) must fire first,
    # and since it surfaces as a Python exception the session keeps its state
    with Session(timeout_s=20) as s:
        s.run("z = 5")
        r = s.run("while True:\n    pass", cpu_s=1)
        assert r.timed_out and r.error == "TimeoutError: CPU time limit exceeded", r
        assert r.elapsed_s < 10
        assert s.run("z").output == "5\n"
        r = s.run("while True:\n    pass", cpu_s=1)  # the budget is per block, not cumulative
        assert r.timed_out and 0.5 < r.elapsed_s < 10


def test_fresh_snippet_cpu_limit():
    with InterpreterPool(workers=1, timeout_s=20, preload=()) as pool:
        r = pool.execute("while True:\n    pass", cpu_s=1)
        assert r.timed_out and "CPU time limit" in r.error and r.elapsed_s < 10


def test_pool_snippets_share_no_state():
    with InterpreterPool(workers=1, preload=()) as pool:
        assert pool.execute("secret = 123\nimport json\nopen('left', 'w').write('x')").ok
        r = pool.execute("import os\nprint('secret' in globals(), 'json' in globals(), os.path.exists('left'))")
        assert r.output == "False False False\n"


def test_pool_map_keeps_order_and_runs_concurrently():
    with InterpreterPool(workers=2, preload=()) as pool:
        t0 = time.monotonic()
        results = pool.map(["import time\ntime.sleep(0.5)\n%d" % i for i in range(4)])
        elapsed = time.monotonic() - t0
        assert [r.output for r in results] == [f"{i}\n" for i in range(4)]
        assert elapsed < 1.9  # 4 x 0.5 s on 2 workers, not serial (2 s)


def test_pool_preload_makes_sympy_usable():
    pytest.importorskip("sympy")
    with InterpreterPool(workers=1, preload=("sympy",)) as pool:
        assert "sympy" in pool.report["preloaded"]
        r = pool.execute("import sympy as sp\nx = sp.Symbol('x')\nsp.factor(x**2 - 1)")
        assert r.output == "(x - 1)*(x + 1)\n", r


def test_pool_session_borrows_a_warm_worker():
    with InterpreterPool(workers=1, preload=()) as pool:
        with pool.session() as s:
            s.run("k = 7")
            assert s.run("k * 6").output == "42\n"
        # the worker is back and carries no session state
        assert pool.execute("'k' in globals()").output == "False\n"
        with pool.session() as s:
            assert s.run("'k' in globals()").output == "False\n"


def test_supervisor_death_is_recovered_and_takes_sandboxes_along():
    with InterpreterPool(workers=1, preload=()) as pool:
        worker = pool._workers[0]
        zygote = worker.proc.pid
        box = []
        t = threading.Thread(target=lambda: box.append(pool.execute("import time\ntime.sleep(30)", timeout_s=30)))
        t.start()
        deadline = time.monotonic() + 3
        while len(_descendants(zygote)) < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        sandboxes = _descendants(zygote)
        assert sandboxes
        os.kill(zygote, signal.SIGKILL)
        t.join(timeout=20)
        assert box and box[0].error.startswith("SandboxError"), box
        deadline = time.monotonic() + 3
        while any(os.path.exists(f"/proc/{p}") and _state(p) != "Z" for p in sandboxes):
            assert time.monotonic() < deadline, [(p, _state(p)) for p in sandboxes]
            time.sleep(0.05)
        assert pool.execute("1 + 1").output == "2\n"


# Runs a sandbox child's body on prepared pipes: a code block is already queued on the command pipe
# (as the supervisor would queue it) and the control pipe's read end is kept or closed (supervisor
# alive or already dead when the child arms its death signal).
_CHILD = """
import fcntl, os, sys
from mathjax_train.tools import _sandbox_worker as w
marker, supervisor_alive = sys.argv[1], sys.argv[2] == "1"
def high_pipe():  # both ends clear of fds 3 and 4
    ends = os.pipe()
    moved = tuple(fcntl.fcntl(fd, fcntl.F_DUPFD, 64) for fd in ends)
    for fd in ends:
        os.close(fd)
    return moved
ctl_r, ctl_w = high_pipe()
cmd_r, cmd_w = high_pipe()
w.send_msg(cmd_w, {"code": f"open({marker!r}, 'w').write('ran')", "cpu_s": 5})
os.close(cmd_w)
if not supervisor_alive:
    os.close(ctl_r)
os.dup2(ctl_w, w.CTL_FD)
os.dup2(cmd_r, w.CMD_FD)
w.child_main({}, False)
"""


@pytest.mark.parametrize("supervisor_alive", [True, False])
def test_child_runs_code_only_once_its_death_signal_is_armed_under_a_live_supervisor(tmp_path, supervisor_alive):
    """A supervisor that dies while its child is still setting up must not leave that child running
    the code already queued for it (nothing would ever kill it)."""
    marker = tmp_path / "ran"
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(marker), "1" if supervisor_alive else "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if supervisor_alive:
        assert proc.returncode == 0, proc.stderr
        assert marker.read_text() == "ran"
    else:
        assert "BrokenPipeError" in proc.stderr
        assert not marker.exists()


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def test_execute_leaves_no_process_or_temp_entry():
    before_tmp = set(os.listdir(tempfile.gettempdir()))
    before = _descendants(os.getpid())
    for code in ("print(1)", "open('f', 'w').write('x')", "while True: pass"):
        execute(code, timeout_s=1)
    assert _settled_descendants(len(before)) == before
    assert set(os.listdir(tempfile.gettempdir())) - before_tmp == set()


@pytest.mark.slow
def test_thousand_snippets_no_leaks():
    tmp_root = tempfile.gettempdir()
    before_tmp = set(os.listdir(tmp_root))
    before = _descendants(os.getpid())
    codes = [f"v = {i}\nopen('scratch', 'w').write(str(v))\nprint(v * v)" for i in range(1000)]
    with InterpreterPool(workers=2, timeout_s=5, limits=Limits(memory_mb=256), preload=()) as pool:
        t0 = time.monotonic()
        results = pool.map(codes)
        elapsed = time.monotonic() - t0
        during = _settled_descendants(len(before) + 2)
        assert len(during - before) == 2  # just the two supervisors, no stray sandbox
    assert [r.output for r in results] == [f"{i * i}\n" for i in range(1000)]
    assert all(r.ok for r in results)
    assert elapsed < 60
    assert _settled_descendants(len(before)) == before
    assert set(os.listdir(tmp_root)) - before_tmp == set()


def test_basic_mode_pool_removes_its_temp_dirs(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with InterpreterPool(workers=1, preload=(), isolation="basic") as pool:
        assert pool.report["mode"] == "basic"
        results = pool.map(["open('x', 'w').write('1')\nimport os\nos.getcwd()"] * 20)
        cwds = {r.output for r in results}
        assert len(cwds) == 20 and all(c.startswith(repr(str(tmp_path))[:-1]) for c in cwds)
    assert list(tmp_path.iterdir()) == []
