"""Next-token cross-entropy over target tokens only, with optional z-loss, as weighted sums."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def weighted_cross_entropy(logits, targets, weights, z_loss: float = 0.0) -> dict[str, jax.Array]:
    """Sums over the batch: `loss` (CE), `z_loss`, `correct` (argmax hits) and `weight`.

    logits (b, t, v) float32; targets (b, t) int; weights (b, t) float (0 on prompt and padding).
    Sums, not means, so micro-batches and hosts can be added before one division at the end.
    """
    logits = logits.astype(jnp.float32)
    lse = jax.nn.logsumexp(logits, axis=-1)
    target_logit = jnp.take_along_axis(logits, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
    ce = (lse - target_logit) * weights
    out = {
        "loss": jnp.sum(ce),
        "z_loss": jnp.sum(z_loss * jnp.square(lse) * weights),
        "correct": jnp.sum((jnp.argmax(logits, axis=-1) == targets) * weights),
        "weight": jnp.sum(weights),
    }
    return out
