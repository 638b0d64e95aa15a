"""The engine's parameter layout (infer/layout.py): an untied copy of a tied head gives the tied model's logits,
and an untied model is passed through as it is."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mathjax_train.config import ModelConfig
from mathjax_train.infer.layout import decode_config, decode_params, unroll_by_default
from mathjax_train.model import Decoder

TIED = ModelConfig(
    vocab_size=300, hidden_size=64, intermediate_size=96, num_layers=2, num_heads=4, num_kv_heads=2,
    tie_embeddings=True, dtype="float32",
)  # fmt: skip


def test_an_untied_copy_of_a_tied_head_gives_the_same_logits():
    tokens = jnp.asarray(np.random.RandomState(0).randint(0, 300, (2, 7)), jnp.int32)
    params = nn.unbox(Decoder(TIED).init(jax.random.PRNGKey(0), tokens)["params"])
    assert "lm_head" not in params
    want, _ = Decoder(TIED).apply({"params": params}, tokens)
    cfg, laid = decode_config(TIED, unroll=False), decode_params(params, TIED, unroll=False)
    assert not cfg.tie_embeddings and laid["lm_head"]["kernel"].shape == (64, 300)
    np.testing.assert_array_equal(
        np.asarray(laid["lm_head"]["kernel"]), np.asarray(params["embed_tokens"]["embedding"]).T
    )
    got, _ = Decoder(cfg).apply({"params": laid}, tokens)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)
    assert laid["embed_tokens"] is params["embed_tokens"]  # the table itself is not copied


def test_an_untied_model_is_passed_through():
    cfg = dataclasses.replace(TIED, tie_embeddings=False)
    params = nn.unbox(Decoder(cfg).init(jax.random.PRNGKey(0), jnp.zeros((1, 3), jnp.int32))["params"])
    assert decode_config(cfg, unroll=False) is cfg and decode_params(params, cfg, unroll=False) == params


def test_unrolled_layers_give_the_scanned_models_logits():
    tokens = jnp.asarray(np.random.RandomState(1).randint(0, 300, (2, 9)), jnp.int32)
    scanned = dataclasses.replace(TIED, scan_layers=True)
    params = nn.unbox(Decoder(scanned).init(jax.random.PRNGKey(2), tokens)["params"])
    assert params["layers"]["mlp"]["up_proj"]["kernel"].shape[0] == 2  # stacked
    want, _ = Decoder(scanned).apply({"params": params}, tokens)
    cfg, laid = decode_config(scanned, unroll=True), decode_params(params, scanned, unroll=True)
    assert not cfg.scan_layers and "layers" not in laid and {"layers_0", "layers_1"} <= set(laid)
    np.testing.assert_array_equal(
        np.asarray(laid["layers_1"]["mlp"]["up_proj"]["kernel"]),
        np.asarray(params["layers"]["mlp"]["up_proj"]["kernel"][1]),
    )
    got, _ = Decoder(cfg).apply({"params": laid}, tokens)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)
    assert unroll_by_default("auto", "cpu") and not unroll_by_default("auto", "tpu")
    assert not unroll_by_default("scan", "cpu") and unroll_by_default("unroll", "tpu")
