"""The fused kernels give the dot path's outputs and gradients on packed batches, alone, inside
the decoder, and (splash) sharded under a mesh in the real train step: splash in Pallas interpret
mode, cudnn through jax.nn.dot_product_attention's XLA implementation (its cuDNN one needs a GPU:
the `gpu`-marked test, run on one with `JAX_PLATFORMS=cuda pytest -m gpu`).

Tolerances: attention_helpers (float32). The GPU test is bf16 (cuDNN has no fp32 kernel) against the
dot path in float32 on the same bf16 inputs."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attention_helpers import TOL, assert_close_to_scale, packed_segments, sharded_step, tiny_model_config
from mathjax_train.config import ConfigError, load_config
from mathjax_train.data.toy_copy import ToyCopyIterator
from mathjax_train.model import Decoder
from mathjax_train.model.attention import attention_mask, dot_product_attention
from mathjax_train.model.attention_kernels import block_size, cudnn_attention, splash_attention
from mathjax_train.parallel.mesh import make_mesh
from mathjax_train.parallel.rules import axis_rules


def _dot(q, k, v, seg, pos, window):
    slots = jnp.arange(q.shape[1])
    return dot_product_attention(q, k, v, attention_mask(slots, slots, pos, pos, seg, seg, window))


def _kernel_fn(kernel, seg, pos, window):
    if kernel == "splash":
        return lambda q, k, v: splash_attention(q, k, v, jnp.asarray(seg), sliding_window=window)
    slots = jnp.arange(seg.shape[1])
    mask = attention_mask(slots, slots, jnp.asarray(pos), jnp.asarray(pos), jnp.asarray(seg), jnp.asarray(seg), window)
    return lambda q, k, v: cudnn_attention(q, k, v, mask, sliding_window=window)


@pytest.mark.parametrize("kernel", ["splash", "cudnn"])
@pytest.mark.parametrize("window", [0, 40], ids=["causal", "sliding_window"])
def test_kernel_matches_dot_on_a_packed_batch(kernel, window):
    b, t, h, kv, d = 2, 256, 4, 2, 64  # two 128-blocks per row, grouped-query heads
    rng = np.random.default_rng(1)
    q, k, v = (jnp.asarray(rng.standard_normal((b, t, n, d)), jnp.float32) for n in (h, kv, kv))
    seg, pos = packed_segments(b, t)
    assert (seg[:, :-1] != seg[:, 1:]).sum() >= 4 and (seg == 0).any()  # really packed and padded
    real = jnp.asarray(seg > 0)[:, :, None, None]
    w = jnp.asarray(rng.standard_normal((b, t, h, d)), jnp.float32) * real  # a loss that reads real slots only

    def loss(fn, q, k, v):
        return jnp.sum(fn(q, k, v) * w)

    ref_fn = lambda q, k, v: _dot(q, k, v, jnp.asarray(seg), jnp.asarray(pos), window)  # noqa: E731
    ker_fn = _kernel_fn(kernel, seg, pos, window)
    out_ref, out = ref_fn(q, k, v), jax.jit(ker_fn)(q, k, v)
    mask = np.broadcast_to(np.asarray(real), out.shape)
    np.testing.assert_allclose(np.asarray(out)[mask], np.asarray(out_ref)[mask], **TOL)
    g_ref = jax.grad(lambda *a: loss(ref_fn, *a), argnums=(0, 1, 2))(q, k, v)
    g = jax.jit(jax.grad(lambda *a: loss(ker_fn, *a), argnums=(0, 1, 2)))(q, k, v)
    for name, a, r in zip("qkv", g, g_ref):
        assert_close_to_scale(a, r, f"d{name}")
    # the window matters: without it the same keys give another answer
    if window:
        wide = _kernel_fn(kernel, seg, pos, 0)(q, k, v)
        assert float(jnp.max(jnp.abs(wide - out) * real)) > 1e-2


@pytest.mark.gpu
def test_cudnn_kernel_on_gpu_matches_dot():
    """On a GPU, in bf16: the compiled program really calls cuDNN's fused attention, and its outputs
    and gradients stay within bf16 rounding of the float32 dot path on the same inputs."""
    b, t, h, kv, d = 2, 512, 8, 2, 64
    rng = np.random.default_rng(2)
    q, k, v = (jnp.asarray(rng.standard_normal((b, t, n, d)), jnp.bfloat16) for n in (h, kv, kv))
    seg, pos = packed_segments(b, t)
    real = jnp.asarray(seg > 0)[:, :, None, None]
    w = jnp.asarray(rng.standard_normal((b, t, h, d)), jnp.float32) * real
    ker_fn = _kernel_fn("cudnn", seg, pos, 0)
    ref_fn = lambda q, k, v: _dot(q, k, v, jnp.asarray(seg), jnp.asarray(pos), 0)  # noqa: E731
    hlo = jax.jit(ker_fn).lower(q, k, v).compile().as_text()
    assert "cudnn" in hlo.lower() and "fmha" in hlo.lower(), "no cuDNN fused attention in the compiled program"
    f32 = [x.astype(jnp.float32) for x in (q, k, v)]
    out, out_ref = jax.jit(ker_fn)(q, k, v).astype(jnp.float32), ref_fn(*f32)
    mask = np.broadcast_to(np.asarray(real), out.shape)
    np.testing.assert_allclose(np.asarray(out)[mask], np.asarray(out_ref)[mask], rtol=2e-2, atol=2e-2)
    loss = lambda fn, *a: jnp.sum(fn(*a).astype(jnp.float32) * w)  # noqa: E731
    g = jax.jit(jax.grad(lambda *a: loss(ker_fn, *a), argnums=(0, 1, 2)))(q, k, v)
    g_ref = jax.grad(lambda *a: loss(ref_fn, *a), argnums=(0, 1, 2))(*f32)
    for name, a, r in zip("qkv", g, g_ref):
        a, r = np.asarray(a, np.float32), np.asarray(r)
        err, scale = float(np.max(np.abs(a - r))), float(np.max(np.abs(r)))
        assert err <= 2e-2 * scale, f"d{name}: max error {err:.3g} > 2e-2 x scale {scale:.3g}"


@pytest.mark.parametrize("kernel", ["splash", "cudnn"])
def test_decoder_logits_and_parameter_gradients_match(kernel):
    batch = next(ToyCopyIterator(64, 2, 128, seed=4))
    dot_cfg, ker_cfg = tiny_model_config("dot").model, tiny_model_config(kernel).model
    params = Decoder(dot_cfg).init(jax.random.PRNGKey(0), batch["tokens"][:, :1])["params"]
    real = batch["segment_ids"] > 0

    def loss(cfg, p):
        logits, _ = Decoder(cfg).apply({"params": p}, batch["tokens"], batch["positions"], batch["segment_ids"])
        logp = jax.nn.log_softmax(logits)
        picked = jnp.take_along_axis(logp, batch["targets"][..., None], -1)[..., 0]
        return -jnp.sum(picked * batch["loss_weights"]), logits

    (l_ref, logits_ref), g_ref = jax.jit(jax.value_and_grad(lambda p: loss(dot_cfg, p), has_aux=True))(params)
    (l_ker, logits_ker), g_ker = jax.jit(jax.value_and_grad(lambda p: loss(ker_cfg, p), has_aux=True))(params)
    np.testing.assert_allclose(np.asarray(logits_ker)[real], np.asarray(logits_ref)[real], **TOL)
    np.testing.assert_allclose(l_ker, l_ref, rtol=1e-5)
    flat_ref = jax.tree_util.tree_leaves_with_path(g_ref)
    for (path, a), b in zip(flat_ref, jax.tree_util.tree_leaves(g_ker)):
        assert_close_to_scale(b, a, jax.tree_util.keystr(path))


def test_sharded_train_step_matches_dot():
    """data=2 x fsdp=2 x tensor=2, sliding window: the kernel runs per shard (shard_map), heads split
    on tensor; one AdamW step gives the same loss, gradient norm and new parameters."""
    mesh_kw = {"mesh.data": 2, "mesh.fsdp": 2, "mesh.tensor": 2, "model.sliding_window": 24}
    dot_cfg, ker_cfg = tiny_model_config("dot", **mesh_kw), tiny_model_config("splash", **mesh_kw)
    batch = next(ToyCopyIterator(64, 4, 128, seed=5))
    host = jax.device_get(Decoder(dot_cfg.model).init(jax.random.PRNGKey(1), batch["tokens"][:, :1])["params"])
    m_ref, p_ref = sharded_step(dot_cfg, host, batch)
    m_ker, p_ker = sharded_step(ker_cfg, host, batch)
    np.testing.assert_allclose(m_ker["loss"], m_ref["loss"], rtol=1e-5)
    np.testing.assert_allclose(m_ker["grad_norm"], m_ref["grad_norm"], rtol=1e-5)
    for a, b in zip(jax.tree_util.tree_leaves(p_ref), jax.tree_util.tree_leaves(p_ker)):
        np.testing.assert_allclose(b, a, **TOL)


def test_bad_settings_are_named():
    with pytest.raises(
        ConfigError,
        match=r"train.seq_len \(100\) must be a multiple of 128 for "
        r"model.attention_kernel=splash",
    ):
        tiny_model_config("splash", **{"train.seq_len": 100})
    with pytest.raises(
        ConfigError, match="model.attention_kernel: 'flash3' is not one of 'dot', 'splash', 'cudnn', 'blocked'"
    ):
        tiny_model_config("flash3")
    with pytest.raises(ValueError, match="sequence length 200 is not a multiple of 128"):
        block_size(200)
    assert [block_size(n) for n in (128, 384, 512, 4096)] == [128, 128, 512, 512]
    q = jnp.zeros((2, 128, 4, 16))
    k = jnp.zeros((2, 128, 2, 16))
    mesh = make_mesh(load_config(None, ["mesh.data=2", "mesh.tensor=4"]).mesh)
    rules = axis_rules({"length": ["tensor"], "heads": [], "kv_heads": []})
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules), pytest.raises(ValueError, match="shard `length`"):
        splash_attention(q, k, k, jnp.ones((2, 128), jnp.int32))
    rules = axis_rules({"kv_heads": []})
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules), pytest.raises(ValueError, match="`kv_heads` over"):
        splash_attention(q, k, k, jnp.ones((2, 128), jnp.int32))
