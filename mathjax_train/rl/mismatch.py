"""Sampler/learner mismatch: how far the engine's log-probabilities of the sampled tokens lie from the learner's
recomputation with the same parameters, and the corrections verl and TRL users know for it.

With d = log p_learner - log p_sampler on a sampled token and r = exp(d): the measurement reports max and mean |d|,
k3 = r - 1 - log r averaged over the sampled tokens (tokens drawn from the sampler, so an estimate of
KL(sampler || learner), >= 0 token by token) and the share of tokens with r outside MEASURE_BAND. The corrections
(rl.tis_cap, rl.mismatch_mask) are decoupled PPO as verl and TRL run it: the clipped ratio is taken to the learner's
own pre-update log-probabilities, and the sampler/learner ratio r weighs (truncated at the cap) or masks tokens.
"""

from __future__ import annotations

import numpy as np

from mathjax_train.config import RlConfig

MEASURE_BAND = (0.8, 1.25)  # the ratio band the logged out-of-band share counts against (fixed, comparable runs)


def mismatch_metrics(learner_logp, sampler_logp, mask) -> dict[str, float]:
    """max and mean |d|, mean k3 and the out-of-band share over the tokens with mask 1; {} when there are none.
    Float64, so the figures add no rounding of their own to differences of float32 log-probabilities."""
    keep = np.asarray(mask) > 0
    if not keep.any():
        return {}
    d = np.asarray(learner_logp, np.float64)[keep] - np.asarray(sampler_logp, np.float64)[keep]
    return {
        "mismatch_max_abs": float(np.abs(d).max()),
        "mismatch_mean_abs": float(np.abs(d).mean()),
        "mismatch_kl_k3": float(np.mean(np.expm1(d) - d)),  # r - 1 - log r, without r - 1's cancellation
        "mismatch_out_of_band": float(np.mean(_outside(d, *MEASURE_BAND))),
    }


def _outside(d, low: float, high: float):
    """Whether the ratio exp(d) leaves [low, high], compared in log space (no overflow of exp)."""
    return (d < np.log(low)) | (d > np.log(high))


def corrects(rl: RlConfig) -> bool:
    """Whether a correction is on (then the learner's own log-probabilities are the ratio's denominator)."""
    return rl.tis_cap > 0 or rl.mismatch_mask != "none"


def correct(learner_logp, sampler_logp, mask, rl: RlConfig) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """(weight, mask, metrics) for (rows, t) arrays. weight: min(r, rl.tis_cap) per token (1 with tis_cap 0);
    mask: `mask` less the tokens (token) or rows (sequence: geometric mean of the row's r) outside
    [rl.mismatch_low, rl.mismatch_high]; metrics: the shares of the sampled tokens masked and truncated."""
    mask = np.asarray(mask, np.float32)
    on = mask > 0
    d = np.where(on, np.asarray(learner_logp, np.float64) - np.asarray(sampler_logp, np.float64), 0.0)
    band = (rl.mismatch_low, rl.mismatch_high)
    if rl.mismatch_mask == "token":
        drop = _outside(d, *band)
    elif rl.mismatch_mask == "sequence":
        mean_d = d.sum(axis=-1) / np.maximum(on.sum(axis=-1), 1)  # log of the geometric mean ratio
        drop = np.broadcast_to(_outside(mean_d, *band)[:, None], d.shape)
    else:
        drop = np.zeros(d.shape, bool)
    weight = np.ones(d.shape, np.float32)
    truncated = np.zeros(d.shape, bool)
    if rl.tis_cap > 0:
        truncated = d > np.log(rl.tis_cap)
        weight = np.where(on, np.exp(np.minimum(d, np.log(rl.tis_cap))), 1.0).astype(np.float32)
    sampled = max(int(on.sum()), 1)
    metrics = {
        "mismatch_masked": float((drop & on).sum() / sampled),
        "tis_truncated": float((truncated & on).sum() / sampled),
    }
    return weight, np.where(drop, 0.0, mask).astype(np.float32), metrics


def correct_batch(batch: dict, rl: RlConfig) -> dict[str, float]:
    """Apply `correct` to a learner batch holding "learner_logp" (pre-update) and the sampler's "old_logp": sets
    "is_weight", the corrected "loss_mask" and, when correcting, "old_logp" := "learner_logp". Returns metrics."""
    if not corrects(rl):
        batch["is_weight"] = np.ones_like(batch["old_logp"])
        return {}
    weight, mask, metrics = correct(batch["learner_logp"], batch["old_logp"], batch["loss_mask"], rl)
    batch.update(is_weight=weight, loss_mask=mask, old_logp=batch["learner_logp"])
    return metrics
