"""Which paged-attention kernel an engine runs (engine.attention) and its KV cache in that kernel's layout:
the "xla" and "cpu" kernels share pages {"k", "v"} (model/kv_cache.py), "pallas" keeps one pool in the
ragged kernel's layout (model/ragged_paged.py). `plan --sampling` asks the same questions for a TPU.
The choice is resolved once into a KernelSpec, which answers what the engine, its programs and its cache
need to know of the kernel; only the model's attention (model/attention.py) switches on the name."""

from __future__ import annotations

import dataclasses
import logging
import threading

import jax

from mathjax_train.config import InputError, ModelConfig
from mathjax_train.infer.placement import Placement
from mathjax_train.model import cpu_kernels, init_pages, page_bytes, ragged_paged
from mathjax_train.model.attention import PagedKernel
from mathjax_train.model.target import Target, current

log = logging.getLogger(__name__)
_warned_xla = threading.Event()


@dataclasses.dataclass(frozen=True)
class KernelSpec:
    """A resolved paged-attention kernel: its name (what model/attention.py runs, what reports show) and
    what follows from it for the engine."""

    name: PagedKernel
    ragged_pool: bool  # the cache is one pool in the ragged kernel's layout, written in place (no side buffer)
    fixed_width: bool  # reads only a row's own pages: one page-table width serves every call (no buckets)

    @classmethod
    def of(cls, name: PagedKernel) -> "KernelSpec":
        if name not in ("xla", "cpu", "pallas"):
            raise ValueError(f"unknown paged-attention kernel {name!r}")
        return cls(name, ragged_pool=name == "pallas", fixed_width=name == "cpu")


XLA = KernelSpec.of("xla")  # plain-JAX paged attention: runs anywhere


def kernel_spec(
    choice: str, cfg: ModelConfig, page_size: int, tensor: int = 1, target: Target | None = None
) -> KernelSpec:
    """engine.attention resolved (paged_kernel) into its KernelSpec."""
    return KernelSpec.of(paged_kernel(choice, cfg, page_size, tensor, target))


def paged_kernel(
    choice: str, cfg: ModelConfig, page_size: int, tensor: int = 1, target: Target | None = None
) -> PagedKernel:
    """engine.attention resolved. auto: the CPU kernel for float32 on CPU when it builds, the Pallas
    ragged kernel on TPU when it serves the model, else XLA. Asked for by name, a kernel that cannot
    run is an error (pallas runs off TPU in interpret mode: for tests). With engine.tensor > 1 each
    device runs the kernel on its share of the heads (attention.per_head_shard), so the Pallas kernel
    is asked about that share. `target` (default: model/target.py's current one) lets `plan` resolve it for a
    TPU slice from any host."""
    if choice == "xla":
        return "xla"
    target = target or current()
    backend = target.platform
    if choice == "pallas" or (choice == "auto" and backend == "tpu"):
        share = dataclasses.replace(cfg, num_heads=cfg.num_heads // tensor, num_kv_heads=cfg.num_kv_heads // tensor)
        problem = ragged_paged.supported(share, page_size, pad_head_dim=True, target=target)
        if problem is None:
            return "pallas"
        if choice == "pallas":
            raise InputError(f"engine.attention=pallas: {problem}")
        return _fall_back(problem)
    if backend != "cpu":
        problem = f"the backend is {backend}, not cpu"
    elif cfg.dtype != "float32":
        problem = f"the compute dtype is {cfg.dtype}; the CPU kernel is float32 only"
    else:
        problem = cpu_kernels.available()
    if problem is None:
        return "cpu"
    if choice == "cpu":
        raise InputError(f"engine.attention=cpu: {problem}")
    return _fall_back(problem) if backend == "cpu" and cfg.dtype == "float32" else "xla"


def _fall_back(problem: str) -> PagedKernel:
    """auto's slow path where a kernel was meant to serve: said once a process (the reason included)."""
    if not _warned_xla.is_set():
        _warned_xla.set()
        log.warning("engine.attention=auto: plain-JAX paged attention, since %s", problem)
    return "xla"


def cache_arrays(kernel: KernelSpec, cfg: ModelConfig, num_pages: int, page_size: int) -> dict:
    """The empty cache in the kernel's layout (page 0 is the trash page)."""
    if kernel.ragged_pool:
        return {"pool": ragged_paged.init_ragged_pages(cfg, num_pages, page_size, pad_head_dim=True)}
    return init_pages(cfg, num_pages, page_size)


def cache_page_bytes(kernel: KernelSpec, cfg: ModelConfig, page_size: int) -> int:
    if kernel.ragged_pool:
        return ragged_paged.ragged_page_bytes(cfg, page_size, pad_head_dim=True)
    return page_bytes(cfg, page_size)


def empty_cache(kernel: KernelSpec, cfg: ModelConfig, num_pages: int, page_size: int, placement: Placement) -> dict:
    """The empty cache made where it lives (split by kv heads over the engine's devices), never whole on one
    device first; committed like the donated outputs, so the first and later calls share one compilation."""
    shapes = jax.eval_shape(lambda: cache_arrays(kernel, cfg, num_pages, page_size))
    make = jax.jit(
        lambda: cache_arrays(kernel, cfg, num_pages, page_size), out_shardings=placement.cache_shardings(shapes)
    )
    return make()
