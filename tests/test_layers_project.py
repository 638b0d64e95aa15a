"""`project` (the dense layers' matmul with its own VJP) equals jax.lax.dot_general in value and in
both gradients, for every shape the decoder uses: one or two contracted axes (o_proj contracts
heads and head_dim), one or two feature axes (q/k/v keep heads and head_dim), bf16 inputs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mathjax_train.model.layers import project

CASES = {  # (x shape, kernel shape, contracted axes)
    "mlp": ((2, 5, 8), (8, 12), 1),
    "qkv": ((2, 5, 8), (8, 3, 4), 1),
    "o_proj": ((2, 5, 3, 4), (3, 4, 8), 2),
    "no_batch": ((6, 8), (8, 12), 1),
}


def _plain(x, kernel, n_in):
    contract = (tuple(range(x.ndim - n_in, x.ndim)), tuple(range(n_in)))
    return jax.lax.dot_general(x, kernel, (contract, ((), ())))


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_project_matches_dot_general(case, dtype):
    xs, ks, n_in = CASES[case]
    k = jax.random.split(jax.random.PRNGKey(0), 3)
    x = jax.random.normal(k[0], xs).astype(dtype)
    kernel = jax.random.normal(k[1], ks).astype(dtype)
    y_plain, vjp_plain = jax.vjp(lambda a, b: _plain(a, b, n_in), x, kernel)
    y, vjp = jax.vjp(lambda a, b: project(a, b, n_in), x, kernel)
    dy = jax.random.normal(k[2], y.shape).astype(dtype)
    tol = 1e-6 if dtype == jnp.float32 else 1e-2
    assert y.shape == y_plain.shape and y.dtype == y_plain.dtype
    np.testing.assert_allclose(np.float32(y), np.float32(y_plain), rtol=tol, atol=tol)
    for got, want in zip(vjp(dy), vjp_plain(dy)):
        assert got.shape == want.shape and got.dtype == want.dtype
        np.testing.assert_allclose(np.float32(got), np.float32(want), rtol=tol, atol=tol * 10)


def test_project_gradient_under_jit_and_second_use():
    """A kernel used twice (tied use) accumulates both gradients, as with plain dot_general."""
    x = jnp.arange(24.0).reshape(2, 3, 4) / 10
    kernel = jnp.linspace(-1, 1, 16).reshape(4, 4)

    def loss(f, kern):
        return jnp.sum(f(f(x, kern, 1), kern, 1) ** 2)

    got = jax.jit(jax.grad(lambda kern: loss(project, kern)))(kernel)
    want = jax.grad(lambda kern: loss(_plain, kern))(kernel)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert float(jnp.abs(got).sum()) > 0


@pytest.mark.parametrize("policy", ["dots", "dots_with_no_batch_dims", "full"])
def test_remat_policies_save_the_projections(policy):
    """A remat policy cannot see a dot inside a custom VJP; the projections' outputs are saved by name, so the
    `dots` policies keep the projections the backward pass reads (q, k, v, o, gate and up; down_proj's output
    only feeds the residual sum) and recompute only the elementwise work, while `full` keeps none of them."""
    import contextlib
    import io
    import re

    from jax.ad_checkpoint import print_saved_residuals

    from mathjax_train.config import ModelConfig
    from mathjax_train.model.decoder import REMAT_POLICIES, DecoderLayer

    cfg = ModelConfig(vocab_size=32, hidden_size=16, intermediate_size=24, num_layers=1, num_heads=2, num_kv_heads=2)
    cfg.attention_kernel = "dot"
    layer = DecoderLayer(cfg)
    x = jnp.ones((1, 8, 16))
    positions, segments = jnp.arange(8)[None], jnp.ones((1, 8), jnp.int32)
    variables = layer.init(jax.random.PRNGKey(0), (x, None), 0, positions, segments, None)

    def out(params, x):
        (y, _), _ = layer.apply(params, (x, None), 0, positions, segments, None)
        return jnp.sum(y)

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        print_saved_residuals(jax.checkpoint(out, policy=REMAT_POLICIES[policy]), variables, x)
    saved = printed.getvalue()
    shapes = [
        tuple(int(n) for n in dims.split(","))
        for dims in re.findall(r"^\w+\[([\d,]+)\].*projection", saved, flags=re.M)
    ]
    if policy == "full":
        assert shapes == []
    else:  # q, k, v as (b, t, heads, head_dim), o_proj as (b, t, embed), gate and up as (b, t, mlp)
        assert sorted(shapes) == [(1, 8, 2, 8)] * 3 + [(1, 8, 16)] + [(1, 8, 24)] * 2, saved
