"""Token sampling from logits with per-row settings: greedy, temperature, top-k, top-p.

Every row carries its own temperature (0 = greedy), top-p, top-k and PRNG key, so rows with
different settings share one batch. Keys come from a row's seed and the index of the token in its
completion, so what a row draws does not depend on its batch-mates or its slot.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mathjax_train.model.reductions import argmax_last


def filter_logits(logits: jax.Array, top_p: jax.Array, top_k: jax.Array) -> jax.Array:
    """Per row: keep the top_k largest logits (0 keeps all) and the smallest set whose probability
    reaches top_p (always at least one); the rest become -inf. One descending sort serves both."""
    vocab = logits.shape[-1]
    ordered = -jnp.sort(-logits, axis=-1)
    k = jnp.where(top_k > 0, jnp.minimum(top_k, vocab), vocab)
    kth = jnp.take_along_axis(ordered, (k - 1)[:, None], axis=-1)
    probs = jax.nn.softmax(ordered, axis=-1)
    before = jnp.cumsum(probs, axis=-1) - probs  # mass strictly before each sorted token
    kept = jnp.maximum(jnp.sum(before < top_p[:, None], axis=-1), 1)
    pth = jnp.take_along_axis(ordered, (kept - 1)[:, None], axis=-1)
    return jnp.where(logits < jnp.maximum(kth, pth), -jnp.inf, logits)


def sample(logits: jax.Array, keys: jax.Array, temperature: jax.Array, top_p: jax.Array, top_k: jax.Array) -> jax.Array:
    """logits (batch, vocab) float32, keys (batch, 2), temperature/top_p (batch,) float32, top_k
    (batch,) int32 -> tokens (batch,). Batches that are all greedy never draw, and batches with no
    filter never sort the vocabulary."""

    def greedy(_):
        return argmax_last(logits)

    def stochastic(_):
        scaled = logits / jnp.maximum(temperature, 1e-6)[:, None]
        needs_filter = jnp.any((top_p < 1.0) | (top_k > 0))
        scaled = jax.lax.cond(needs_filter, lambda x: filter_logits(x, top_p, top_k), lambda x: x, scaled)
        drawn = draw(scaled, jax.vmap(jax.random.uniform)(keys))
        return jnp.where(temperature > 0, drawn, greedy(None))

    return jax.lax.cond(jnp.any(temperature > 0), stochastic, greedy, None)


BLOCK = 256


def draw(logits: jax.Array, u: jax.Array) -> jax.Array:
    """Inverse-CDF draw of one token per row from softmax(logits) with one uniform u (batch,) each.

    Two levels (blocks of 256 tokens, then inside the chosen block) so the cumulative sums stay
    short; one uniform a row instead of a Gumbel variate per vocabulary entry, which on CPU cost more
    than the model's own matmuls at large batch. Tokens of probability 0 (filtered) are never drawn."""
    b, v = logits.shape
    nb = -(-v // BLOCK)
    p = jnp.exp(logits - jnp.max(logits, axis=-1, keepdims=True))
    p = jnp.pad(p, ((0, 0), (0, nb * BLOCK - v))).reshape(b, nb, BLOCK)
    mass = jnp.sum(p, axis=-1)  # (b, nb)
    upto = jnp.cumsum(mass, axis=-1)
    target = u * upto[:, -1]
    last_block = nb - 1 - jnp.argmax((mass > 0)[:, ::-1], axis=-1)
    block = jnp.minimum(jnp.sum(upto <= target[:, None], axis=-1), last_block)
    inner = jnp.take_along_axis(p, block[:, None, None], axis=1)[:, 0]  # (b, BLOCK)
    rest = target - (
        jnp.take_along_axis(upto, block[:, None], axis=1)[:, 0]
        - jnp.take_along_axis(mass, block[:, None], axis=1)[:, 0]
    )
    last_token = BLOCK - 1 - jnp.argmax((inner > 0)[:, ::-1], axis=-1)
    token = jnp.minimum(jnp.sum(jnp.cumsum(inner, axis=-1) <= rest[:, None], axis=-1), last_token)
    return (block * BLOCK + token).astype(jnp.int32)


def row_keys(seeds: jax.Array, steps: jax.Array) -> jax.Array:
    """One key per row from its own seed (uint32) and the index of the token it is drawing."""
    return jax.vmap(lambda s, i: jax.random.fold_in(jax.random.PRNGKey(s), i))(seeds, steps)


def token_logprobs(logits: jax.Array, tokens: jax.Array) -> jax.Array:
    """log p(token) under the model's own distribution (before temperature and filters), (batch,)."""
    return jnp.take_along_axis(jax.nn.log_softmax(logits, axis=-1), tokens[:, None], axis=-1)[:, 0]
