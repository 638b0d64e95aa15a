"""Hard time limits for sympy work: a small pool of worker *processes* (no signals, no fork).

Each worker is a fresh interpreter (`python -m mathjax_train.grading._worker`, i.e. spawn
semantics: nothing of the parent, such as a loaded JAX runtime or the caller's `__main__`, is
inherited).  A request is one JSON line on the worker's stdin, the verdict one line on its
stdout.  The parent waits with `select`, so the limit works from any thread; a worker that runs
past the limit is killed and replaced lazily.  Workers are started on first use and die with the
parent (EOF on stdin).  Counters in `stats()` record every timeout and error: nothing is hidden.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import select
import subprocess
import sys
import threading
import time

log = logging.getLogger(__name__)

STARTUP_TIMEOUT_S = 60.0
QUEUE_TIMEOUT_S = 120.0
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_stats_lock = threading.Lock()
_STATS = {"fast": 0, "symbolic": 0, "timeouts": 0, "errors": 0, "workers_started": 0, "queue_timeouts": 0}


def count(key: str) -> None:
    with _stats_lock:
        _STATS[key] = _STATS.get(key, 0) + 1


def stats() -> dict:
    """Copy of the grading counters (fast-path decisions, worker calls, timeouts, errors)."""
    with _stats_lock:
        return dict(_STATS)


class _Worker:
    def __init__(self):
        env = dict(os.environ)
        env["PYTHONPATH"] = _PACKAGE_ROOT + os.pathsep + env.get("PYTHONPATH", "")
        env.pop("PYTHONSTARTUP", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-u", "-m", "mathjax_train.grading._worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            close_fds=True,
        )
        self.buf = b""
        self.ready = False
        count("workers_started")

    def readline(self, deadline: float) -> bytes | None:
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            readable, _, _ = select.select([fd], [], [], left)
            if not readable:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line

    def wait_ready(self) -> bool:
        if not self.ready:
            self.ready = self.readline(time.monotonic() + STARTUP_TIMEOUT_S) == b"ready"
        return self.ready

    def kill(self) -> None:
        try:
            self.proc.kill()
            self.proc.wait(timeout=5)
        except Exception:
            pass
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except Exception:
                pass


class WorkerPool:
    """At most `size` workers; callers from any thread borrow one per request."""

    def __init__(self, size: int):
        self.size = max(1, size)
        self.pid = os.getpid()
        self.cond = threading.Condition()
        self.idle: list[_Worker] = []
        self.live = 0

    def _acquire(self, deadline: float) -> _Worker | None:
        with self.cond:
            while not self.idle and self.live >= self.size:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)
            if self.idle:
                return self.idle.pop()
            self.live += 1
        try:
            return _Worker()
        except Exception:
            self._discard(None)
            raise

    def _release(self, w: _Worker) -> None:
        with self.cond:
            self.idle.append(w)
            self.cond.notify()

    def _discard(self, w: _Worker | None) -> None:
        if w is not None:
            w.kill()
        with self.cond:
            self.live -= 1
            self.cond.notify()

    def call(self, request: dict, timeout_s: float):
        """Send one request; returns the decoded reply, or None on timeout/crash."""
        w = self._acquire(time.monotonic() + QUEUE_TIMEOUT_S)
        if w is None:
            count("queue_timeouts")
            log.warning("grading: no worker free within %.0fs", QUEUE_TIMEOUT_S)
            return None
        if not w.wait_ready():
            count("errors")
            log.warning("grading: worker failed to start")
            self._discard(w)
            return None
        try:
            w.proc.stdin.write(json.dumps(request).encode() + b"\n")
            w.proc.stdin.flush()
            line = w.readline(time.monotonic() + timeout_s)
        except (OSError, ValueError):
            line = None
        if line is None:
            count("timeouts")
            log.info("grading: worker timed out after %.1fs on %.80r", timeout_s, request)
            self._discard(w)
            return None
        self._release(w)
        return json.loads(line)

    def close(self) -> None:
        with self.cond:
            workers, self.idle = self.idle, []
        for w in workers:
            w.kill()


_pool: WorkerPool | None = None
_pool_lock = threading.Lock()


def get_pool() -> WorkerPool:
    """The process-wide pool, created lazily (and afresh in a forked child)."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool.pid != os.getpid():
            _pool = WorkerPool(int(os.environ.get("MATHJAX_GRADING_WORKERS", min(2, os.cpu_count() or 1))))
        return _pool


@atexit.register
def _shutdown() -> None:
    if _pool is not None and _pool.pid == os.getpid():
        _pool.close()


def run_symbolic(gold: str, pred: str, timeout_s: float) -> bool:
    """Full (sympy) comparison in a worker; False when it errors or exceeds `timeout_s`."""
    count("symbolic")
    reply = get_pool().call({"gold": gold, "pred": pred}, timeout_s)
    if reply is None:
        return False
    if "error" in reply:
        count("errors")
        log.info("grading: worker error %s", reply["error"])
        return False
    return bool(reply["equal"])
