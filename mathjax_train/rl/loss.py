"""The GRPO-family objective as pure functions of per-token log-probabilities.

`group_advantages` turns a (groups, samples) reward array into advantages (GRPO's group-std
normalization, or Dr. GRPO's plain centring); `grpo_loss` is the clipped surrogate on the ratio to the
sampler's log-probabilities with DAPO's asymmetric clip, an optional k3 KL to a reference and an
entropy bonus, aggregated per token (DAPO), per sequence (GRPO) or by a constant (Dr. GRPO).
Tokens with mask 0 (prompt, padding, tool output) contribute nothing, so they get no gradient.
"""

from __future__ import annotations

import typing

import jax
import jax.numpy as jnp

from mathjax_train.config import RlAggregation


def group_advantages(rewards, normalize_std: bool = True, eps: float = 1e-6):
    """(B, G) rewards -> (B, G) advantages: r minus its group's mean, divided by the group's
    (population) standard deviation + eps when `normalize_std`. A group of equal rewards gives 0."""
    r = jnp.asarray(rewards, jnp.float32)
    centred = r - jnp.mean(r, axis=-1, keepdims=True)
    if not normalize_std:
        return centred
    return centred / (jnp.std(r, axis=-1, keepdims=True) + eps)


def token_logprobs_and_entropy(logits, targets):
    """Per-token log p(target) and the entropy of the predicted distribution, both (b, t) float32."""
    logp_all = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    logp = jnp.take_along_axis(logp_all, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
    entropy = -jnp.sum(jnp.exp(logp_all) * logp_all, axis=-1)
    return logp, entropy


def aggregate(per_token, mask, how: str, constant_len: int | None = None):
    """Reduce (rows, t) per-token values over the tokens where mask is 1.

    token: sum / number of masked tokens in the batch (every token weighs the same; DAPO).
    sequence: each row's mean over its tokens, then the mean over rows with any token (GRPO).
    constant: sum / (rows x constant_len) (Dr. GRPO: no length normalization; default t)."""
    mask = mask.astype(jnp.float32)
    total = jnp.sum(per_token * mask)
    if how == "token":
        return total / jnp.maximum(jnp.sum(mask), 1.0)
    if how == "sequence":
        counts = jnp.sum(mask, axis=-1)
        row_means = jnp.sum(per_token * mask, axis=-1) / jnp.maximum(counts, 1.0)
        return jnp.sum(row_means) / jnp.maximum(jnp.sum(counts > 0), 1.0)
    if how == "constant":
        return total / (mask.shape[0] * (constant_len or mask.shape[1]))
    raise ValueError(f"aggregation {how!r} is not one of {', '.join(typing.get_args(RlAggregation))}")


def grpo_loss(
    logp,
    old_logp,
    advantages,
    mask,
    *,
    aggregation: str = "token",
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    ref_logp=None,
    kl_coef: float = 0.0,
    entropy=None,
    entropy_coef: float = 0.0,
    constant_len: int | None = None,
    is_weight=None,
):
    """(loss, metrics) of the clipped surrogate.

    logp, old_logp, mask: (rows, t) (current policy, sampler, 1 on trained tokens); advantages: (rows,)
    one per completion, or (rows, t). Per token: -w min(ratio A, clip(ratio, 1 - clip_low, 1 + clip_high) A)
    + kl_coef k3(ref || policy) - entropy_coef entropy, with k3 = exp(ref - logp) - (ref - logp) - 1 and w the
    (rows, t) `is_weight` (rl/mismatch.py's truncated importance weight; 1 when None)."""
    mask = mask.astype(jnp.float32)
    adv = advantages if advantages.ndim == 2 else advantages[:, None]
    # masked positions may hold anything (NaN logprobs of tool output, padding): keep them out of exp()
    delta = jnp.where(mask > 0, logp - old_logp, 0.0)
    ratio = jnp.exp(delta)
    clipped_ratio = jnp.clip(ratio, 1.0 - clip_low, 1.0 + clip_high)
    unclipped, clipped = ratio * adv, clipped_ratio * adv
    per_token = -jnp.minimum(unclipped, clipped)
    if is_weight is not None:
        per_token = per_token * jax.lax.stop_gradient(is_weight)
    metrics = {}
    if ref_logp is not None and kl_coef:
        d = jnp.where(mask > 0, ref_logp - logp, 0.0)
        kl = jnp.exp(d) - d - 1.0
        per_token = per_token + kl_coef * kl
        metrics["kl"] = jax.lax.stop_gradient(aggregate(kl, mask, "token"))
    if entropy is not None:
        ent = jnp.where(mask > 0, entropy, 0.0)
        if entropy_coef:
            per_token = per_token - entropy_coef * ent
        metrics["entropy"] = jax.lax.stop_gradient(aggregate(ent, mask, "token"))
    loss = aggregate(per_token, mask, aggregation, constant_len)
    is_clipped = (clipped < unclipped).astype(jnp.float32)  # the min picked the clipped branch
    metrics.update(
        {
            "clip_fraction": jax.lax.stop_gradient(aggregate(is_clipped, mask, "token")),
            "ratio_mean": jax.lax.stop_gradient(aggregate(ratio, mask, "token")),
            "ratio_min": jax.lax.stop_gradient(jnp.min(jnp.where(mask > 0, ratio, jnp.inf))),
            "ratio_max": jax.lax.stop_gradient(jnp.max(jnp.where(mask > 0, ratio, -jnp.inf))),
            "trained_tokens": jnp.sum(mask),
        }
    )
    return loss, metrics
