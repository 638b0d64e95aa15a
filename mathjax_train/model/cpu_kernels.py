"""The engine's CPU paged-attention kernel (csrc/paged_attention_cpu.cc): built once per machine with
the system C++ compiler against jaxlib's XLA FFI headers, cached, and registered as a custom call.

`available()` says whether it could be built and loaded (None) or why not; callers then use the
plain-XLA path. The library is loaded only from a directory that belongs to this user and that no
one else can write, since loading it runs its code.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from mathjax_train.config.user_cache import cpu_signature, make_private_dir, private_dir_problem, user_cache_dir

SOURCE = Path(__file__).parent / "csrc" / "paged_attention_cpu.cc"
TARGET = "mathjax_paged_attention_cpu"
_FLAGS = ("-O3", "-std=c++17", "-shared", "-fPIC", "-fno-math-errno")
NATIVE = "native"  # -march: the vector width of the machine that builds (and runs) it

_lock = threading.Lock()
_state: dict[str, str | None] = {}
log = logging.getLogger(__name__)


def cache_dir() -> Path:
    """MATHJAX_KERNEL_CACHE, else $XDG_CACHE_HOME/mathjax_train/kernels, else ~/.cache/mathjax_train/kernels."""
    if os.environ.get("MATHJAX_KERNEL_CACHE"):
        return Path(os.environ["MATHJAX_KERNEL_CACHE"])
    return user_cache_dir("kernels")


def _compiler() -> str | None:
    return os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")


def library_name(compiler: str, march: str = NATIVE) -> str:
    digest = hashlib.sha256()
    parts = (
        SOURCE.read_bytes(),
        " ".join(_FLAGS).encode(),
        march.encode(),
        compiler.encode(),
        cpu_signature().encode(),
    )
    for part in parts:
        digest.update(part)
        digest.update(b"\0")
    digest.update(jax.ffi.include_dir().encode())
    return f"paged_attention_cpu-{digest.hexdigest()[:16]}.so"


def build(out_dir: Path, compiler: str, march: str = NATIVE) -> Path:
    """Compile for `march` into out_dir (atomically: a concurrent build of the same name is harmless)."""
    lib = out_dir / library_name(compiler, march)
    if lib.exists():
        return lib
    fd, tmp = tempfile.mkstemp(dir=out_dir, suffix=".so.tmp")
    os.close(fd)
    try:
        cmd = [compiler, *_FLAGS, f"-march={march}", f"-I{jax.ffi.include_dir()}", str(SOURCE), "-o", tmp]
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if run.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{_first_errors(run.stderr)}")
        os.chmod(tmp, 0o700)
        os.replace(tmp, lib)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return lib


def _first_errors(stderr: str) -> str:
    """The compiler's error lines (its warnings about the FFI headers are noise here)."""
    errors = [ln for ln in stderr.splitlines() if "error" in ln]
    return "\n".join(errors[:10]) or stderr[:2000]


def _usable_dir() -> tuple[Path, str | None]:
    """The cache directory (created private) or, when it is not safe, a fresh private temporary one."""
    wanted = cache_dir()
    problem = make_private_dir(wanted)
    if problem is None:
        return wanted, None
    return Path(tempfile.mkdtemp(prefix="mathjax-kernels-")), problem


def _load() -> str | None:
    try:
        jax.devices("cpu")
    except RuntimeError:  # JAX_PLATFORMS without cpu
        return "no CPU backend"
    compiler = _compiler()
    if compiler is None:
        return "no C++ compiler (set CXX or install g++)"
    out_dir, unsafe = _usable_dir()
    if unsafe:
        log.warning("the CPU attention kernel is built in %s, not in its cache: %s", out_dir, unsafe)
    _state["dir"] = str(out_dir)
    try:
        lib_path = build(out_dir, compiler)
        problem = private_dir_problem(lib_path.parent)
        if problem is None and lib_path.stat().st_uid != os.getuid():
            problem = f"{lib_path} belongs to another user"
        if problem:
            return problem
        register(lib_path, TARGET)
    except (OSError, RuntimeError, subprocess.TimeoutExpired) as e:
        return f"building the CPU kernel failed: {e}"
    return None


def register(lib_path: Path, target: str) -> None:
    """Load a built library and make its handler the custom call `target`."""
    lib = ctypes.CDLL(str(lib_path))
    jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(lib.MathjaxPagedAttentionCpu), platform="cpu")


def available() -> str | None:
    """None when the kernel is built and registered; else why it is not (then use the XLA path)."""
    with _lock:
        if "problem" not in _state:
            _state["problem"] = _load()
        return _state["problem"]


def paged_attention_cpu(
    q, pages_k, pages_v, layer, page_table, start, side_k, side_v, side_pos, sliding_window: int, target: str = TARGET
):
    """The kernel's attention (same contract as attention.paged_masks + paged_attention, float32):
    q (b, t, h, d); pages (layers, kv_heads, num_pages, page_size, d), read at `layer`; the whole
    side buffer (layers, kv_heads, b, side_len, d); returns (b, t, h, d). `target`: another build
    registered with `register` (tests check each instruction set's code)."""
    if target == TARGET:
        problem = available()
        if problem:
            raise RuntimeError(f"the CPU paged-attention kernel is not available: {problem}")
    scalars = jnp.stack([jnp.asarray(layer, jnp.int32), jnp.asarray(side_pos, jnp.int32)])
    call = jax.ffi.ffi_call(target, jax.ShapeDtypeStruct(q.shape, jnp.float32))
    return call(
        q.astype(jnp.float32),
        pages_k,
        pages_v,
        page_table.astype(jnp.int32),
        start.astype(jnp.int32),
        side_k,
        side_v,
        scalars,
        sliding_window=np.int64(sliding_window),
    )
