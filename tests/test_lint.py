"""The package, tests and benchmarks pass `ruff check` and `ruff format --check`, and the package passes `mypy`, with the settings in
pyproject.toml (CI runs this)."""

import subprocess

from lint_helpers import REPO, mypy_command, package_mypy, tool


def test_ruff_check_is_clean():
    proc = subprocess.run(
        [tool("ruff"), "check", "--no-cache", "mathjax_train", "tests", "benchmarks"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ruff_format_is_clean():
    proc = subprocess.run(
        [tool("ruff"), "format", "--check", "--no-cache", "mathjax_train", "tests", "benchmarks"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ruff_format_finds_a_planted_misformat(tmp_path):
    """The format check can fail: a file not in the formatter's layout is reported."""
    bad = tmp_path / "bad.py"
    bad.write_text("x = {  'a':1 }\n")
    proc = subprocess.run(
        [tool("ruff"), "format", "--check", "--no-cache", "--config", str(REPO / "pyproject.toml"), str(bad)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1 and "bad.py" in proc.stdout, proc.stdout + proc.stderr


def test_ruff_finds_a_planted_error(tmp_path):
    """The check can fail: an unused import and an undefined name in a file ruff is pointed at are reported."""
    bad = tmp_path / "bad.py"
    bad.write_text("import os\n\n\ndef f():\n    return undefined_name\n")
    proc = subprocess.run(
        [tool("ruff"), "check", "--no-cache", "--config", str(REPO / "pyproject.toml"), str(bad)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1 and "F401" in proc.stdout and "F821" in proc.stdout


def test_mypy_is_clean(tmp_path):
    """`mypy` with the [tool.mypy] settings (files = the package); a fresh cache, so nothing stale passes (the run
    starts at collection: tests/lint_helpers.py)."""
    returncode, output = package_mypy(tmp_path)
    assert returncode == 0, output


def test_mypy_finds_a_planted_error(tmp_path):
    """The check can fail: a str assigned to an int and a call with a missing argument are reported."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f(a: int) -> int:\n    return a\n\n\nx: int = 'one'\nf()\n")
    proc = subprocess.run([*mypy_command(tmp_path / "mypy_cache"), str(bad)], capture_output=True, text=True)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "[assignment]" in proc.stdout and "[call-arg]" in proc.stdout, proc.stdout
