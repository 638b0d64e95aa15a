"""The vocabulary-chunked loss equals the plain one on full logits (values, gradients wrt the hidden
states and the head, z-loss, masked prompts, ragged last chunk, tied and untied heads, bf16), never
holds the full logits, and one train step with it equals one step without it, sharded or not."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mathjax_train.config import ConfigError, load_config
from mathjax_train.data.toy_copy import ToyCopyIterator
from mathjax_train.model import Decoder
from mathjax_train.model.decoder import head_kernel
from mathjax_train.train.loss import chunked_cross_entropy, weighted_cross_entropy
from mathjax_train.train.setup import build_step

B, T, E, V = 2, 12, 16, 100
KEYS = ("loss", "z_loss", "correct", "weight")


def _inputs(seed=0):
    k = jax.random.split(jax.random.PRNGKey(seed), 4)
    hidden = jax.random.normal(k[0], (B, T, E))
    kernel = jax.random.normal(k[1], (E, V)) * 0.5
    targets = jax.random.randint(k[2], (B, T), 0, V)
    weights = jnp.where(jnp.arange(T) < 4, 0.0, (jax.random.uniform(k[3], (B, T)) > 0.2).astype(jnp.float32))
    return hidden, kernel, targets, weights  # weights: a 4-token "prompt" and random padding masked


def _objective(loss_fn):
    def f(hidden, kernel, targets, weights):
        s = loss_fn(hidden, kernel, targets, weights)
        return s["loss"] + s["z_loss"], s

    return jax.grad(f, argnums=(0, 1), has_aux=True)


def _plain(hidden, kernel, targets, weights, z_loss=1e-2):
    return weighted_cross_entropy(jnp.einsum("bte,ev->btv", hidden, kernel), targets, weights, z_loss)


@pytest.mark.parametrize("chunk", [3, 7, 25, 32, 100, 512], ids=lambda c: f"chunk{c}")
def test_values_and_gradients_equal_the_full_logits(chunk):
    """25 divides 100; 3, 7 and 32 leave a padded last chunk; 100 and 512 are one chunk."""
    args = _inputs()
    (gh, gw), want = _objective(_plain)(*args)
    (ch, cw), got = _objective(lambda *a: chunked_cross_entropy(*a, 1e-2, chunk))(*args)
    for k in KEYS:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-6, err_msg=k)
    assert want["z_loss"] > 0 and 0 < want["weight"] < B * T
    np.testing.assert_allclose(ch, gh, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(cw, gw, rtol=1e-5, atol=1e-6)
    assert not np.any(gh[:, :4]) and not np.any(ch[:, :4])  # masked prompt tokens get no gradient


def test_accuracy_counts_hits_and_breaks_ties_as_argmax_does():
    hidden, kernel, _, weights = _inputs(1)
    kernel = kernel.at[:, 60:].set(kernel[:, 10:50])  # ids 60..99 tie with 10..49: argmax takes the lower
    targets = jnp.argmax(jnp.einsum("bte,ev->btv", hidden, kernel), axis=-1)
    targets = targets.at[0].set((targets[0] + 1) % V)  # row 0 misses, row 1 hits
    want, got = _plain(hidden, kernel, targets, weights), chunked_cross_entropy(hidden, kernel, targets, weights, 0, 7)
    assert got["correct"] == want["correct"] == jnp.sum(weights[1])


def test_bfloat16_hidden_states_give_the_plain_bfloat16_head():
    """The head casts the kernel to the hidden states' dtype, as the decoder's head does."""
    hidden, kernel, targets, weights = _inputs(2)
    hb = hidden.astype(jnp.bfloat16)
    (gh, gw), want = _objective(lambda h, w, t, m: _plain(h, w.astype(jnp.bfloat16), t, m))(
        hb, kernel, targets, weights
    )
    (ch, cw), got = _objective(lambda *a: chunked_cross_entropy(*a, 1e-2, 32))(hb, kernel, targets, weights)
    assert ch.dtype == jnp.bfloat16 and cw.dtype == jnp.float32
    for k in KEYS:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-6, err_msg=k)
    np.testing.assert_allclose(np.asarray(cw), np.asarray(gw), rtol=1e-2, atol=1e-3)  # a bf16 cotangent, rounded
    np.testing.assert_allclose(np.asarray(ch, np.float32), np.asarray(gh, np.float32), rtol=1e-2, atol=1e-3)


def test_the_backward_pass_never_holds_the_full_logits():
    b, t, e, v = 4, 64, 32, 8192
    shapes = (
        jax.ShapeDtypeStruct((b, t, e), jnp.float32),
        jax.ShapeDtypeStruct((e, v), jnp.float32),
        jax.ShapeDtypeStruct((b, t), jnp.int32),
        jax.ShapeDtypeStruct((b, t), jnp.float32),
    )

    def temp_bytes(fn):
        return jax.jit(_objective(fn)).lower(*shapes).compile().memory_analysis().temp_size_in_bytes

    logits_bytes = b * t * v * 4
    assert temp_bytes(_plain) >= 2 * logits_bytes
    assert temp_bytes(lambda *a: chunked_cross_entropy(*a, 1e-2, 512)) < logits_bytes / 2


@pytest.mark.parametrize("tied", [False, True], ids=["lm_head", "tied"])
def test_decoder_hidden_states_times_the_head_kernel_are_its_logits(tied):
    cfg = load_config(
        None,
        [
            "model.vocab_size=64",
            "model.hidden_size=32",
            "model.intermediate_size=64",
            "model.num_layers=1",
            "model.num_heads=4",
            "model.num_kv_heads=2",
            "model.dtype=float32",
            f"model.tie_embeddings={str(tied).lower()}",
        ],
    ).model
    model, tokens = Decoder(cfg), jnp.arange(24).reshape(2, 12)
    params = nn.unbox(jax.jit(model.init)(jax.random.PRNGKey(0), tokens)["params"])
    assert ("lm_head" in params) != tied
    apply = jax.jit(model.apply, static_argnames="return_hidden")
    logits, _ = apply({"params": params}, tokens)
    hidden, _ = apply({"params": params}, tokens, return_hidden=True)
    assert hidden.shape == (2, 12, 32)
    np.testing.assert_allclose(jnp.einsum("bte,ev->btv", hidden, head_kernel(params, cfg)), logits, rtol=1e-6)


def _setup(chunk, *extra, mesh=(1, 1, 1)):
    cfg = load_config(
        None,
        [
            "model.vocab_size=64",
            "model.hidden_size=64",
            "model.intermediate_size=128",
            "model.num_layers=2",
            "model.num_heads=8",
            "model.num_kv_heads=4",
            "model.dtype=float32",
            "train.batch_size=8",
            "train.seq_len=32",
            "train.z_loss=1e-3",
            "optimizer.learning_rate=1.0",
            "optimizer.eps=1.0",
            "optimizer.warmup_steps=0",
            f"train.loss_vocab_chunk={chunk}",
            *extra,
            *(f"mesh.{a}={n}" for a, n in zip(("data", "fsdp", "tensor"), mesh)),
        ],
    )
    return build_step(cfg, devices=jax.devices()[: int(np.prod(mesh))])


def _steps(setup, params, batches):
    """Run the step over `batches` from `params` (None: a fresh init); the final params and metrics."""
    state = setup.init_state(0, None if params is None else jax.device_put(params, setup.layout.param_shardings))
    with jax.set_mesh(setup.mesh):
        for batch in batches:
            state, m = setup.step(state, jax.device_put(batch, setup.batch_sharding))
    return jax.device_get(state["params"]), jax.device_get(m)


def _batches(n, seed):
    it = ToyCopyIterator(64, 8, 32, seed=seed)
    return [next(it) for _ in range(n)]


def _update_error(got, want, start) -> float:
    """The largest, over parameters, of max |got - want| / max |want - start|: update vs update."""
    errs = jax.tree_util.tree_map(lambda g, w, p: np.max(np.abs(g - w)) / np.max(np.abs(w - p)), got, want, start)
    return max(jax.tree_util.tree_leaves(errs))


def _compare_one_step(extra, mesh):
    """(metrics, params) of one plain step, one chunked step (on `mesh`), and their start params."""
    plain = _setup(0, *extra)
    params0, _ = _steps(plain, None, _batches(8, seed=1))  # a few steps in, so some predictions are right
    batch = _batches(1, seed=3)
    want_p, want = _steps(plain, params0, batch)
    got_p, got = _steps(_setup(24, *extra, mesh=mesh), params0, batch)  # 64 = 2 x 24 + a padded 16
    assert got["finite"] and 0 < want["accuracy"] < 1 and want["z_loss"] > 0
    for k in ("loss", "z_loss", "accuracy", "target_tokens"):
        np.testing.assert_allclose(got[k], want[k], rtol=1e-6, err_msg=k)
    return (want, want_p), (got, got_p), params0, batch


# optimizer.eps=1 makes Adam's update about lr x momentum, linear in the gradient: with the usual tiny eps,
# near-zero gradients are normalized to +-lr and float rounding would flip their updates.


def test_one_train_step_with_the_chunked_loss_equals_one_without():
    """float32, untied: the chunked loss on a data x fsdp x tensor mesh (lm_head's vocab split 4 ways)."""
    (want, want_p), (got, got_p), params0, _ = _compare_one_step((), (2, 1, 4))
    np.testing.assert_allclose(got["grad_norm"], want["grad_norm"], rtol=1e-5)
    assert _update_error(got_p, want_p, params0) < 1e-5


def test_in_bfloat16_the_chunked_step_is_as_close_as_bfloat16_itself():
    """bf16, tied: chunking rounds the hidden-state gradient once per chunk (then sums in float32), the
    plain head once; per parameter, that differs from the plain bf16 step by less than bf16 differs from
    float32. The gradient norm is held to one bf16 rounding step instead: a norm averages rounding errors
    away, so how far bf16's norm lands from float32's is chance (6e-5 relative on one 2-core CPU)."""
    extra = ("model.tie_embeddings=true", "model.dtype=bfloat16")
    (want, want_p), (got, got_p), params0, batch = _compare_one_step(extra, (1, 1, 1))
    f32_p, f32 = _steps(_setup(0, "model.tie_embeddings=true"), params0, batch)
    assert abs(got["grad_norm"] - want["grad_norm"]) < float(jnp.finfo(jnp.bfloat16).eps) * want["grad_norm"]
    assert _update_error(got_p, want_p, params0) < _update_error(want_p, f32_p, params0)


def test_the_chunk_setting_resolves_and_is_checked():
    train = load_config(None).train
    assert train.loss_vocab_chunk == -1
    assert (train.vocab_chunk(152064), train.vocab_chunk(128256), train.vocab_chunk(32000)) == (8192, 8192, 0)
    assert load_config(None, ["train.loss_vocab_chunk=0"]).train.vocab_chunk(152064) == 0
    assert load_config(None, ["train.loss_vocab_chunk=50000"]).train.vocab_chunk(32000) == 32000
    with pytest.raises(
        ConfigError,
        match=r"train.loss_vocab_chunk must be -1 \(auto\), 0 \(full logits\) or a chunk "
        r"size >= 1, got -2",
    ):
        load_config(None, ["train.loss_vocab_chunk=-2"])
    with pytest.raises(ConfigError, match="train.loss_vocab_chunk: expected an integer"):
        load_config(None, ["train.loss_vocab_chunk=big"])
