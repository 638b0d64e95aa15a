"""Where this user's caches of compiled code live (the CPU kernel's builds, JAX's compiled programs), and
whether a directory is safe to load code from: loading a cached build or executable runs it, so a cache
directory must belong to this user and be writable by no one else."""

from __future__ import annotations

import hashlib
import os
import platform
import stat
from pathlib import Path


def user_cache_dir(name: str) -> Path:
    """$XDG_CACHE_HOME/mathjax_train/NAME, else ~/.cache/mathjax_train/NAME."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mathjax_train" / name


def private_dir_problem(path: Path) -> str | None:
    """Why `path` is not safe to load code from (None if it is ours and writable by us alone)."""
    st = path.lstat()
    if not stat.S_ISDIR(st.st_mode):
        return f"{path} is not a directory"
    if st.st_uid != os.getuid():
        return f"{path} belongs to uid {st.st_uid}, not to this user ({os.getuid()})"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"{path} is writable by others (mode {stat.S_IMODE(st.st_mode):o})"
    return None


def make_private_dir(path: Path) -> str | None:
    """Create `path` (mode 0700, parents as needed); None when it is safe to load code from, else why not."""
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        return private_dir_problem(path)
    except OSError as e:
        return f"{path}: {e.strerror}"


def cpu_signature() -> str:
    """What code compiled for this host's CPU depends on: its model name and feature flags."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = [ln for ln in f if ln.startswith(("model name", "flags"))][:2]
        return "".join(lines)
    except OSError:
        return platform.processor() + platform.machine()


def cpu_tag() -> str:
    """A short name for cpu_signature(), so that machines sharing a home directory keep apart the code
    each compiled for its own instruction set."""
    return hashlib.sha256(cpu_signature().encode()).hexdigest()[:12]
