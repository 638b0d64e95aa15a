"""The hostile suite as root and as an ordinary user, each snippet from its own caller process.

On a Cloud TPU VM people run as their own account; CI runs as root. Both must get the same
containment: nothing written outside the snippet's private tmpfs, no network (not even through
ctypes), no secret from the environment, no process left behind, and a truthful report. Where
the kernel refuses user namespaces (simulated for real: a chrooted caller may not create one),
the fallback must say what is missing and warn once.
"""

import json
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid

import pytest

import mathjax_train.tools.interpreter as interpreter

CALLER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sandbox_caller.py")
PACKAGE_DIR = os.path.dirname(os.path.abspath(interpreter.__file__))
IS_ROOT = os.geteuid() == 0
NOBODY = 65534
PROCESS_LIMIT = 256  # what the account gets, as on a locked-down VM


def _runnable_python(uid):
    """A Python the account `uid` can start itself, as the sandbox does (a venv whose base
    interpreter lives under /root is not one)."""
    for candidate in (sys.executable, "/usr/bin/python3", shutil.which("python3") or ""):
        probe = "import subprocess, sys; subprocess.run([sys.executable, '-c', ''], check=True)"
        if (
            candidate
            and subprocess.run(_as(uid) + [candidate, "-c", probe], cwd="/", capture_output=True).returncode == 0
        ):
            return candidate
    return None


def _as(uid):
    if uid is None or not IS_ROOT:
        return []
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]


def _limit_processes():
    resource.setrlimit(resource.RLIMIT_NPROC, (PROCESS_LIMIT, PROCESS_LIMIT))


def _call(python, uid, code, env=None, repeat=1, prefix=()):
    proc = subprocess.run(
        list(prefix) + _as(uid) + [python, CALLER, code, str(repeat)],
        cwd="/",
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        preexec_fn=_limit_processes if uid is not None else None,
    )
    assert proc.returncode == 0, (code, proc.stderr[-3000:])
    return json.loads(proc.stdout), proc.stderr


def _worker_processes():
    """Pids of live sandbox supervisors and snippets (all of them run the worker script)."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as fh:
                    if b"_sandbox_worker.py" in fh.read():
                        found.add(int(entry))
            except OSError:
                pass
    return found


class _Listener:
    """A TCP server on the host's localhost that records whether anyone connected."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted, self._stop = [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                self.accepted.append(self.sock.accept())
            except OSError:
                pass

    def close(self):
        self._stop.set()
        self._thread.join()
        self.sock.close()


def _suite(port, marker, secret):
    """(name, code, check of the result) for each hostile snippet, then a normal one."""
    host_paths = [f"/tmp/{marker}", f"/var/tmp/{marker}", f"/dev/shm/{marker}", os.path.join(PACKAGE_DIR, marker)]
    writes = (
        "import os\nfor p in %r:\n    try:\n        open(p, 'w').write('x')\n"
        "        print('wrote', p)\n    except OSError as e:\n        print(p, e.strerror)" % host_paths
    )
    raw_connect = (  # what a Python-level socket block cannot stop
        "import ctypes, struct\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "fd = libc.socket(2, 1, 0)\n"
        f"addr = struct.pack('=H', 2) + struct.pack('!H', {port}) + bytes([127, 0, 0, 1]) + bytes(8)\n"
        "print('connect', libc.connect(fd, addr, 16))"
    )
    environ = (
        "import os, glob\nprint('MY_SECRET' in os.environ)\nfound = False\n"
        "for p in glob.glob('/proc/*/environ'):\n    try:\n"
        "        found |= b'%s' in open(p, 'rb').read()\n    except OSError:\n        pass\n"
        "print(found)" % secret
    )
    daemon = (
        "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
        "        time.sleep(60)\n    os._exit(0)\nos.wait()\nprint('left a daemon')"
    )
    # the supervisor, the caller, this test: none is visible from the snippet's pid namespace
    kill = (
        "import os, signal\nfor pid in (os.getppid() or None, %d, -1):\n    try:\n"
        "        pid and os.kill(pid, signal.SIGKILL)\n    except OSError as e:\n"
        "        print(type(e).__name__)\nprint('alive')" % os.getpid()
    )
    error = lambda pattern: lambda r: not r["ok"] and re.search(pattern, r["error"])  # noqa: E731
    return host_paths, [
        ("infinite_loop", "while True:\n    pass", error(r"^TimeoutError")),
        ("fork_bomb", "import os\nwhile True:\n    os.fork()", error(r"^(BlockingIOError|TimeoutError)")),
        ("memory_bomb", "x = []\nwhile True:\n    x.append(bytearray(10**6))", error(r"^MemoryError")),
        ("huge_output", "print('x' * 10**8)", error(r"^(OutputLimitError|MemoryError)")),
        (
            "writes_to_host_paths",
            writes,
            lambda r: r["ok"] and "wrote " + PACKAGE_DIR not in r["output"] and "Read-only file system" in r["output"],
        ),
        ("environment_secrets", environ, lambda r: r["ok"] and r["output"] == "False\nFalse\n"),
        (
            "socket_to_localhost",
            f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)",
            error(r"Network is unreachable|Connection refused|timed out"),
        ),
        ("raw_socket_via_ctypes", raw_connect, lambda r: r["ok"] and r["output"] == "connect -1\n"),
        ("kill_the_parent", kill, lambda r: r["ok"] and r["output"].endswith("alive\n")),
        (
            "deep_recursion",
            "import sys\nsys.setrecursionlimit(10**6)\ndef f():\n    return f()\nf()",
            error(r"^(RecursionError|MemoryError|ProcessCrashed|TimeoutError)"),
        ),
        ("segfault", "import ctypes\nctypes.string_at(0)", error(r"^ProcessCrashed: .*SIGSEGV")),
        ("daemon_outliving_the_snippet", daemon, lambda r: r["ok"]),
        ("normal", "print(sum(range(10)))", lambda r: r["ok"] and r["output"] == "45\n"),
    ]


@pytest.mark.parametrize("who", ["root", "unprivileged"])
def test_hostile_suite_is_contained(who):
    if who == "root" and not IS_ROOT:
        pytest.skip("the root variant needs root (CI runs as root)")
    uid = NOBODY if who == "unprivileged" else None
    python = _runnable_python(uid)
    if python is None:
        pytest.skip(f"no Python on this machine that uid {uid} may execute")
    marker, secret = f"pwned-{uuid.uuid4().hex}", f"s3cr3t-{uuid.uuid4().hex}"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "MY_SECRET": secret}
    before = _worker_processes()
    listener = _Listener()
    try:
        host_paths, suite = _suite(listener.port, marker, secret)
        for name, code, check in suite:
            out, _ = _call(python, uid, code, env=env)
            result = out["results"][0]
            assert check(result), (name, result)
            assert secret not in result["output"], name
        report = out["report"]
    finally:
        listener.close()
    assert listener.accepted == []
    assert [p for p in host_paths if os.path.exists(p)] == []
    assert report["mode"] == "namespaces" and report["rw_mounts_left"] == []
    assert report["user_namespace"] is (who == "unprivileged" or not IS_ROOT)
    if who == "unprivileged":
        assert report["uids"] == [uid if IS_ROOT else os.getuid()]
    else:
        assert 0 not in report["uids"]
    deadline = time.monotonic() + 5  # teardown of the last sandbox overlaps the caller's exit
    while _worker_processes() - before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _worker_processes() - before == set()


@pytest.mark.skipif(not IS_ROOT, reason="making a chroot needs root")
def test_fallback_without_user_namespaces_is_loud(tmp_path):
    """A chrooted process may not create a user namespace: the kernel refuses, for real."""
    python = _runnable_python(NOBODY)
    if python is None:
        pytest.skip(f"no Python on this machine that uid {NOBODY} may execute")
    root = tmp_path / "root"
    root.mkdir()
    script = (
        f"mount --rbind / {root} && exec chroot {root} " + " ".join(_as(NOBODY)) + f" {python} {CALLER} 'print(1)' 2"
    )
    proc = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        cwd="/",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    report = out["report"]
    assert report["mode"] == "basic"
    assert any("unshare(user" in w and "not permitted" in w for w in report["warnings"]), report
    assert {"user namespace", "network namespace", "pid namespace", "read-only filesystem"} <= set(report["missing"])
    assert "bypassable" in report["network"]
    assert [r["output"] for r in out["results"]] == ["1\n", "1\n"]
    warnings = [l for l in proc.stderr.splitlines() if "namespaces unavailable" in l]
    assert len(warnings) == 1 and "pid namespace" in warnings[0], proc.stderr


def test_python_install_under_tmp_stays_visible(tmp_path_factory):
    """A checkout and venv under /tmp: the snippet's private /tmp must not hide them."""
    home = tmp_path_factory.mktemp("venv-under-tmp")  # under /tmp, closed to other users
    assert str(home).startswith(("/tmp/", os.path.realpath("/tmp") + "/"))
    venv = home / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "lazy_probe").mkdir()
    (site / "lazy_probe" / "__init__.py").write_text("")
    (site / "lazy_probe" / "tensor.py").write_text("VALUE = 42\n")  # imported lazily, in the sandbox
    code = (
        f"import lazy_probe.tensor, sys\nprint(lazy_probe.tensor.VALUE, sys.prefix)\n"
        f"try:\n    open({str(site / 'x')!r}, 'w')\nexcept OSError as e:\n    print(e.strerror)"
    )
    out, _ = _call(str(venv / "bin" / "python"), None, code)
    result = out["results"][0]
    assert result["ok"], result
    assert result["output"] == f"42 {venv}\nRead-only file system\n"
    assert not (site / "x").exists()
    assert str(venv) in out["report"]["in_private_tmpfs"]
