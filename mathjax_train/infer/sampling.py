"""Token sampling from logits: greedy, temperature, top-k and top-p, one PRNG key per row."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def filter_top_k(logits: jax.Array, k: int) -> jax.Array:
    """Keep the k largest logits per row (k is static; 0 keeps all)."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = jax.lax.top_k(logits, k)[0][..., -1:]
    return jnp.where(logits < kth, -jnp.inf, logits)


def filter_top_p(logits: jax.Array, top_p: jax.Array) -> jax.Array:
    """Keep the smallest set of tokens whose probability reaches top_p (always at least one)."""
    order = jnp.argsort(-logits, axis=-1)
    sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    before = jnp.cumsum(probs, axis=-1) - probs  # mass strictly before each token
    keep_sorted = before < top_p
    keep = jnp.zeros_like(keep_sorted).at[jnp.arange(logits.shape[0])[:, None], order].set(keep_sorted)
    return jnp.where(keep, logits, -jnp.inf)


def sample(logits: jax.Array, keys: jax.Array, temperature: jax.Array, top_p: jax.Array, top_k: int) -> jax.Array:
    """logits (batch, vocab) float32, keys (batch, 2) -> tokens (batch,). temperature 0 = greedy.

    Branches with lax.cond, so greedy decoding never pays for the vocabulary sort of top-p and
    top_p >= 1 skips that sort too (it keeps every token)."""
    def greedy(_):
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)

    def stochastic(_):
        scaled = filter_top_k(logits / jnp.maximum(temperature, 1e-6), top_k)
        scaled = jax.lax.cond(top_p < 1.0, lambda x: filter_top_p(x, top_p), lambda x: x, scaled)
        return jax.vmap(lambda k, l: jax.random.categorical(k, l))(keys, scaled).astype(jnp.int32)

    return jax.lax.cond(temperature > 0, stochastic, greedy, None)


def row_keys(seeds: jax.Array, step: jax.Array) -> jax.Array:
    """One key per row from its own seed and the step, so a row's draws ignore its batch-mates."""
    return jax.vmap(lambda s: jax.random.fold_in(jax.random.PRNGKey(s), step))(seeds)
