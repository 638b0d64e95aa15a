"""Preallocated KV cache: fixed shapes so one compiled decode loop serves every prompt."""
from __future__ import annotations

import jax.numpy as jnp

from mathjax_train.config import ModelConfig
from mathjax_train.model.layers import dtype_of


def init_cache(cfg: ModelConfig, batch: int, length: int, dtype: str | None = None) -> dict:
    """Empty cache for `batch` rows of `length` slots (segment 0 marks an empty slot)."""
    shape = (cfg.num_layers, batch, length, cfg.num_kv_heads, cfg.resolved_head_dim)
    dt = dtype_of(dtype or cfg.dtype)
    return {
        "k": jnp.zeros(shape, dt),
        "v": jnp.zeros(shape, dt),
        "positions": jnp.zeros((batch, length), jnp.int32),
        "segment_ids": jnp.zeros((batch, length), jnp.int32),
    }
