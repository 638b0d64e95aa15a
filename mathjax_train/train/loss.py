"""Next-token cross-entropy over target tokens only, with optional z-loss, as weighted sums.

Two ways to get there: `weighted_cross_entropy` from full (batch, seq, vocab) logits, and
`chunked_cross_entropy` from the final hidden states and the head weight, one vocabulary chunk at a
time, so neither the forward nor the backward pass ever holds logits wider than a chunk.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from mathjax_train.config import AUTO_VOCAB_CHUNK
from mathjax_train.model.layers import softcap
from mathjax_train.model.reductions import argmax_last


def token_sums(lse, target_logit, predicted, targets, weights, z_loss: float) -> dict[str, jax.Array]:
    """The weighted sums both losses report, from per-token log-sum-exp, target logit and argmax."""
    return {
        "loss": jnp.sum((lse - target_logit) * weights),
        "z_loss": jnp.sum(z_loss * jnp.square(lse) * weights),
        "correct": jnp.sum((predicted == targets) * weights),
        "weight": jnp.sum(weights),
    }


def weighted_cross_entropy(logits, targets, weights, z_loss: float = 0.0) -> dict[str, jax.Array]:
    """Sums over the batch: `loss` (CE), `z_loss`, `correct` (argmax hits) and `weight`.

    logits (b, t, v) float32; targets (b, t) int; weights (b, t) float (0 on prompt and padding).
    Sums, not means, so micro-batches and hosts can be added before one division at the end.
    """
    logits = logits.astype(jnp.float32)
    lse = jax.nn.logsumexp(logits, axis=-1)
    target_logit = jnp.take_along_axis(logits, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
    return token_sums(lse, target_logit, argmax_last(logits), targets, weights, z_loss)


def interleaved_chunks(kernel, chunk: int):
    """(embed, vocab) head weight -> (n, embed, chunk) with chunk k holding vocabulary ids k, k+n, ...

    Interleaving (not contiguous slices) keeps a `vocab`-sharded weight sharded within every chunk.
    A vocabulary that is not n x chunk is padded with zero columns (masked to -inf by the loss).
    """
    e, vocab = kernel.shape
    n = math.ceil(vocab / chunk)
    kernel = jnp.pad(kernel, ((0, 0), (0, n * chunk - vocab))) if n * chunk != vocab else kernel
    stacked = jnp.transpose(kernel.reshape(e, chunk, n), (2, 0, 1))
    return nn.with_logical_constraint(stacked, (None, None, "vocab"))


def _online_step(carry, chunk_logits, ids, tj, hit):
    """Fold one chunk's logits (b, t, c) into the running max/sum, target logit and argmax."""
    m, s, tgt, best, best_id = carry
    v, i = jnp.max(chunk_logits, axis=-1), ids[argmax_last(chunk_logits)]
    m_new = jax.lax.stop_gradient(jnp.maximum(m, v))  # any shift gives the same log-sum-exp and gradient
    s = s * jnp.exp(m - m_new) + jnp.sum(jnp.exp(chunk_logits - m_new[..., None]), axis=-1)
    picked = jnp.take_along_axis(chunk_logits, tj[..., None], axis=-1)[..., 0]
    tgt = tgt + jnp.where(hit, picked, 0.0)
    better = (v > best) | ((v == best) & (i < best_id))  # ties go to the lower id, as jnp.argmax does
    return m_new, s, tgt, jnp.where(better, v, best), jnp.where(better, i, best_id)


def chunked_cross_entropy(
    hidden, kernel, targets, weights, z_loss: float = 0.0, chunk: int = AUTO_VOCAB_CHUNK, logit_cap: float = 0.0
) -> dict[str, jax.Array]:
    """`weighted_cross_entropy(hidden @ kernel, ...)` without the full logits, forward or backward.

    hidden (b, t, e) in the compute dtype (the decoder's final normed states); kernel (e, vocab), cast
    to hidden's dtype as the head does. A lax.scan over vocabulary chunks keeps an online
    log-sum-exp; its body is rematerialized, so the backward pass recomputes each chunk's logits.
    `logit_cap` soft-caps the logits as the decoder's head does (model.final_logit_softcapping).
    """
    vocab, compute = kernel.shape[1], hidden.dtype
    chunk = min(chunk, vocab)
    stacked = interleaved_chunks(kernel.astype(compute), chunk)
    hidden = hidden.astype(jnp.float32)  # so the scan adds up the chunks' hidden-state gradients in float32
    n = stacked.shape[0]
    targets = targets.astype(jnp.int32)
    tk, tj = targets % n, targets // n
    rows = jnp.arange(chunk) * n
    padded = n * chunk != vocab

    @jax.checkpoint
    def body(carry, xs):
        w, k = xs
        logits = softcap(jnp.einsum("bte,ec->btc", hidden.astype(compute), w).astype(jnp.float32), logit_cap)
        logits = nn.with_logical_constraint(logits, ("batch", "length", "vocab"))
        ids = rows + k
        if padded:
            logits = jnp.where(ids < vocab, logits, -jnp.inf)
        return _online_step(carry, logits, ids, tj, tk == k), None

    shape = targets.shape
    init = (
        jnp.full(shape, -jnp.inf),
        jnp.zeros(shape),
        jnp.zeros(shape),
        jnp.full(shape, -jnp.inf),
        jnp.zeros(shape, jnp.int32),
    )
    (m, s, tgt, _, predicted), _ = jax.lax.scan(body, init, (stacked, jnp.arange(n)))
    return token_sums(m + jnp.log(s), tgt, predicted, targets, weights, z_loss)
