"""The lint tools of tests/test_lint.py, and its package-wide mypy run, which tests/conftest.py starts at
collection so that it runs on a spare core beside the other tests (it needs no JAX and takes about a minute);
under pytest-xdist the workers keep both cores busy, and the run starts with its test."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MYPY_TEST = "test_lint.py::test_mypy_is_clean"
_early: list = []  # (process, cache dir) of the run started at collection


def tool(name: str) -> str:
    beside = Path(sys.executable).with_name(name)  # the venv's, installed by the [test] extra
    found = str(beside) if beside.exists() else shutil.which(name)
    assert found, f"{name} is not installed: pip install -e '.[test]'"
    return found


def mypy_command(cache_dir) -> list[str]:
    """`mypy` with the [tool.mypy] settings (files = the package, unless paths are appended)."""
    return [tool("mypy"), "--config-file", str(REPO / "pyproject.toml"), "--cache-dir", str(cache_dir)]


def _start(cache_dir) -> subprocess.Popen:
    return subprocess.Popen(
        mypy_command(cache_dir), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def start_early(nodeids) -> None:
    """Start the package's mypy run now, with a fresh cache, if its test is among those collected. Not in
    an xdist worker: every worker collects every test, and only one of them runs it."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return
    if not _early and any(n.endswith(MYPY_TEST) for n in nodeids):
        cache_dir = tempfile.mkdtemp(prefix="mathjax-tests-mypy-cache-")
        _early.append((_start(cache_dir), cache_dir))
        atexit.register(_discard_early)


def _discard_early() -> None:
    """A session that ended before the test (-x, Ctrl-C) leaves no mypy running and no cache behind."""
    while _early:
        proc, cache_dir = _early.pop()
        proc.kill()
        proc.wait()
        shutil.rmtree(cache_dir, ignore_errors=True)


def package_mypy(tmp_path) -> tuple[int, str]:
    """(returncode, output) of mypy over the package with a fresh cache: the run started at collection if
    there is one, else one started now."""
    proc, cache_dir = _early.pop() if _early else (_start(tmp_path / "mypy_cache"), None)
    try:
        out, _ = proc.communicate(timeout=1200)
    finally:
        proc.kill()
        if cache_dir:
            shutil.rmtree(cache_dir, ignore_errors=True)
    return proc.returncode, out
