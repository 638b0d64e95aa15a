"""The GRPO loss and its gradient against a hand-computed example (4 rows in 2 groups, 3 tokens)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mathjax_train.rl.loss import aggregate, group_advantages, grpo_loss, token_logprobs_and_entropy

# ratios r = exp(logp - old_logp); row 0 token 0 is prompt, row 1 token 0 tool output, row 3 token 2 padding
RATIOS = np.array([[1.0, 1.5, 1.0], [2.0, 0.5, 1.0], [1.2, 1.1, 0.7], [1.0, 0.9, 3.0]])
MASK = np.array([[0, 1, 1], [0, 1, 1], [0, 1, 1], [0, 1, 0]], np.float32)
ADV = np.array([1.0, -1.0, -1.0, 1.0])
CLIP = dict(clip_low=0.2, clip_high=0.28)
# per trained token, -min(rA, clip(r, 0.8, 1.28) A), worked by hand:
#   row 0 (A=+1): r=1.5 -> clipped to 1.28: -1.28 (no gradient); r=1.0: -1.0 (d/dlogp = -rA = -1)
#   row 1 (A=-1): r=0.5 -> clipped to 0.8: +0.8 (no gradient);  r=1.0: +1.0 (d/dlogp = +1)
#   row 2 (A=-1): r=1.1 inside: +1.1 (d/dlogp = +1.1);          r=0.7 -> clipped to 0.8: +0.8 (no gradient)
#   row 3 (A=+1): r=0.9 inside: -0.9 (d/dlogp = -0.9)
SUM = -1.28 - 1.0 + 0.8 + 1.0 + 1.1 + 0.8 - 0.9  # 0.52 over 7 tokens
DVALUE = np.array([[0, 0, -1.0], [0, 0, 1.0], [0, 1.1, 0], [0, -0.9, 0]])
EXPECTED = {
    "token": (SUM / 7, DVALUE / 7),
    "sequence": (
        ((-1.28 - 1.0) / 2 + (0.8 + 1.0) / 2 + (1.1 + 0.8) / 2 - 0.9) / 4,
        DVALUE / np.array([[2.0], [2.0], [2.0], [1.0]]) / 4,
    ),
    "constant": (SUM / (4 * 3), DVALUE / 12),
}


def _inputs():
    old = jnp.asarray(
        np.log(np.array([[0.3, 0.2, 0.5], [0.1, 0.4, 0.25], [0.5, 0.5, 0.6], [0.2, 0.3, 0.1]])), jnp.float32
    )
    return old + jnp.log(jnp.asarray(RATIOS, jnp.float32)), old


@pytest.mark.parametrize("aggregation", ["token", "sequence", "constant"])
def test_loss_and_gradient_match_the_hand_computed_example(aggregation):
    logp, old = _inputs()
    fn = lambda lp: grpo_loss(lp, old, jnp.asarray(ADV), jnp.asarray(MASK), aggregation=aggregation, **CLIP)
    (loss, m), grad = jax.value_and_grad(fn, has_aux=True)(logp)
    want_loss, want_grad = EXPECTED[aggregation]
    np.testing.assert_allclose(float(loss), want_loss, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.asarray(grad), want_grad, rtol=1e-5, atol=1e-7)
    assert np.all(np.asarray(grad)[MASK == 0] == 0)  # prompt, tool output and padding: exactly no gradient
    np.testing.assert_allclose(float(m["clip_fraction"]), 3 / 7, rtol=1e-6)
    assert float(m["trained_tokens"]) == 7


def test_symmetric_clip_clips_row_zero_at_1_2():
    logp, old = _inputs()
    loss, _ = grpo_loss(
        logp, old, jnp.asarray(ADV), jnp.asarray(MASK), aggregation="token", clip_low=0.2, clip_high=0.2
    )
    np.testing.assert_allclose(float(loss), (SUM + 1.28 - 1.2) / 7, rtol=1e-5)


def test_masked_nan_logprobs_of_tool_output_stay_out():
    logp, old = _inputs()
    old = old.at[1, 0].set(jnp.nan)  # the sampler reports NaN for tool-output tokens
    (loss, _), grad = jax.value_and_grad(
        lambda lp: grpo_loss(lp, old, jnp.asarray(ADV), jnp.asarray(MASK), **CLIP), has_aux=True
    )(logp)
    np.testing.assert_allclose(float(loss), SUM / 7, rtol=1e-5)
    assert np.all(np.isfinite(np.asarray(grad))) and float(grad[1, 0]) == 0


def test_k3_kl_and_entropy_terms():
    logp, old = _inputs()
    ref = logp + jnp.log(2.0)  # ref/policy = 2 on every token: k3 = 2 - log 2 - 1, d/dlogp = 1 - 2 = -1
    ent = jnp.full(logp.shape, 0.5)
    fn = lambda lp, e: grpo_loss(
        lp,
        old,
        jnp.asarray(ADV),
        jnp.asarray(MASK),
        aggregation="token",
        ref_logp=ref,
        kl_coef=0.1,
        entropy=e,
        entropy_coef=0.01,
        **CLIP,
    )
    (loss, m), (g_lp, g_ent) = jax.value_and_grad(fn, argnums=(0, 1), has_aux=True)(logp, ent)
    k3 = 2 - math.log(2) - 1
    np.testing.assert_allclose(float(loss), SUM / 7 + 0.1 * k3 - 0.01 * 0.5, rtol=1e-5)
    np.testing.assert_allclose(float(m["kl"]), k3, rtol=1e-5)
    np.testing.assert_allclose(float(m["entropy"]), 0.5, rtol=1e-6)
    # the reference is a constant of the loss: d k3 / d logp = 1 - ref/policy = -1 on every trained token
    np.testing.assert_allclose(np.asarray(g_lp), (DVALUE + 0.1 * (1 - 2) * MASK) / 7, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.asarray(g_ent), -0.01 * MASK / 7, rtol=1e-5, atol=1e-9)


def test_importance_weights_scale_each_tokens_surrogate_and_its_gradient():
    """rl.tis_cap's weights (rl/mismatch.py: min(p_learner / p_sampler, cap)) multiply the per-token surrogate and
    carry no gradient of their own: the clipped row 0 token 1 (-1.28) and the inside row 2 token 1 (+1.1) change."""
    logp, old = _inputs()
    weight = np.ones((4, 3), np.float32)
    weight[0, 1], weight[0, 2], weight[2, 1] = 2.0, 0.5, 0.5
    fn = lambda lp: grpo_loss(lp, old, jnp.asarray(ADV), jnp.asarray(MASK), is_weight=jnp.asarray(weight), **CLIP)
    (loss, m), grad = jax.value_and_grad(fn, has_aux=True)(logp)
    # -1.28 x 2 - 1.0 x 0.5 + 0.8 + 1.0 + 1.1 x 0.5 + 0.8 - 0.9 = -0.81 over 7 tokens
    np.testing.assert_allclose(float(loss), -0.81 / 7, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(grad), DVALUE * weight / 7, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(float(m["clip_fraction"]), 3 / 7, rtol=1e-6)  # the weights clip nothing


def test_group_advantages_with_and_without_std():
    r = [[1.0, 0.0], [0.5, 1.0], [1.0, 1.0]]
    np.testing.assert_allclose(
        np.asarray(group_advantages(r, normalize_std=False)), [[0.5, -0.5], [-0.25, 0.25], [0, 0]]
    )
    np.testing.assert_allclose(np.asarray(group_advantages(r, eps=0.0 + 1e-9)), [[1, -1], [-1, 1], [0, 0]], rtol=1e-6)


def test_aggregate_rejects_unknown_and_logprobs_match_log_softmax():
    with pytest.raises(ValueError, match="not one of token, sequence, constant"):
        aggregate(jnp.ones((1, 2)), jnp.ones((1, 2)), "mean")
    logits = jnp.asarray([[[0.0, math.log(3.0)]]])
    lp, ent = token_logprobs_and_entropy(logits, jnp.asarray([[1]]))
    np.testing.assert_allclose(float(lp[0, 0]), math.log(0.75), rtol=1e-6)
    np.testing.assert_allclose(float(ent[0, 0]), -(0.25 * math.log(0.25) + 0.75 * math.log(0.75)), rtol=1e-6)
