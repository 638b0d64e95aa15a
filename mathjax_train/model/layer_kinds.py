"""What differs between a decoder's layers (Gemma 3's local sliding-window and global layers): each layer's
window and RoPE frequencies, picked by the layer index even when nn.scan traces it, and the attention scale."""

from __future__ import annotations

import functools
import math
from typing import Callable, TypeVar

import jax
import jax.numpy as jnp
import numpy as np

from mathjax_train.config import ModelConfig, RopeScaling
from mathjax_train.model.rope import inverse_frequencies

T = TypeVar("T")


def _static(layer) -> int | None:
    """The layer index as a Python int when it is one (unrolled layers), else None (a traced scan index)."""
    return int(layer) if isinstance(layer, (int, np.integer)) else None


def with_window(cfg: ModelConfig, layer, fn: Callable[[int], T]) -> T:
    """fn(window) with `layer`'s sliding window (0 = full attention). The kernels need the window static: with
    one window for all layers, or a Python int layer, fn runs once; a traced index (nn.scan) picks among the
    distinct windows with lax.switch, so each branch keeps its static window and only one runs."""
    windows = cfg.layer_windows()
    distinct = sorted(set(windows))
    if len(distinct) == 1:
        return fn(distinct[0])
    index = _static(layer)
    if index is not None:
        return fn(windows[index])
    kind = jnp.asarray([distinct.index(w) for w in windows], jnp.int32)[layer]
    return jax.lax.switch(kind, [functools.partial(fn, w) for w in distinct])


def layer_inv_freq(cfg: ModelConfig, layer):
    """`layer`'s RoPE inverse frequencies: sliding-window layers use the unscaled `rope_local_theta` when it is
    set (Gemma 3), every other layer `rope_theta` with `rope_scaling`. A table indexed by a traced layer."""
    hd = cfg.resolved_head_dim
    full = inverse_frequencies(hd, cfg.rope_theta, cfg.rope_scaling)
    windows = cfg.layer_windows()
    if not cfg.rope_local_theta or not any(windows):
        return full
    local = inverse_frequencies(hd, cfg.rope_local_theta, RopeScaling())
    table = np.stack([local if w else full for w in windows])
    index = _static(layer)
    if index is not None:
        return table[index]
    return jnp.asarray(table)[layer]


def scale_queries(cfg: ModelConfig, q: jax.Array) -> jax.Array:
    """q times sqrt(head_dim / query_pre_attn_scalar), so the kernels' 1/sqrt(head_dim) scales the scores by
    query_pre_attn_scalar**-0.5 (Gemma); unchanged when the scalar is unset or equals head_dim."""
    s, d = cfg.query_pre_attn_scalar, cfg.resolved_head_dim
    if not s or s == d:
        return q
    return (q.astype(jnp.float32) * math.sqrt(d / s)).astype(q.dtype)
