"""Grouped-query self-attention with packing masks, sliding windows (per layer: model/layer_kinds.py) and an
optional paged KV cache."""

from __future__ import annotations

import functools
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import flax.linen as nn
from jax.sharding import PartitionSpec

from mathjax_train.config import ModelConfig
from mathjax_train.model.attention_kernels import LANES, cudnn_attention, splash_attention
from mathjax_train.model.cpu_kernels import paged_attention_cpu
from mathjax_train.model.ragged_paged import ragged_attention, write_kv
from mathjax_train.model.layer_kinds import layer_inv_freq, scale_queries, with_window
from mathjax_train.model.layers import DenseGeneral, RMSNorm, dtype_of
from mathjax_train.model.rope import apply_rope

# Finite, so a row with no visible key (a padding query) gives a uniform softmax, not NaN.
MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)
MAX_QUERY_BLOCKS = 16  # the blocked kernel's unrolled blocks, at most (see query_block)


class PagedKV(NamedTuple):
    """Where a call's tokens sit in the paged KV cache, and the cache's read-only pages.

    Row b holds its first `start[b]` tokens in pages `page_table[b]` (token i at page
    `page_table[b, i // page_size]`, offset `i % page_size`). The call's t tokens follow at cache
    indices start[b] + side_pos + j; `count[b]` of them are real (the rest padding).

    The "xla" and "cpu" kernels keep pages (layers, kv_heads, num_pages, page_size, head_dim) read-only
    in `pages_k`/`pages_v` and write the call's tokens to a side buffer (layers, kv_heads, batch,
    side_len, head_dim) at `side_pos`, after the side tokens of earlier calls of the same chunk; token s
    of the side buffer has cache index start + s. `flush_side` moves the side buffer into the pages
    once per chunk, because XLA:CPU lowers a scatter into a large buffer inside loops as a copy of the
    whole buffer. The "pallas" kernel writes into its pool in place (model/ragged_paged.py) and leaves
    `pages_k`/`pages_v` None.
    """

    pages_k: jax.Array | None
    pages_v: jax.Array | None
    page_table: jax.Array  # (batch, pages) int32
    start: jax.Array  # (batch,) int32
    side_pos: jax.Array  # scalar int32
    # (batch,) int32: the call's real tokens (the pallas kernel's writes); the name hides tuple.count
    count: jax.Array | None = None  # type: ignore[assignment]


# How attention reads the paged cache: "xla" gathers a row's pages and runs paged_attention;
# "cpu" reads them in place with the C++ kernel of model/cpu_kernels.py (float32, CPU only);
# "pallas" writes to and reads a pool in the layout of JAX's ragged paged attention kernel (TPU).
PagedKernel = Literal["xla", "cpu", "pallas"]


def paged_read(pages, layer, page_table):
    """The pages each row holds, in order: (kv_heads, batch, pages * page_size, head_dim)."""
    own = jax.lax.dynamic_index_in_dim(pages, layer, 0, keepdims=False)[:, page_table]
    h, b, p, s, d = own.shape
    return own.reshape(h, b, p * s, d)


def per_head_shard(fn, split, axes, whole, outs):
    """fn(*split, *whole), on each device for its own heads when the mesh splits heads (engine.tensor > 1):
    `split[i]` is cut on axis `axes[i]` by the `heads` rule (kv-head arrays by `kv_heads`, the same mesh axes),
    `whole` goes to every device as it is, and each output, given as (ndim, head axis) in `outs` (one pair
    for a single output), is joined on its head axis. The paged kernels (the C++ custom call, the Pallas
    kernel) then see one device's heads only. Without a mesh (one device) it is just fn(*split, *whole)."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or mesh.size == 1:
        return fn(*split, *whole)
    heads = nn.logical_to_mesh_axes(("heads",))
    kv_heads = nn.logical_to_mesh_axes(("kv_heads",))
    assert heads is not None and kv_heads is not None  # flax gives None only for names=None
    if heads[0] != kv_heads[0]:
        raise ValueError(f"paged attention under a mesh: heads go to {heads[0]} but kv_heads to {kv_heads[0]}")

    def spec(ndim: int, axis: int | None) -> PartitionSpec:
        return PartitionSpec(*(heads[0] if i == axis else None for i in range(ndim)))

    whole = tuple(jnp.asarray(w) for w in whole)
    in_specs = tuple(spec(x.ndim, a) for x, a in zip(split, axes)) + tuple(PartitionSpec() for _ in whole)
    out_specs = spec(*outs) if isinstance(outs[0], int) else tuple(spec(*o) for o in outs)
    return jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)(*split, *whole)


def paged_masks(kv: PagedKV, t: int, page_keys: int, side_keys: int, sliding_window: int):
    """(batch, t, page_keys) and (batch, t, side_keys) bool: causal by cache index, inside the window."""
    q_index = kv.start[:, None] + kv.side_pos + jnp.arange(t)[None]  # (b, t)
    p_index = jnp.arange(page_keys)[None, None, :]
    s_index = kv.start[:, None, None] + jnp.arange(side_keys)[None, None, :]
    page_mask = p_index < kv.start[:, None, None]
    side_mask = s_index <= q_index[:, :, None]
    if sliding_window:
        page_mask = page_mask & (q_index[:, :, None] - p_index < sliding_window)
        side_mask = side_mask & (q_index[:, :, None] - s_index < sliding_window)
    return page_mask, side_mask


def paged_attention(q, pages, side, masks) -> jax.Array:
    """q (b,t,h,d); pages and side: (k, v) blocks of (kv,b,s_i,d) (a row's pages; this chunk's side
    buffer); masks the matching (b,t,s_i) -> (b,t,h,d). One softmax (float32) over both blocks;
    batch and kv-head lead every operand, so each product is one batched matmul with no transpose
    of the cache. (Measured on CPU: faster than combining the blocks' softmax without the concat,
    and than a multiply-reduce for the small side block.)"""
    b, t, h, d = q.shape
    kvh = pages[0].shape[0]
    g = h // kvh
    qg = q.reshape(b, t, kvh, g, d).transpose(2, 0, 1, 3, 4).reshape(kvh, b, t * g, d)
    blocks = []
    for (k, _), mask in zip((pages, side), masks):
        sc = jax.lax.dot_general(qg, k, (((3,), (3,)), ((0, 1), (0, 1)))).astype(jnp.float32)
        sc = sc.reshape(kvh, b, t, g, -1) / jnp.sqrt(jnp.float32(d))
        blocks.append(jnp.where(mask[None, :, :, None, :], sc, MASK_VALUE))
    probs = jax.nn.softmax(jnp.concatenate(blocks, axis=-1), axis=-1).astype(q.dtype)
    parts, offset = [], 0
    for _, v in (pages, side):
        n = v.shape[2]
        p = probs[..., offset : offset + n].reshape(kvh, b, t * g, n)
        parts.append(jax.lax.dot_general(p, v, (((3,), (2,)), ((0, 1), (0, 1)))))
        offset += n
    out = parts[0] + parts[1]
    return out.reshape(kvh, b, t, g, d).transpose(1, 2, 0, 3, 4).reshape(b, t, h, d)


def attention_mask(q_slots, k_slots, q_pos, k_pos, q_seg, k_seg, sliding_window: int) -> jax.Array:
    """(batch, q, k) bool: causal by slot order, same segment, non-empty key, inside the window."""
    mask = (q_slots[:, None] >= k_slots[None, :])[None]
    mask = mask & (q_seg[:, :, None] == k_seg[:, None, :]) & (k_seg[:, None, :] != 0)
    if sliding_window:
        mask = mask & (q_pos[:, :, None] - k_pos[:, None, :] < sliding_window)
    return mask


def dot_product_attention(q, k, v, mask) -> jax.Array:
    """q (b,t,h,d), k/v (b,s,kv,d), mask (b,t,s) -> (b,t,h,d); softmax in float32."""
    b, t, h, d = q.shape
    kv = k.shape[2]
    q = q.reshape(b, t, kv, h // kv, d)
    scores = jnp.einsum("btkgd,bskd->bkgts", q, k).astype(jnp.float32) / jnp.sqrt(jnp.float32(d))
    scores = jnp.where(mask[:, None, None, :, :], scores, MASK_VALUE)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    out = jnp.einsum("bkgts,bskd->btkgd", probs, v)
    return out.reshape(b, t, h, d)


def key_start(q_start: int, block: int, sliding_window: int) -> int:
    """First key slot a query block starting at `q_start` can see: 0, or with a window the block-aligned
    slot before which every key is at least `sliding_window` slots behind all the block's queries."""
    if not sliding_window:
        return 0
    return max(0, (q_start - sliding_window + 1) // block * block)


def blocked_attention(q, k, v, segment_ids, positions, *, sliding_window: int = 0, block: int) -> jax.Array:
    """`dot_product_attention` with `attention_mask`, one query block at a time over only the keys it can
    see: its causal prefix, cut further by the window. Skipping keys by slot distance assumes positions
    rise by one per slot within a segment (as packing makes them); other segments' keys are masked anyway.
    Each block is rematerialized in the backward pass, so no (t, t) probabilities are kept. A padding
    query (no visible key) averages its block's keys rather than all keys; nothing reads it.
    q (b,t,h,d), k/v (b,t,kv,d), segment_ids/positions (b,t), t a multiple of `block` -> (b,t,h,d)."""
    t = q.shape[1]
    slots = jnp.arange(t)

    @jax.checkpoint
    def one_block(q, k, v, q_slots, k_slots, q_pos, k_pos, q_seg, k_seg):
        mask = attention_mask(q_slots, k_slots, q_pos, k_pos, q_seg, k_seg, sliding_window)
        return dot_product_attention(q, k, v, mask)

    outs = []
    for q0 in range(0, t, block):
        q1, k0 = q0 + block, key_start(q0, block, sliding_window)
        outs.append(
            one_block(
                q[:, q0:q1],
                k[:, k0:q1],
                v[:, k0:q1],
                slots[q0:q1],
                slots[k0:q1],
                positions[:, q0:q1],
                positions[:, k0:q1],
                segment_ids[:, q0:q1],
                segment_ids[:, k0:q1],
            )
        )
    return jnp.concatenate(outs, axis=1)


def query_block(t: int) -> int:
    """Query block of the blocked kernel for length t (a multiple of LANES): LANES, doubled while there
    would be more than MAX_QUERY_BLOCKS blocks (each block is its own unrolled piece of the program)."""
    block = LANES
    while t // block > MAX_QUERY_BLOCKS and t % (2 * block) == 0:
        block *= 2
    return block


def self_attention(cfg: ModelConfig, q, k, v, positions, segment_ids, window: int | None = None) -> jax.Array:
    """The training-path attention that `cfg.attention_kernel` names; sequences shorter than (or not a
    multiple of) one kernel block, e.g. at param init, take the plain dot path. `window`: this layer's
    (default cfg.sliding_window)."""
    t = q.shape[1]
    window = cfg.sliding_window if window is None else window
    if cfg.attention_kernel == "splash" and t >= LANES:
        return splash_attention(q, k, v, segment_ids, sliding_window=window)
    if cfg.attention_kernel == "blocked" and t > LANES and t % LANES == 0:
        return blocked_attention(q, k, v, segment_ids, positions, sliding_window=window, block=query_block(t))
    slots = jnp.arange(t)
    mask = attention_mask(slots, slots, positions, positions, segment_ids, segment_ids, window)
    if cfg.attention_kernel == "cudnn":
        return cudnn_attention(q, k, v, mask, sliding_window=window)
    return dot_product_attention(q, k, v, mask)


class Attention(nn.Module):
    config: ModelConfig
    lora: Any = None  # LoraConfig or None (model/lora.py)
    paged_kernel: PagedKernel = "xla"

    @nn.compact
    def __call__(self, x, positions, segment_ids, cache=None, kv: PagedKV | None = None, layer=0):
        """`cache` (optional), with `kv` (PagedKV): what this layer writes its new tokens into before
        attending over the row's earlier tokens and them: the stacked side buffer (k, v), each (layers,
        kv_heads, batch, side_len, head_dim), or for the pallas kernel the one-element tuple (pool,).
        Returns (output, updated cache or None)."""
        cfg = self.config
        dt, pdt = dtype_of(cfg.dtype), dtype_of(cfg.param_dtype)
        hd = cfg.resolved_head_dim
        proj = lambda n, heads, axis, bias: DenseGeneral(  # noqa: E731
            (heads, hd), ("embed", axis, "head_dim"), use_bias=bias, dtype=dt, param_dtype=pdt, lora=self.lora, name=n
        )
        q = proj("q_proj", cfg.num_heads, "heads", cfg.qkv_bias)(x)
        k = proj("k_proj", cfg.num_kv_heads, "kv_heads", cfg.qkv_bias)(x)
        v = proj("v_proj", cfg.num_kv_heads, "kv_heads", cfg.qkv_bias)(x)
        if cfg.qk_norm:  # Qwen3, Gemma 3: each head's query and key normed over head_dim, before RoPE (every path)
            norm = lambda n: RMSNorm(  # noqa: E731
                cfg.rms_norm_eps, dtype=dt, param_dtype=pdt, axis="head_dim", plus_one=cfg.norm_plus_one, name=n
            )
            q, k = norm("q_norm")(q), norm("k_norm")(k)
        inv_freq = layer_inv_freq(cfg, layer)
        q = scale_queries(cfg, apply_rope(q, positions, inv_freq))
        k = apply_rope(k, positions, inv_freq)
        q = nn.with_logical_constraint(q, ("batch", "length", "heads", "head_dim"))

        t = x.shape[1]
        new_cache = None
        if cache is not None:
            if kv is None:
                raise ValueError("a side-buffer `cache` needs its PagedKV `kv`")
            if self.paged_kernel == "pallas":
                out, new_cache = self._pallas_paged(q, k, v, kv, cache, layer)
                return self._out_proj(out), new_cache
            sk, sv = cache
            start = (layer, 0, 0, kv.side_pos, 0)
            sk = jax.lax.dynamic_update_slice(sk, k.astype(sk.dtype).transpose(2, 0, 1, 3)[None], start)
            sv = jax.lax.dynamic_update_slice(sv, v.astype(sv.dtype).transpose(2, 0, 1, 3)[None], start)
            new_cache = (sk, sv)
            if self.paged_kernel == "cpu":

                def cpu(window, q, pk, pv, sk, sv, layer, table, start, pos):
                    return paged_attention_cpu(q, pk, pv, layer, table, start, sk, sv, pos, window)

                out = with_window(
                    cfg,
                    layer,
                    lambda w: per_head_shard(
                        functools.partial(cpu, w),
                        (q, kv.pages_k, kv.pages_v, sk, sv),
                        (2, 1, 1, 1, 1),
                        (layer, kv.page_table, kv.start, kv.side_pos),
                        (4, 2),
                    ),
                ).astype(dt)
            else:
                out = self._xla_paged(q, kv, sk, sv, layer, t)
        else:
            k, v = k.astype(dt), v.astype(dt)
            out = with_window(cfg, layer, lambda w: self_attention(cfg, q, k, v, positions, segment_ids, w))
        return self._out_proj(out), new_cache

    def _out_proj(self, out):
        cfg = self.config
        return DenseGeneral(
            (cfg.hidden_size,),
            ("heads", "head_dim", "embed"),
            in_dims=2,
            use_bias=cfg.o_bias,
            dtype=dtype_of(cfg.dtype),
            param_dtype=dtype_of(cfg.param_dtype),
            lora=self.lora,
            name="o_proj",
        )(out)

    def _pallas_paged(self, q, k, v, kv: PagedKV, cache, layer):
        """Write this call's keys/values into the pool, then attend with the ragged kernel."""
        if kv.count is None:
            raise ValueError("the pallas kernel needs PagedKV.count")
        (pool,) = cache
        cfg = self.config

        def write_and_attend(q, k, v, pool, layer, table, at, count):
            pool = write_kv(pool, layer, k, v, table, at, count)
            attend = lambda w: ragged_attention(q, pool, layer, table, at + count, count, sliding_window=w)  # noqa: E731
            return with_window(cfg, layer, attend), pool

        out, pool = per_head_shard(
            write_and_attend,
            (q, k, v, pool),
            (2, 2, 2, 3),
            (layer, kv.page_table, kv.start + kv.side_pos, kv.count),
            ((4, 2), (5, 3)),
        )
        return out.astype(dtype_of(self.config.dtype)), (pool,)

    def _xla_paged(self, q, kv: PagedKV, sk, sv, layer, t: int):
        """Attention over the row's gathered pages and the side buffer, in XLA."""
        dt = dtype_of(self.config.dtype)
        pages = (
            paged_read(kv.pages_k, layer, kv.page_table).astype(dt),
            paged_read(kv.pages_v, layer, kv.page_table).astype(dt),
        )
        side = (
            jax.lax.dynamic_index_in_dim(sk, layer, 0, False).astype(dt),
            jax.lax.dynamic_index_in_dim(sv, layer, 0, False).astype(dt),
        )
        n_page, n_side = pages[0].shape[2], side[0].shape[2]
        attend = lambda w: paged_attention(q, pages, side, paged_masks(kv, t, n_page, n_side, w))  # noqa: E731
        return with_window(self.config, layer, attend)
