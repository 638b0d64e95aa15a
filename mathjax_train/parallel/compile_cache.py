"""JAX's persistent compilation cache for the CLI's jobs, and a count of what a job compiled.

Every `mathjax-train` command turns the cache on before it compiles anything, so the second run of a job
(the same model, config and shapes) reads its programs back instead of compiling them. The key is JAX's:
the program's HLO, the compile options, the XLA flags, the backend and jax versions, so a changed model or
config compiles anew. Where: MATHJAX_COMPILE_CACHE (a directory, `gs://...`, or `off`); else a private
per-user directory, one per CPU kind (config/user_cache.py), since XLA:CPU compiles for the host's
instruction set. A local directory that another user could write is refused (loading an entry runs it): the
job then runs without the cache and says why. A cache the caller configured for JAX itself
(JAX_COMPILATION_CACHE_DIR) is left as it is.
"""

from __future__ import annotations

import os
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from mathjax_train.config.loading import is_remote
from mathjax_train.config.user_cache import cpu_tag, make_private_dir, user_cache_dir

ENV = "MATHJAX_COMPILE_CACHE"
OFF = ("off", "0", "false", "no", "none")
MAX_BYTES = 4 << 30  # least recently used entries go first beyond this; a size also turns on the cache's file lock
_DIR_VAR = "JAX_COMPILATION_CACHE_DIR"
_BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"  # each request: a compilation or a cache read
_CACHE_HIT = "/jax/compilation_cache/cache_hits"


def wanted_dir() -> str | None:
    """The directory the cache should use, or None when MATHJAX_COMPILE_CACHE turns it off."""
    value = os.environ.get(ENV, "").strip()
    if value.lower() in OFF:
        return None
    if not value:
        return str(user_cache_dir("jax") / cpu_tag())
    return value if is_remote(value) else os.path.abspath(value)  # the same for child processes in other dirs


def enable() -> str | None:
    """Turn JAX's persistent cache on for this process and the processes it starts (module docstring), through
    JAX's own environment variables (read when jax is imported; set on jax.config too if it already is).
    Returns the directory in use, or None. Call before the first compilation: JAX settles its cache then."""
    jax = sys.modules.get("jax")
    configured = os.environ.get(_DIR_VAR) or (jax and jax.config.jax_compilation_cache_dir)
    if configured:
        return str(configured)
    path = wanted_dir()
    if path is None:
        return None
    if not is_remote(path):
        problem = make_private_dir(Path(path))
        if problem:
            print(f"mathjax-train: not caching compiled programs ({ENV}): {problem}", file=sys.stderr)
            return None
    # every program, however quick to compile or small: a second run should compile nothing
    settings = {
        _DIR_VAR: path,
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": 0.0,
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": 0,
        "JAX_COMPILATION_CACHE_MAX_SIZE": MAX_BYTES,
    }
    for name, value in settings.items():
        if name == _DIR_VAR or name not in os.environ:
            os.environ[name] = str(value)
            if jax is not None:
                jax.config.update(name.lower(), value)
    return path


@dataclass
class CompileCount:
    """Programs XLA compiled (and the seconds it took) and programs read back from the persistent cache,
    while the `with` block ran."""

    compiled: int = 0
    from_cache: int = 0
    compile_seconds: float = 0.0
    _listeners: tuple = field(default=(), repr=False)

    def __enter__(self) -> CompileCount:
        from jax import monitoring

        hit = threading.local()  # JAX reports a cache hit, then (same thread) the request's duration

        def on_event(event: str, **_: str | int) -> None:
            if event == _CACHE_HIT:
                hit.pending = True

        def on_duration(event: str, duration_secs: float, **_: str | int) -> None:
            if event != _BACKEND_COMPILE:
                return
            if getattr(hit, "pending", False):
                hit.pending = False
                self.from_cache += 1
            else:
                self.compiled += 1
                self.compile_seconds += duration_secs

        monitoring.register_event_listener(on_event)
        monitoring.register_event_duration_secs_listener(on_duration)
        self._listeners = (on_event, on_duration)
        return self

    def __exit__(self, *exc) -> None:
        from jax import monitoring

        on_event, on_duration = self._listeners
        monitoring.unregister_event_listener(on_event)
        monitoring.unregister_event_duration_listener(on_duration)

    def describe(self, cache: str | None) -> str:
        where = f"read {self.from_cache} from the cache in {cache}" if cache else "no compilation cache"
        return f"compiled {self.compiled} programs in {self.compile_seconds:.1f} s; {where}"
