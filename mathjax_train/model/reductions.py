"""Reductions over the vocabulary that XLA:CPU runs slowly in their plain form."""

from __future__ import annotations

import jax
import jax.numpy as jnp

BLOCK = 128


def argmax_last(x: jax.Array) -> jax.Array:
    """jnp.argmax(x, axis=-1) (int32, the lowest index among ties), in two stages: the block of 128
    holding the maximum, then the position in it. Same result; on CPU a (2048, 32000) argmax took
    143 ms as one variadic reduce and 9 ms this way (the loss's accuracy metric, greedy decoding).
    A row holding NaN may give another index (its loss is not finite, its token meaningless anyway)."""
    v = x.shape[-1]
    if v < 2 * BLOCK or not jnp.issubdtype(x.dtype, jnp.floating):
        return jnp.argmax(x, axis=-1).astype(jnp.int32)
    n = -(-v // BLOCK)
    if n * BLOCK != v:
        x = jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, n * BLOCK - v)], constant_values=-jnp.inf)
    blocks = x.reshape(*x.shape[:-1], n, BLOCK)
    best = jnp.argmax(jnp.max(blocks, axis=-1), axis=-1).astype(jnp.int32)
    inner = jnp.take_along_axis(blocks, best[..., None, None], axis=-2)[..., 0, :]
    return best * BLOCK + jnp.argmax(inner, axis=-1).astype(jnp.int32)
