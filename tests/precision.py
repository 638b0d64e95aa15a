"""Tolerances for float32 forward passes, derived from float32's rounding rather than from one machine's output.

A float32 forward pass of L layers rounds every product and sum at unit roundoff u = 2**-24. Rounding errors of a
dot product of length K behave like a random walk (about u sqrt(K) relative to its magnitude), and each layer adds
its error to the residual stream, so after L layers the error of a logit of size |z| is about u |z| sqrt(L K) with
K the widest contraction (the MLP's). Different libraries (and AMD vs Intel kernels) sum in different orders, so
two correct float32 implementations each sit within this bound of the float64 result, not of each other's digits.
"""

import math

import numpy as np

FLOAT32_UNIT_ROUNDOFF = 2.0**-24


def float32_logit_tolerance(reference: np.ndarray, num_layers: int, widest: int) -> float:
    """The float32 error budget of logits whose float64 values are `reference`, after `num_layers` layers whose
    widest contraction has length `widest`."""
    return float(np.abs(reference).max()) * FLOAT32_UNIT_ROUNDOFF * math.sqrt(num_layers * widest)


def float32_logprob_tolerance(logits: np.ndarray, logp: np.ndarray, num_layers: int, widest: int) -> float:
    """The largest gap between two float32 implementations' log-softmax of the same targets, each within its float32
    budget of the float64 result (`logits` / `logp`: either's values, within that budget of the float64 ones).

    Logit errors dz of at most t (float32_logit_tolerance) move log p_i = z_i - logsumexp(z) by
    |dz_i - sum_j p_j dz_j| <= 2 t. The log-softmax rounds on its own: z - max z (u 2 max|z|), the sum of V
    exponentials (relative u sqrt(V) as a random walk, so as much on its log) and the final difference (u |log p|,
    twice counting the log). Two implementations: twice the sum."""
    t = float32_logit_tolerance(logits, num_layers, widest)
    z, lp, vocab = float(np.abs(logits).max()), float(np.abs(logp).max()), logits.shape[-1]
    return 2 * (2 * t + FLOAT32_UNIT_ROUNDOFF * (2 * z + math.sqrt(vocab) + 2 * lp))
