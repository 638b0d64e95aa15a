"""Grouped-query self-attention with packing masks, sliding windows and an optional KV cache."""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import flax.linen as nn

from mathjax_train.config import ModelConfig
from mathjax_train.model.attention_kernels import LANES, cudnn_attention, splash_attention
from mathjax_train.model.layers import DenseGeneral, dtype_of
from mathjax_train.model.rope import apply_rope, inverse_frequencies

# Finite, so a row with no visible key (a padding query) gives a uniform softmax, not NaN.
MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)


class KVContext(NamedTuple):
    """What a layer needs to read and write the cache: slot index and per-slot metadata."""

    index: jax.Array  # scalar int32: first cache slot written by this call
    positions: jax.Array  # (batch, cache_len) position of the token in each slot
    segment_ids: jax.Array  # (batch, cache_len) segment of each slot; 0 = empty


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


class Attention(nn.Module):
    config: ModelConfig

    @nn.compact
    def __call__(self, x, positions, segment_ids, cache=None, kv: KVContext | None = None, layer=0):
        """`cache` (optional) is the whole stacked (k, v), each (layers, batch, slots, kv_heads, head_dim):
        this layer writes only its new slots in place and reads its own slice, so a decode step never
        copies the cache. Returns (output, updated cache or None)."""
        cfg = self.config
        dt, pdt = dtype_of(cfg.dtype), dtype_of(cfg.param_dtype)
        hd = cfg.resolved_head_dim
        proj = lambda n, heads, axis, bias: DenseGeneral(  # noqa: E731
            (heads, hd), ("embed", axis, "head_dim"), use_bias=bias, dtype=dt, param_dtype=pdt, name=n)
        q = proj("q_proj", cfg.num_heads, "heads", cfg.qkv_bias)(x)
        k = proj("k_proj", cfg.num_kv_heads, "kv_heads", cfg.qkv_bias)(x)
        v = proj("v_proj", cfg.num_kv_heads, "kv_heads", cfg.qkv_bias)(x)
        inv_freq = inverse_frequencies(hd, cfg.rope_theta, cfg.rope_scaling)
        q = apply_rope(q, positions, inv_freq)
        k = apply_rope(k, positions, inv_freq)
        q = nn.with_logical_constraint(q, ("batch", "length", "heads", "head_dim"))

        t = x.shape[1]
        new_cache = None
        if cache is None:
            slots = jnp.arange(t)
            mask = attention_mask(slots, slots, positions, positions, segment_ids, segment_ids, cfg.sliding_window)
        else:
            ck, cv = cache
            start = (layer, 0, kv.index, 0, 0)
            ck = jax.lax.dynamic_update_slice(ck, k.astype(ck.dtype)[None], start)
            cv = jax.lax.dynamic_update_slice(cv, v.astype(cv.dtype)[None], start)
            new_cache = (ck, cv)
            k = jax.lax.dynamic_index_in_dim(ck, layer, 0, keepdims=False)
            v = jax.lax.dynamic_index_in_dim(cv, layer, 0, keepdims=False)
            mask = attention_mask(kv.index + jnp.arange(t), jnp.arange(k.shape[1]), positions, kv.positions,
                                  segment_ids, kv.segment_ids, cfg.sliding_window)
        if cfg.attention_kernel == "splash" and cache is None and t >= LANES:
            out = splash_attention(q, k.astype(dt), v.astype(dt), segment_ids, sliding_window=cfg.sliding_window)
        elif cfg.attention_kernel == "cudnn" and cache is None:
            out = cudnn_attention(q, k.astype(dt), v.astype(dt), mask, sliding_window=cfg.sliding_window)
        else:  # "dot"; calls with a KV cache (decoding); sequences under one kernel block (e.g. param init)
            out = dot_product_attention(q, k.astype(dt), v.astype(dt), mask)
        out = DenseGeneral((cfg.hidden_size,), ("heads", "head_dim", "embed"), in_dims=2, use_bias=cfg.o_bias,
                           dtype=dt, param_dtype=pdt, name="o_proj")(out)
        return out, new_cache
