"""The blocked kernel (query blocks over their causal prefix, window-cut) equals the dot path with the
full mask: outputs and gradients, alone (causal, packed with padding, sliding windows below and above
the block, grouped-query heads, bf16, sharded inputs) and inside the decoder. Its static key
skipping drops only keys the full mask hides. Float32 tolerances: attention_helpers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from attention_helpers import TOL, assert_close_to_scale, packed_segments, tiny_model_config
from mathjax_train.config import load_config
from mathjax_train.data.toy_copy import ToyCopyIterator
from mathjax_train.model import Decoder
from mathjax_train.model.attention import (
    attention_mask,
    blocked_attention,
    dot_product_attention,
    key_start,
    query_block,
    self_attention,
)
from mathjax_train.parallel.mesh import make_mesh

BF16_ULP = 2.0**-8  # spacing of bfloat16 numbers in [1, 2)


def _inputs(b, t, h, kv, d, dtype=jnp.float32, seed=1):
    rng = np.random.default_rng(seed)
    q, k, v = (jnp.asarray(rng.standard_normal((b, t, n, d)), dtype) for n in (h, kv, kv))
    return q, k, v, jnp.asarray(rng.standard_normal((b, t, h, d)), jnp.float32)


def _dot(seg, pos, window):
    slots = jnp.arange(seg.shape[1])
    mask = attention_mask(slots, slots, pos, pos, seg, seg, window)
    return lambda q, k, v: dot_product_attention(q, k, v, mask)


def _blocked(seg, pos, window, block):
    return lambda q, k, v: blocked_attention(q, k, v, seg, pos, sliding_window=window, block=block)


def _outputs_and_grads(fn, q, k, v, w):
    """Output and d(sum(out * w))/d(q, k, v), one compiled program; w is zero at padding queries,
    whose output nothing reads."""

    def run(q, k, v):
        out, pull = jax.vjp(fn, q, k, v)
        return out, pull((w * jnp.ones_like(out)).astype(out.dtype))

    return jax.jit(run)(q, k, v)


CASES = {  # b, t, h, kv, block, window, packed
    "causal_one_sequence": (2, 128, 4, 4, 32, 0, False),
    "packed_with_padding_gqa": (2, 128, 4, 2, 32, 0, True),
    "window_below_block": (2, 128, 4, 2, 32, 20, True),
    "window_above_block": (2, 128, 4, 2, 32, 45, True),
}


@pytest.mark.parametrize("case", CASES)
def test_blocked_matches_dot(case):
    b, t, h, kv, block, window, packed = CASES[case]
    q, k, v, w = _inputs(b, t, h, kv, 32)
    if packed:
        seg, pos = (jnp.asarray(x) for x in packed_segments(b, t, seed=3, lengths=(20, 60)))
        assert (seg == 0).any() and int(seg.max()) >= 2
    else:
        seg, pos = jnp.ones((b, t), jnp.int32), jnp.broadcast_to(jnp.arange(t), (b, t))
    real = (seg > 0)[:, :, None, None]
    out_ref, g_ref = _outputs_and_grads(_dot(seg, pos, window), q, k, v, w * real)
    out, g = _outputs_and_grads(_blocked(seg, pos, window, block), q, k, v, w * real)
    assert np.isfinite(np.asarray(out)).all()  # padding queries see no key: still no NaN
    mask = np.broadcast_to(np.asarray(real), out.shape)
    np.testing.assert_allclose(np.asarray(out)[mask], np.asarray(out_ref)[mask], **TOL)
    for name, a, r in zip("qkv", g, g_ref):
        assert_close_to_scale(a, r, f"d{name}")
    if window:  # keys were really skipped, and the window really binds
        assert key_start(t - block, block, window) > 0
        wide = _dot(seg, pos, 0)(q, k, v)
        assert float(jnp.max(jnp.abs(wide - out) * real)) > 1e-2


def test_bf16_within_rounding_of_dot():
    """Same bf16 inputs. Outputs: both paths round the same bf16 scores and the float32 softmax differs
    only in summation order, so at most a bf16 rounding flip of the probabilities and of the output:
    |blocked - dot| <= 2 ulp x max |v|. Gradients: the only extra rounding is summing the key/value
    gradients of the query blocks in bf16, so against the float32 truth the blocked path is at most
    2 ulp (of each tensor's scale) worse than the dot path."""
    b, t, h, kv, block, window = 2, 128, 4, 2, 32, 20
    q, k, v, w = _inputs(b, t, h, kv, 64, jnp.bfloat16, seed=2)
    seg, pos = (jnp.asarray(x) for x in packed_segments(b, t, seed=2, lengths=(20, 60)))
    w = w * (seg > 0)[:, :, None, None]
    f32 = [x.astype(jnp.float32) for x in (q, k, v)]
    out_true, g_true = _outputs_and_grads(_dot(seg, pos, window), *f32, w)
    out_dot, g_dot = _outputs_and_grads(_dot(seg, pos, window), q, k, v, w)
    out, g = _outputs_and_grads(_blocked(seg, pos, window, block), q, k, v, w)
    real = np.asarray(seg > 0)
    err = np.abs(np.asarray(out, np.float32) - np.asarray(out_dot, np.float32))[real].max()
    assert err <= 2 * BF16_ULP * float(jnp.max(jnp.abs(f32[2]))), err
    for name, a, d, r in zip("qkv", g, g_dot, g_true):
        a, d, r = (np.asarray(x, np.float32) for x in (a, d, r))
        scale = np.abs(r).max()
        assert np.abs(a - r).max() <= np.abs(d - r).max() + 2 * BF16_ULP * scale, name


def test_window_skip_drops_only_hidden_keys():
    """Every key before `key_start` is masked for every query of the block by the full mask, on
    packed rows (positions restart per example) and on one long sequence."""
    t = 512
    for seg, pos in [packed_segments(3, t, seed=5), (np.ones((1, t), np.int32), np.arange(t)[None])]:
        slots = jnp.arange(t)
        for window in (1, 30, 64, 100, 128, 200, 300):
            mask = np.asarray(attention_mask(slots, slots, pos, pos, seg, seg, window))
            for block in (64, 128):
                for q0 in range(0, t, block):
                    k0 = key_start(q0, block, window)
                    assert k0 % block == 0 and not mask[:, q0 : q0 + block, :k0].any(), (window, block, q0)
                    assert k0 == 0 or mask[:, q0 : q0 + block, k0 : q0 + block].any()  # and no more than that


def test_short_or_odd_lengths_take_the_dot_path():
    cfg = tiny_model_config("blocked", **{"model.sliding_window": 30}).model
    for t in (128, 200):  # one block, and not a multiple of one
        q, k, v, _ = _inputs(2, t, 4, 2, 16)
        seg, pos = jnp.ones((2, t), jnp.int32), jnp.broadcast_to(jnp.arange(t), (2, t))
        np.testing.assert_array_equal(self_attention(cfg, q, k, v, pos, seg), _dot(seg, pos, 30)(q, k, v))
    assert [query_block(t) for t in (256, 512, 2048, 4096, 8192, 3072)] == [128, 128, 128, 256, 512, 256]


def _decoder_loss(cfg, params, batch):
    logits, _ = Decoder(cfg).apply({"params": params}, batch["tokens"], batch["positions"], batch["segment_ids"])
    picked = jnp.take_along_axis(jax.nn.log_softmax(logits), batch["targets"][..., None], -1)[..., 0]
    return -jnp.sum(picked * batch["loss_weights"]), logits


def test_decoder_logits_and_parameter_gradients_match():
    """Three 128-blocks, packed rows, a window that lets the last block skip the first's keys."""
    batch = next(ToyCopyIterator(64, 2, 384, seed=4, max_len=60))
    kw = {"train.seq_len": 384, "model.sliding_window": 48}
    assert key_start(256, query_block(384), 48) == 128
    dot_cfg, blk_cfg = tiny_model_config("dot", **kw).model, tiny_model_config("blocked", **kw).model
    params = jax.jit(Decoder(dot_cfg).init)(jax.random.PRNGKey(0), batch["tokens"][:, :1])["params"]
    real = batch["segment_ids"] > 0
    run = lambda cfg: jax.jit(jax.value_and_grad(lambda p: _decoder_loss(cfg, p, batch), has_aux=True))(params)  # noqa: E731
    (l_ref, logits_ref), g_ref = run(dot_cfg)
    (l_blk, logits_blk), g_blk = run(blk_cfg)
    np.testing.assert_allclose(np.asarray(logits_blk)[real], np.asarray(logits_ref)[real], **TOL)
    np.testing.assert_allclose(l_blk, l_ref, rtol=1e-5)
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(g_ref), jax.tree_util.tree_leaves(g_blk)):
        assert_close_to_scale(b, a, jax.tree_util.keystr(path))


def test_sharded_inputs_give_the_same_outputs_and_gradients():
    """Batch split over data x fsdp and heads over tensor (as the default rules split activations):
    the blocked kernel partitions under the mesh and still equals the unsharded dot path."""
    b, t, h, kv, block, window = 4, 128, 4, 2, 32, 20
    q, k, v, w = _inputs(b, t, h, kv, 16, seed=6)
    seg, pos = (jnp.asarray(x) for x in packed_segments(b, t, seed=6, lengths=(20, 60)))
    w = w * (seg > 0)[:, :, None, None]
    out_ref, g_ref = _outputs_and_grads(_dot(seg, pos, window), q, k, v, w)
    mesh = make_mesh(load_config(None, ["mesh.data=2", "mesh.fsdp=2", "mesh.tensor=2"]).mesh)
    heads, rows = (
        NamedSharding(mesh, P(("data", "fsdp"), None, "tensor", None)),
        NamedSharding(mesh, P(("data", "fsdp"))),
    )
    q, k, v, w = (jax.device_put(x, heads) for x in (q, k, v, w))
    seg, pos = (jax.device_put(x, rows) for x in (seg, pos))
    with jax.set_mesh(mesh):
        out, g = _outputs_and_grads(_blocked(seg, pos, window, block), q, k, v, w)
    assert out.sharding.spec[2] == "tensor"
    real = np.broadcast_to(np.asarray(seg > 0)[:, :, None, None], out.shape)
    np.testing.assert_allclose(np.asarray(out)[real], np.asarray(out_ref)[real], **TOL)
    for name, a, r in zip("qkv", g, g_ref):
        assert_close_to_scale(a, r, f"d{name}")
