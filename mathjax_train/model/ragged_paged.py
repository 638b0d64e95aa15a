"""Decode and prefill attention over a paged KV cache through JAX's ragged paged attention kernel (Pallas, TPU).

The cache is kept in the kernel's own layout, so a call copies and transposes nothing: one array
(layers, num_pages, page_size, 2 * kv_heads, head_dim), keys at even and values at odd combined heads.
The kernel reads one layer's pages; it is handed the whole pool viewed as (layers * num_pages, ...) (a free
reshape) with the page indices offset by `layer * num_pages`, so no layer is sliced out and `layer` may be
traced (a scan over layers). Token i of row b lives at page `page_table[b, i // page_size]`, offset
`i % page_size`, as in the plain path (attention.PagedKV); page 0 is the trash page.

For a TPU target (model/target.py: the devices the program is compiled for, which `plan --compile` sets to a slice
on a CPU host) the kernel is compiled with Mosaic, with block sizes from JAX's tuned table for that chip; elsewhere
it runs in Pallas TPU interpret mode (slow; for tests on CPU).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.pallas import tpu as pltpu
from jax.experimental.pallas.ops.tpu.ragged_paged_attention import kernel as rpa
from jax.experimental.pallas.ops.tpu.ragged_paged_attention import tuned_block_sizes as tuned

from mathjax_train.config import ModelConfig
from mathjax_train.model import target as compile_target
from mathjax_train.model.kv_cache import TRASH_PAGE
from mathjax_train.model.layers import dtype_of

LANES = 128  # the kernel's head_dim must be a multiple of this (see `supported`)
CACHE_DTYPES = ("bfloat16", "float32")  # the kernel's bf16 and 32-bit paths; fp8/int8 caches would need k/v scales
# Block sizes where JAX's tuned table (TPU v4+ only) cannot be asked: small, so tests cross several blocks.
INTERPRET_KV_PAGES_PER_BLOCK = 2
INTERPRET_QUERIES_PER_BLOCK = 8


def ragged_head_dim(cfg: ModelConfig, pad_head_dim: bool = False) -> int:
    """The cache's head_dim: the model's, or rounded up to a multiple of LANES (zero-padded) with `pad_head_dim`."""
    d = cfg.resolved_head_dim
    return -(-d // LANES) * LANES if pad_head_dim else d


def ragged_page_bytes(cfg: ModelConfig, page_size: int, dtype: str | None = None, *, pad_head_dim: bool = False) -> int:
    """Bytes one page takes over all layers, keys and values (`kv_cache.page_bytes`, plus any head_dim padding)."""
    itemsize = jnp.dtype(dtype_of(dtype or cfg.dtype)).itemsize
    return 2 * cfg.num_layers * page_size * cfg.num_kv_heads * ragged_head_dim(cfg, pad_head_dim) * itemsize


def init_ragged_pages(
    cfg: ModelConfig, num_pages: int, page_size: int, dtype: str | None = None, *, pad_head_dim: bool = False
) -> jax.Array:
    """Empty pages (layers, num_pages, page_size, 2 * kv_heads, head_dim), K/V interleaved; page 0 is the trash page."""
    shape = (cfg.num_layers, num_pages, page_size, 2 * cfg.num_kv_heads, ragged_head_dim(cfg, pad_head_dim))
    return jnp.zeros(shape, dtype_of(dtype or cfg.dtype))


def supported(
    cfg: ModelConfig,
    page_size: int,
    dtype: str | None = None,
    *,
    pad_head_dim: bool = False,
    target: compile_target.Target | None = None,
) -> str | None:
    """Why the kernel cannot serve this model with this cache on `target` (default: the current one; None if it
    can), for the caller to fall back to the plain path: its head tiling rule (asked of the kernel itself),
    head_dim in whole lanes, a bf16/f32 cache, a TPU of v4 or later."""
    name = dtype or cfg.dtype
    if name not in CACHE_DTYPES:
        return f"cache dtype {name}: the ragged kernel path serves {' and '.join(CACHE_DTYPES)} caches only"
    if page_size < 1:
        return f"page_size must be positive, got {page_size}"
    if cfg.num_heads % cfg.num_kv_heads:
        return f"num_heads {cfg.num_heads} is not a multiple of num_kv_heads {cfg.num_kv_heads}"
    head_dim = ragged_head_dim(cfg, pad_head_dim)
    if head_dim % LANES:
        return (
            f"head_dim {head_dim} is not a multiple of {LANES}: the kernel broadcasts its (rows, {LANES}) softmax "
            f"statistics over head_dim (pad_head_dim=True pads the cache to {ragged_head_dim(cfg, True)}, "
            "at that memory cost)"
        )
    dt = dtype_of(name)
    try:
        rpa.get_min_heads_per_blk(cfg.num_heads, 2 * cfg.num_kv_heads, dt, dt)
    except ValueError as e:  # "Not implemented: num_combined_kv_heads=6 can not be XLA fully tiled."
        return f"{cfg.num_kv_heads} kv heads in a {name} cache: {e}"
    target = target or compile_target.current()
    if target.platform == "tpu" and target.tpu_version < 4:
        return f"the ragged paged attention kernel needs TPU v4 or later, not {target.device_kind}"
    return None


def tuned_blocks(
    target: compile_target.Target,
    q_dtype,
    kv_dtype,
    heads: int,
    combined_kv_heads: int,
    head_dim: int,
    page_size: int,
    num_tokens: int,
    pages_per_seq: int,
) -> tuple[int, int]:
    """(kv pages, queries) per block from JAX's tuned table for the target chip. The kernel's own lookup asks the
    host's first device, which is a CPU when a slice's programs are compiled ahead of time."""
    heads_blk, combined_blk = rpa.get_min_heads_per_blk(heads, combined_kv_heads, q_dtype, kv_dtype)
    key = tuned.simplify_key(
        (q_dtype, kv_dtype, heads_blk, combined_blk // 2, head_dim, page_size, num_tokens, pages_per_seq)
    )
    chip = " ".join(target.device_kind.split()[:2])  # the table's key: "TPU v5 lite" and "TPU v5" share "TPU v5"
    if target.tpu_version == 4:
        kv_pages, queries = 32, 32  # JAX's untuned v4 default, chosen to fit v4's VMEM
    else:
        kv_pages, queries = tuned.TUNED_BLOCK_SIZES.get(chip, {}).get(key, (128, 32))
    return min(pages_per_seq, kv_pages), min(num_tokens, queries)


def write_kv(
    pages: jax.Array,
    layer: jax.Array | int,
    k: jax.Array,
    v: jax.Array,
    page_table: jax.Array,
    start: jax.Array,
    count: jax.Array,
) -> jax.Array:
    """The pool with keys/values k, v (batch, t, kv_heads, head_dim) of `layer` written at cache indices
    start[b] + j of row b for j < count[b]; tokens j >= count[b] go to the trash page. One scatter, in place
    where XLA may reuse the pool's buffer (a donated argument or a loop carry)."""
    page_size, head_dim = pages.shape[2], pages.shape[4]
    b, t, kv_heads, d = k.shape
    j = jnp.arange(t, dtype=jnp.int32)[None]
    index = jnp.asarray(start, jnp.int32)[:, None] + j
    column = jnp.clip(index // page_size, 0, page_table.shape[1] - 1)
    page = jnp.take_along_axis(jnp.asarray(page_table, jnp.int32), column, axis=1)
    page = jnp.where(j < jnp.asarray(count)[:, None], page, TRASH_PAGE)
    kv = jnp.stack([k, v], axis=3).reshape(b, t, 2 * kv_heads, d).astype(pages.dtype)
    if head_dim > d:
        kv = jnp.pad(kv, ((0, 0), (0, 0), (0, 0), (0, head_dim - d)))
    layers = jnp.full(page.shape, layer, jnp.int32)
    return pages.at[layers, page, index % page_size].set(kv, mode="promise_in_bounds")


def ragged_attention(
    q: jax.Array,
    pages: jax.Array,
    layer: jax.Array | int,
    page_table: jax.Array,
    kv_lens: jax.Array,
    q_lens: jax.Array,
    *,
    sliding_window: int = 0,
    interpret: bool | None = None,
    kv_pages_per_block: int | None = None,
    queries_per_block: int | None = None,
) -> jax.Array:
    """Causal attention of q (batch, t, heads, head_dim) over each row's first kv_lens[b] cached tokens of `layer`.

    Row b's first q_lens[b] queries are real; query j sits at cache index kv_lens[b] - q_lens[b] + j (its keys
    were written by `write_kv` already) and sees keys i <= that index within `sliding_window` (0 = all).
    Padding queries come back as zeros; rows with q_lens[b] == 0 are not handed to the kernel at all.
    interpret=None: compiled for a TPU target, interpreted elsewhere. Block sizes: JAX's tuned table for the
    target chip unless given.
    """
    b, t, h, d = q.shape
    layers, num_pages, page_size, combined, head_dim = pages.shape
    target = compile_target.current()
    if interpret is None:
        interpret = target.interpret_pallas
    if interpret:
        kv_pages_per_block = kv_pages_per_block or min(INTERPRET_KV_PAGES_PER_BLOCK, page_table.shape[1])
        queries_per_block = queries_per_block or min(INTERPRET_QUERIES_PER_BLOCK, b * t)
    elif kv_pages_per_block is None or queries_per_block is None:
        tuned_kv, tuned_q = tuned_blocks(
            target, pages.dtype, pages.dtype, h, combined, head_dim, page_size, b * t, page_table.shape[1]
        )
        kv_pages_per_block, queries_per_block = kv_pages_per_block or tuned_kv, queries_per_block or tuned_q
    page_table, kv_lens = jnp.asarray(page_table, jnp.int32), jnp.asarray(kv_lens, jnp.int32)
    q_lens = jnp.clip(jnp.asarray(q_lens, jnp.int32), 0, t)

    # The kernel walks sequences 0 .. num_seqs-1, prefetching each one's first pages while it finishes the one
    # before. A sequence with no keys (an empty slot) leaves that prefetch unconsumed, so the next one reads its
    # pages; trailing sequences with no queries after a query block's end are never visited, which derails the
    # next head block. So only rows with queries are sequences, moved to the front in order.
    order = jnp.argsort(q_lens == 0, stable=True).astype(jnp.int32)
    num_seqs = jnp.sum(q_lens > 0, dtype=jnp.int32)
    cu_q_lens = jnp.concatenate([jnp.zeros(1, jnp.int32), jnp.cumsum(q_lens[order], dtype=jnp.int32)])

    # Flat query p belongs to sequence s with cu_q_lens[s] <= p < cu_q_lens[s + 1]; flat slots past the last
    # sequence take some real query (finite) that the kernel never writes back.
    flat = jnp.arange(b * t, dtype=jnp.int32)
    seq = jnp.minimum(jnp.searchsorted(cu_q_lens[1:], flat, side="right"), b - 1)
    source = order[seq] * t + jnp.clip(flat - cu_q_lens[seq], 0, t - 1)
    q_flat = q.reshape(b * t, h, d)[source].astype(pages.dtype)
    if head_dim > d:
        q_flat = jnp.pad(q_flat, ((0, 0), (0, 0), (0, head_dim - d)))

    page_indices = page_table[order] + jnp.asarray(layer, jnp.int32) * num_pages
    args = (
        q_flat,
        pages.reshape(layers * num_pages, page_size, combined, head_dim),
        kv_lens[order],
        page_indices,
        cu_q_lens,
        num_seqs[None],
    )
    kernel = functools.partial(
        rpa.ragged_paged_attention,
        sm_scale=1.0 / math.sqrt(d),
        sliding_window=sliding_window or None,
        num_kv_pages_per_block=kv_pages_per_block,
        num_queries_per_block=queries_per_block,
    )

    def attend(args: tuple[jax.Array, ...]) -> jax.Array:
        if not interpret:
            return kernel(*args)
        _fix_tpu_interpreter()
        with pltpu.force_tpu_interpret_mode():
            return kernel(*args)

    # With no sequence the kernel would still start fetching the first one's pages, and never wait for them.
    out_flat = jax.lax.cond(num_seqs > 0, attend, lambda args: jnp.zeros_like(args[0]), args)

    # Back to (batch, t): query j of row b is flat query cu_q_lens[rank of b] + j.
    rank = jnp.argsort(order)
    j = jnp.arange(t, dtype=jnp.int32)[None]
    out = out_flat[jnp.minimum(cu_q_lens[rank][:, None] + j, b * t - 1)][..., :d].astype(q.dtype)
    return jnp.where((j < q_lens[:, None])[:, :, None, None], out, 0)


@functools.cache
def _fix_tpu_interpreter() -> None:
    """Fill two gaps of JAX 0.10.2's TPU interpreter that this kernel runs into (compiled TPU runs never come here).

    1. It reads a ref only through plain index ranges; the kernel reads its K/V buffer through a reshape (and in
       bf16 a bitcast). Reads now take the plain range before the first other transform, then apply the rest.
    2. Its masked store refuses an in-bounds store into a slice narrower on a later axis than the first (its
       bounds mask cuts the first axis once per axis). An in-bounds masked store is now read, merge, store.
    Both only change calls that raised before."""
    from jax._src.pallas.mosaic.interpret import interpret_pallas_call as interp
    from jax._src.pallas.mosaic.interpret import utils as interp_utils
    from jax._src.state import indexing
    from jax._src.state.types import BitcastTransform, ReshapeTransform

    plain_get, plain_swap = getattr(interp.get, "__wrapped__", None), getattr(interp.swap, "__wrapped__", None)
    if plain_get is None or plain_swap is None:  # not the interpreter these fixes were written for
        return

    def get(token: Any, device: Any, core: Any, space: Any, buffer: Any, transforms: Any, *args: Any, **kw: Any):
        transforms = tuple(transforms or ())
        cut = next((i for i, x in enumerate(transforms) if not isinstance(x, indexing.NDIndexer)), len(transforms))
        token, value = plain_get(token, device, core, space, buffer, transforms[:cut], *args, **kw)
        for x in transforms[cut:]:
            if isinstance(x, ReshapeTransform):
                value = value.reshape(x.shape)
            elif isinstance(x, BitcastTransform):
                value = _bitcast_rows(value, np.dtype(x.dtype))
            elif isinstance(x, indexing.NDIndexer):
                value = value[interp_utils.to_range([jax.tree.map(int, x)])]
            else:
                raise NotImplementedError(f"TPU interpreter: read through {type(x).__name__}")
        return token, value

    def swap(token: Any, device: Any, core: Any, space: Any, buffer: Any, transforms: Any, val: Any, mask: Any, **kw):
        if mask is None:
            return plain_swap(token, device, core, space, buffer, transforms, val, mask, **kw)
        mask, val = np.asarray(mask), np.asarray(val)
        try:
            token, old = get(token, device, core, space, buffer, transforms, **kw)
        except IndexError:  # partly out of bounds: JAX's own rule
            return plain_swap(token, device, core, space, buffer, transforms, val, mask, **kw)
        token, _ = plain_swap(token, device, core, space, buffer, transforms, np.where(mask, val, old), None, **kw)
        return token, np.where(mask, old, val)

    setattr(interp, "get", interp.fail_on_exception(get))
    setattr(interp, "swap", interp.fail_on_exception(swap))


def _bitcast_rows(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """A TPU bitcast to a wider type: `ratio` consecutive rows (second-minor axis) pack into one, the first lowest."""
    ratio = dtype.itemsize // x.dtype.itemsize
    if ratio == 1:
        return x.view(dtype)
    *lead, rows, lanes = x.shape
    packed = np.ascontiguousarray(x.reshape(*lead, rows // ratio, ratio, lanes).swapaxes(-1, -2))
    return packed.view(dtype)[..., 0]
