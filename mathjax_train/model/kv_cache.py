"""The paged KV cache: fixed-size pages shared by every sequence, so one compiled program serves all."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mathjax_train.config import ModelConfig
from mathjax_train.model.layers import dtype_of

TRASH_PAGE = 0  # never handed to a sequence: padding tokens are written here


def page_bytes(cfg: ModelConfig, page_size: int, dtype: str | None = None) -> int:
    """Bytes one page takes over all layers, keys and values."""
    itemsize = jnp.dtype(dtype_of(dtype or cfg.dtype)).itemsize
    return 2 * cfg.num_layers * page_size * cfg.num_kv_heads * cfg.resolved_head_dim * itemsize


def init_pages(cfg: ModelConfig, num_pages: int, page_size: int, dtype: str | None = None) -> dict:
    """Empty pages {"k", "v": (layers, kv_heads, num_pages, page_size, head_dim)}; page 0 is the trash page."""
    shape = (cfg.num_layers, cfg.num_kv_heads, num_pages, page_size, cfg.resolved_head_dim)
    dt = dtype_of(dtype or cfg.dtype)
    return {"k": jnp.zeros(shape, dt), "v": jnp.zeros(shape, dt)}


def init_side(cfg: ModelConfig, batch: int, length: int, dtype: str | None = None) -> dict:
    """A side buffer for `length` new tokens of each of `batch` rows (see PagedKV)."""
    shape = (cfg.num_layers, cfg.num_kv_heads, batch, length, cfg.resolved_head_dim)
    dt = dtype_of(dtype or cfg.dtype)
    return {"k": jnp.zeros(shape, dt), "v": jnp.zeros(shape, dt)}


def flush_side(pages: dict, side: dict, page_table, start, count) -> dict:
    """Move the first count[b] side tokens of each row b into its pages at cache index start[b] + s.

    One in-place dynamic-update-slice per token (all layers and heads at once); the other side
    slots go to the trash page. XLA:CPU lowers a scatter into the cache as a full copy of it."""
    page_size = pages["k"].shape[3]
    layers, heads, b, n, d = side["k"].shape
    slot = jnp.arange(b * n)
    row, s = slot // n, slot % n
    index = start[row] + s
    column = jnp.minimum(index // page_size, page_table.shape[1] - 1)
    page = jnp.where(s < count[row], page_table[row, column], TRASH_PAGE)
    offset = index % page_size

    def write(i, out):
        new = {}
        for name in ("k", "v"):
            slab = jax.lax.dynamic_slice(side[name], (0, 0, row[i], s[i], 0), (layers, heads, 1, 1, d))
            new[name] = jax.lax.dynamic_update_slice(
                out[name], slab.astype(out[name].dtype), (0, 0, page[i], offset[i], 0)
            )
        return new

    return jax.lax.fori_loop(0, b * n, write, pages)
