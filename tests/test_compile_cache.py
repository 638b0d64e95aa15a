"""JAX's persistent compilation cache for the CLI (parallel/compile_cache.py): a private per-user directory by
default, an unsafe one refused, `off` honoured, and a second run of the same `generate` job compiling nothing
while a changed job compiles anew."""

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from hf_fixtures import make_hf_model
from mathjax_train.cli import main
from mathjax_train.config.user_cache import cpu_tag, private_dir_problem
from train_helpers import REPO

IS_ROOT = os.geteuid() == 0
NOBODY = 65534
ENABLE = "from mathjax_train.parallel import compile_cache; print(compile_cache.enable())"


def _user_env(**extra) -> dict:
    """This environment without the test session's own JAX cache (conftest), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_COMPILATION_CACHE", "JAX_PERSISTENT_CACHE"))}
    env.pop("MATHJAX_COMPILE_CACHE", None)
    return {**env, **extra}


def _enable(env: dict, prefix=(), cwd=REPO) -> subprocess.CompletedProcess:
    env = {**env, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [*prefix, sys.executable, "-c", ENABLE], capture_output=True, text=True, env=env, cwd=cwd, timeout=120
    )


def test_private_dir_problem_names_what_is_wrong(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir(mode=0o700)
    assert private_dir_problem(mine) is None
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    assert "writable by others" in private_dir_problem(open_dir)
    link = tmp_path / "link"
    link.symlink_to(mine)
    assert "not a directory" in private_dir_problem(link)
    if IS_ROOT:
        theirs = tmp_path / "theirs"
        theirs.mkdir(mode=0o700)
        os.chown(theirs, NOBODY, NOBODY)
        assert f"belongs to uid {NOBODY}" in private_dir_problem(theirs)


def test_the_default_cache_is_private_per_user_and_per_cpu_kind(tmp_path):
    run = _enable(_user_env(XDG_CACHE_HOME=str(tmp_path / "xdg")))
    want = tmp_path / "xdg" / "mathjax_train" / "jax" / cpu_tag()
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == str(want)
    assert stat.S_IMODE(want.stat().st_mode) == 0o700


def test_off_and_a_cache_the_caller_configured(tmp_path):
    assert _enable(_user_env(MATHJAX_COMPILE_CACHE="off")).stdout.strip() == "None"
    theirs = tmp_path / "theirs"
    run = _enable(_user_env(JAX_COMPILATION_CACHE_DIR=str(theirs), MATHJAX_COMPILE_CACHE=str(tmp_path / "ours")))
    assert run.stdout.strip() == str(theirs) and not (tmp_path / "ours").exists()
    run = _enable(_user_env(MATHJAX_COMPILE_CACHE="relative/cache"), cwd=tmp_path)  # child processes elsewhere agree
    assert run.stdout.strip() == str(tmp_path / "relative" / "cache") and (tmp_path / "relative" / "cache").is_dir()


def test_a_cache_others_can_write_is_refused(tmp_path):
    """Loading a cache entry runs it: a directory others could plant entries in is not used, and the user is
    told why."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    run = _enable(_user_env(MATHJAX_COMPILE_CACHE=str(shared)))
    assert run.returncode == 0 and run.stdout.strip() == "None"
    assert f"not caching compiled programs (MATHJAX_COMPILE_CACHE): {shared} is writable by others" in run.stderr


@pytest.mark.skipif(not IS_ROOT, reason="switching to another uid needs root; the run itself is unprivileged here")
def test_an_unprivileged_user_refuses_roots_cache_and_makes_its_own():
    top = Path(tempfile.mkdtemp(prefix="mathjax-cache-test-"))  # pytest's tmp_path is root's alone to enter
    try:
        top.chmod(0o755)
        root_cache = top / "root-cache"
        root_cache.mkdir(mode=0o755)
        drop = ("setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups")
        run = _enable(_user_env(MATHJAX_COMPILE_CACHE=str(root_cache), HOME="/nonexistent"), prefix=drop)
        assert run.stdout.strip() == "None" and f"{root_cache} belongs to uid 0, not to this user" in run.stderr
        own = top / "nobody-xdg"
        own.mkdir()
        os.chown(own, NOBODY, NOBODY)
        run = _enable(_user_env(XDG_CACHE_HOME=str(own), HOME="/nonexistent"), prefix=drop)
        made = own / "mathjax_train" / "jax" / cpu_tag()
        assert run.stdout.strip() == str(made) and made.stat().st_uid == NOBODY
    finally:
        shutil.rmtree(top)


COUNT = re.compile(r"mathjax-train generate: compiled (\d+) programs in [\d.]+ s; read (\d+) from the cache in (.+)")


def _generate(d, out: str, *flags) -> tuple[int, int, list[dict]]:
    """`mathjax-train generate` as a user runs it, in a fresh process; (programs compiled, read from the
    cache, output rows)."""
    args = ["generate", "--checkpoint", str(d / "ckpt"), "--prompts", str(d / "prompts.jsonl"), "--output", out]
    args += ["--num-samples", "2", "--temperature", "0.7", "--seed", "3", *flags]
    env = _user_env(MATHJAX_COMPILE_CACHE=str(d / "cache"))
    run = subprocess.run(
        [sys.executable, "-m", "mathjax_train.cli", *args], capture_output=True, text=True, env=env, cwd=REPO
    )
    assert run.returncode == 0, run.stderr[-3000:]
    m = COUNT.search(run.stderr)
    assert m, run.stderr[-2000:]
    assert m.group(3) == str(d / "cache")
    rows = [json.loads(line) for line in open(out)]
    return int(m.group(1)), int(m.group(2)), rows


def test_a_second_generate_compiles_nothing_and_a_changed_one_compiles(tmp_path):
    make_hf_model(tmp_path / "hf", "llama", kv_heads=2)
    assert main(["import-hf", str(tmp_path / "hf"), str(tmp_path / "ckpt")]) == 0
    prompts = [{"prompt": p} for p in ("1 + 1 =", "2 + 3 =", "The answer is")]
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps(p) + "\n" for p in prompts))
    first = _generate(tmp_path, str(tmp_path / "a.jsonl"), "--max-new-tokens", "6")
    second = _generate(tmp_path, str(tmp_path / "b.jsonl"), "--max-new-tokens", "6")
    assert first[0] > 0 and first[1] == 0
    assert second[0] == 0 and second[1] >= first[0], (first[:2], second[:2])
    assert second[2] == first[2]  # the programs read back sample the same tokens
    # a longer job sizes its engine for longer rows: other shapes, other programs
    changed = _generate(tmp_path, str(tmp_path / "c.jsonl"), "--max-new-tokens", "40")
    assert changed[0] > 0
