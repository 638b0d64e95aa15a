"""Sandboxed Python execution for tool-integrated reasoning (model output is hostile input).

Three entry points, all backed by a supervisor process (`_sandbox_worker.py`) that forks the
sandboxed interpreter:

- `execute(code, timeout_s=...)`: one snippet in a fresh sandbox (starts a supervisor per call).
- `Session`: one long-lived sandboxed interpreter whose state survives across code blocks.
- `InterpreterPool(workers=N)`: warm supervisors that fork a fresh sandbox per snippet.

Output semantics (like a notebook cell): what the code prints to stdout/stderr, then, if the
last statement is an expression whose value is not None, its `repr` on a line of its own.

Isolation (`isolation_report()["mode"] == "namespaces"`): empty network namespace, private
mount namespace with the whole tree read-only except fresh size-capped tmpfs mounts on /tmp,
/var/tmp, /dev/shm, /run/lock (cwd is /tmp) into which the Python install is bound back read-only
wherever it lives, the caller's home and /run/user hidden, a fresh pid and IPC namespace per
snippet (nothing a snippet starts outlives it), rlimits on CPU, address space, file size, process
count, open files and core size, a wall-clock deadline that SIGKILLs the pid namespace, a
scrubbed environment and capped output. As root each supervisor runs snippets as an unprivileged
uid of its own (no supplementary groups, no_new_privs, not dumpable). As an ordinary user the
supervisor first enters an unprivileged user namespace (`user_namespace` in the report) and
snippets run as the caller's uid with every capability dropped, so files that account can read
outside its home (e.g. the checkout) stay readable. Not guaranteed: CPU and memory contention with
the host beyond the rlimits (no cgroups), kernel exploits. Where the kernel refuses namespaces the
"basic" mode keeps only rlimits, a temporary cwd, the scrubbed environment, process group kill and
a Python-level socket block; the report lists what is `missing`, and a warning is logged once.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import select
import struct
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

__all__ = ["ExecutionResult", "Limits", "execute", "Session", "InterpreterPool", "isolation_report", "DEFAULT_PRELOAD"]

_WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_sandbox_worker.py")
_HDR = struct.Struct(">I")
# Modules math solutions import most; preloading them in a pool's supervisor makes `import` free.
DEFAULT_PRELOAD = ("math", "fractions", "itertools", "functools", "collections", "sympy", "numpy")
_STARTUP_S = 60.0  # generous: preloading sympy on a loaded 2-core machine takes seconds
_GRACE_S = 10.0  # host-side backstop beyond the supervisor's own deadline
log = logging.getLogger(__name__)
_warned_basic = threading.Event()  # the fallback warning is logged once per process


@dataclass(frozen=True)
class ExecutionResult:
    """Outcome of one snippet. `error` is the last traceback line or the limit that was hit."""

    ok: bool
    output: str
    error: str | None
    timed_out: bool
    truncated: bool = False
    traceback: str | None = None
    elapsed_s: float = 0.0


@dataclass(frozen=True)
class Limits:
    """Per-snippet resource limits (memory is address space on top of the interpreter's own)."""

    memory_mb: int = 1024
    file_mb: int = 16
    nproc: int = 32
    nofile: int = 256
    tmpfs_mb: int = 64
    output_bytes: int = 8192  # kept and shown (head and tail), the rest replaced by a marker
    max_output_bytes: int = 1 << 20  # beyond this the snippet is stopped
    session_cpu_s: int = 600  # hard CPU budget for the whole life of a session


def _minimal_env() -> dict[str, str]:
    """The only environment the sandbox sees: nothing is inherited from os.environ."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "HOME": "/tmp",
        "TMPDIR": "/tmp",
        "PYTHONIOENCODING": "utf-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "MPLBACKEND": "Agg",
    }


class SandboxError(RuntimeError):
    """The supervisor itself failed (not the user's code)."""


class _Worker:
    """Host-side handle on one supervisor process; used by one thread at a time."""

    def __init__(self, limits: Limits | None = None, preload=(), isolation: str = "auto"):
        self.limits = limits or Limits()
        self.preload, self.isolation = tuple(preload), isolation
        self.proc: subprocess.Popen | None = None
        self.report: dict = {}
        self._start()

    def _start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-I", _WORKER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=_minimal_env(),
            cwd="/",
            close_fds=True,
            start_new_session=True,
            bufsize=0,
        )
        cfg = {
            "limits": asdict(self.limits),
            "preload": list(self.preload),
            "isolation": self.isolation,
            "tmp_root": tempfile.gettempdir(),
        }
        reply = self._call(cfg, _STARTUP_S)
        if reply is None or "fatal" in reply:
            self.kill()
            raise SandboxError(f"sandbox supervisor failed to start: {reply}")
        self.report = reply["isolation"]
        if self.report["mode"] == "basic" and self.isolation == "auto" and not _warned_basic.is_set():
            _warned_basic.set()
            log.warning(
                "python sandbox: namespaces unavailable (%s); running snippets without %s",
                "; ".join(self.report["warnings"]) or "unknown reason",
                ", ".join(self.report["missing"]),
            )

    def _call(self, msg: dict, timeout: float):
        """Send one request and wait for its reply; None if the supervisor died or hung."""
        data = json.dumps(msg).encode()
        proc = self.proc
        if proc is None or proc.stdin is None or proc.stdout is None:
            raise RuntimeError("the sandbox supervisor is closed")
        try:
            proc.stdin.write(_HDR.pack(len(data)) + data)
        except (BrokenPipeError, OSError):
            return None
        deadline = time.monotonic() + timeout
        fd = proc.stdout.fileno()
        buf = bytearray()
        need = _HDR.size
        while len(buf) < need:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                return None
            chunk = os.read(fd, max(65536, need - len(buf)))
            if not chunk:
                return None
            buf += chunk
            if need == _HDR.size and len(buf) >= _HDR.size:
                need += _HDR.unpack(buf[: _HDR.size])[0]
        return json.loads(bytes(buf[_HDR.size : need]))

    def request(self, msg: dict, timeout_s: float) -> ExecutionResult:
        reply = self._call(msg, timeout_s + _GRACE_S)
        if reply is None:  # supervisor died or hung: replace it and report
            self.kill()
            self._start()
            return ExecutionResult(
                False, "", "SandboxError: the sandbox supervisor stopped responding and was restarted", True
            )
        return ExecutionResult(**reply)

    def run(self, code: str, timeout_s: float, cpu_s: int | None = None, session: bool = False) -> ExecutionResult:
        op = "session_run" if session else "run"
        return self.request({"op": op, "code": code, "timeout_s": timeout_s, "cpu_s": cpu_s}, timeout_s)

    def reset_session(self) -> None:
        if self._call({"op": "session_reset"}, _GRACE_S) is None:
            self.kill()
            self._start()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, 9)
            except ProcessLookupError:
                pass
        if self.proc is not None:
            self.proc.wait()
            for stream in (self.proc.stdin, self.proc.stdout):
                if stream is not None:
                    stream.close()

    def close(self) -> None:
        """Ask the supervisor to stop (it kills its sandboxes), then reap it."""
        if self.proc is None:
            return
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()  # EOF: the supervisor ends its session child and exits
            self.proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.kill()
        self.proc = None


def execute(
    code: str, timeout_s: float = 5.0, limits: Limits | None = None, isolation: str = "auto"
) -> ExecutionResult:
    """Run `code` in a fresh sandbox and return its result (never raises for bad code).

    Starts and stops a supervisor per call (~tens of ms); use `InterpreterPool` for throughput.
    """
    worker = _Worker(limits, (), isolation)
    try:
        return worker.run(code, timeout_s)
    finally:
        worker.close()


def isolation_report(isolation: str = "auto") -> dict:
    """What the sandbox enforces on this machine (mode, uid, network, filesystem, warnings)."""
    worker = _Worker(None, (), isolation)
    try:
        return dict(worker.report)
    finally:
        worker.close()


class Session:
    """A sandboxed interpreter that keeps variables and imports across code blocks.

    If a block times out or kills the interpreter, the result says so and the next block
    starts in a fresh interpreter (the error text states that earlier state is lost).
    """

    def __init__(
        self,
        timeout_s: float = 5.0,
        limits: Limits | None = None,
        preload=(),
        isolation: str = "auto",
        _worker: _Worker | None = None,
        _on_close=None,
    ):
        self.timeout_s = timeout_s
        self._worker: _Worker | None = _worker or _Worker(limits, preload, isolation)
        self._owned = _worker is None
        self._on_close = _on_close

    @property
    def report(self) -> dict:
        if self._worker is None:
            raise RuntimeError("session is closed")
        return self._worker.report

    def run(self, code: str, timeout_s: float | None = None, cpu_s: int | None = None) -> ExecutionResult:
        """Run one block; `cpu_s` (default: timeout rounded up + 1) caps its CPU seconds."""
        if self._worker is None:
            raise RuntimeError("session is closed")
        return self._worker.run(code, timeout_s or self.timeout_s, cpu_s, session=True)

    __call__ = run

    def reset(self) -> None:
        """Drop all state (the next block runs in a fresh interpreter)."""
        if self._worker is None:
            raise RuntimeError("session is closed")
        self._worker.reset_session()

    def close(self) -> None:
        if self._worker is None:
            return
        if self._owned:
            self._worker.close()
        else:
            self._worker.reset_session()
            self._on_close(self._worker)
        self._worker = None

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class InterpreterPool:
    """Warm sandbox supervisors; each snippet runs in a freshly forked sandbox (no shared state).

    `map` runs snippets concurrently (one per supervisor) and returns results in input order.
    """

    def __init__(
        self,
        workers: int | None = None,
        timeout_s: float = 5.0,
        limits: Limits | None = None,
        preload=DEFAULT_PRELOAD,
        isolation: str = "auto",
    ):
        self.timeout_s = timeout_s
        n = workers or os.cpu_count() or 1
        with ThreadPoolExecutor(n) as ex:  # start supervisors in parallel (preload is slow)
            self._workers = list(ex.map(lambda _: _Worker(limits, preload, isolation), range(n)))
        self._idle: queue.Queue[_Worker] = queue.Queue()
        for w in self._workers:
            self._idle.put(w)
        self._executor = ThreadPoolExecutor(n)
        self._closed = False
        self._lock = threading.Lock()

    @property
    def report(self) -> dict:
        return self._workers[0].report

    @property
    def workers(self) -> int:
        return len(self._workers)

    def execute(self, code: str, timeout_s: float | None = None, cpu_s: int | None = None) -> ExecutionResult:
        if self._closed:
            raise RuntimeError("pool is closed")
        worker = self._idle.get()
        try:
            return worker.run(code, timeout_s or self.timeout_s, cpu_s)
        finally:
            self._idle.put(worker)

    def map(self, codes, timeout_s: float | None = None) -> list[ExecutionResult]:
        return list(self._executor.map(lambda c: self.execute(c, timeout_s), codes))

    def session(self, timeout_s: float | None = None) -> Session:
        """A Session on a borrowed warm supervisor (returned to the pool on close)."""
        worker = self._idle.get()
        return Session(timeout_s or self.timeout_s, _worker=worker, _on_close=self._idle.put)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._executor.shutdown(wait=True)
        for w in self._workers:
            w.close()

    def __enter__(self) -> "InterpreterPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass
