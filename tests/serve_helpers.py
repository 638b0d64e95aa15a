"""What the serve tests share: waiting for an in-process server to go idle, and starting `mathjax-train serve`
in a subprocess and reading the URL from its ready line."""

from __future__ import annotations

import json
import subprocess
import threading
import time

import pytest


def wait_idle(app, timeout_s=30.0):
    """Poll until no row runs or waits and every KV page is back in the pool."""
    e, deadline = app.engine, time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not e.running and not e.waiting and app.loop.live_rows == 0 and e.pages_held_by_rows() == 0:
            return
        time.sleep(0.01)
    pytest.fail(
        f"server not idle after {timeout_s}s: running={len(e.running)} waiting={len(e.waiting)} "
        f"live={app.loop.live_rows} pages held by rows {e.pages_held_by_rows()} (free {e.pool.free}/{e.pool.usable})"
    )


def start_serve_process(cmd: list[str], cwd, timeout_s: float = 300.0) -> tuple[subprocess.Popen, str]:
    """Start `cmd` (a `serve` command line) and wait for the JSON line it prints when ready; returns the process
    and the URL it serves on. A server that does not report ready is killed and the test fails."""
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, text=True)
    ready = {}

    def read_ready():
        for line in proc.stdout:
            if line.startswith("{"):
                ready.update(json.loads(line))
                return

    t = threading.Thread(target=read_ready, daemon=True)
    t.start()
    t.join(timeout=timeout_s)
    if "serving" not in ready:
        proc.kill()
        pytest.fail(f"serve did not report ready (exit code {proc.poll()})")
    return proc, ready["serving"]
