"""The package, tests and benchmarks pass `ruff check`, and the package passes `mypy`, with the settings in
pyproject.toml (CI runs this)."""
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _tool(name: str) -> str:
    beside = Path(sys.executable).with_name(name)  # the venv's, installed by the [test] extra
    found = str(beside) if beside.exists() else shutil.which(name)
    assert found, f"{name} is not installed: pip install -e '.[test]'"
    return found


def test_ruff_check_is_clean():
    proc = subprocess.run([_tool("ruff"), "check", "--no-cache", "mathjax_train", "tests", "benchmarks"], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ruff_finds_a_planted_error(tmp_path):
    """The check can fail: an unused import and an undefined name in a file ruff is pointed at are reported."""
    bad = tmp_path / "bad.py"
    bad.write_text("import os\n\n\ndef f():\n    return undefined_name\n")
    proc = subprocess.run([_tool("ruff"), "check", "--no-cache", "--config", str(REPO / "pyproject.toml"), str(bad)],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and "F401" in proc.stdout and "F821" in proc.stdout


def test_mypy_is_clean(tmp_path):
    """`mypy` with the [tool.mypy] settings (files = the package); a fresh cache, so nothing stale passes."""
    proc = subprocess.run([_tool("mypy"), "--config-file", str(REPO / "pyproject.toml"),
                           "--cache-dir", str(tmp_path / "mypy_cache")], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_finds_a_planted_error(tmp_path):
    """The check can fail: a str assigned to an int and a call with a missing argument are reported."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f(a: int) -> int:\n    return a\n\n\nx: int = 'one'\nf()\n")
    proc = subprocess.run([_tool("mypy"), "--config-file", str(REPO / "pyproject.toml"),
                           "--cache-dir", str(tmp_path / "mypy_cache"), str(bad)],
                          capture_output=True, text=True)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "[assignment]" in proc.stdout and "[call-arg]" in proc.stdout, proc.stdout
