"""The same batch gives the same loss and grad norm on every mesh; parameters carry the rules' specs."""

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from mathjax_train.config import MeshConfig, load_config
from mathjax_train.data.toy_copy import ToyCopyIterator
from mathjax_train.parallel.mesh import make_mesh, resolve_shape
from mathjax_train.parallel.rules import axis_rules
from mathjax_train.train.optimizer import make_optimizer
from mathjax_train.train.state import init_state, state_layout
from mathjax_train.train.setup import build_step
from mathjax_train.config import ConfigError

MESHES = [(1, 1, 1), (8, 1, 1), (2, 2, 2), (1, 2, 4)]


def _config(data, fsdp, tensor, microbatches=1):
    return load_config(
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
            f"train.microbatches={microbatches}",
            f"mesh.data={data}",
            f"mesh.fsdp={fsdp}",
            f"mesh.tensor={tensor}",
        ],
    )


def _one_step(cfg, host_params, batch):
    n = cfg.mesh.data * cfg.mesh.fsdp * cfg.mesh.tensor
    setup = build_step(cfg, devices=jax.devices()[:n])
    state = setup.init_state(0, jax.device_put(host_params, setup.layout.param_shardings))
    with jax.set_mesh(setup.mesh):
        new, m = setup.step(state, jax.device_put(batch, setup.batch_sharding))
    return new, jax.device_get(m), setup.layout


@pytest.fixture(scope="module")
def reference():
    cfg = _config(1, 1, 1)
    mesh = make_mesh(cfg.mesh, devices=jax.devices()[:1])
    tx, _ = make_optimizer(cfg.optimizer, cfg.train.steps)
    layout = state_layout(cfg.model, tx, mesh, axis_rules())
    host_params = jax.device_get(init_state(cfg.model, tx, layout, 0)["params"])
    batch = next(ToyCopyIterator(64, 8, 32, seed=3))
    _, m, _ = _one_step(cfg, host_params, batch)
    return host_params, batch, m


@pytest.mark.parametrize("shape", MESHES[1:], ids=[f"data{d}-fsdp{f}-tensor{t}" for d, f, t in MESHES[1:]])
def test_same_loss_and_grad_norm_on_every_mesh(reference, shape):
    host_params, batch, ref = reference
    new, m, layout = _one_step(_config(*shape), host_params, batch)
    np.testing.assert_allclose(m["loss"], ref["loss"], rtol=1e-5)
    np.testing.assert_allclose(m["grad_norm"], ref["grad_norm"], rtol=1e-5)
    assert m["target_tokens"] == ref["target_tokens"] > 0


def test_microbatching_matches_one_batch(reference):
    host_params, batch, ref = reference
    _, m, _ = _one_step(_config(2, 2, 2, microbatches=4), host_params, batch)
    np.testing.assert_allclose(m["loss"], ref["loss"], rtol=1e-5)
    np.testing.assert_allclose(m["grad_norm"], ref["grad_norm"], rtol=1e-5)


def test_parameters_carry_the_rule_specs(reference):
    host_params, batch, _ = reference
    new, _, layout = _one_step(_config(1, 2, 4), host_params, batch)
    p = new["params"]
    # scanned layers: leading `layers` axis is unsharded; embed -> fsdp; heads/mlp/vocab -> tensor
    assert p["layers"]["self_attn"]["q_proj"]["kernel"].sharding.spec == P(None, "fsdp", "tensor", None)
    assert p["layers"]["self_attn"]["o_proj"]["kernel"].sharding.spec == P(None, "tensor", None, "fsdp")
    assert p["layers"]["mlp"]["down_proj"]["kernel"].sharding.spec == P(None, "tensor", "fsdp")
    assert p["embed_tokens"]["embedding"].sharding.spec == P("tensor", "fsdp")
    assert p["lm_head"]["kernel"].sharding.spec == P("fsdp", "tensor")
    assert p["norm"]["scale"].sharding.spec == P("fsdp")
    # Adam moments follow their parameters
    mu = new["opt_state"][1][0].mu
    assert mu["layers"]["mlp"]["up_proj"]["kernel"].sharding.spec == P(None, "fsdp", "tensor")
    # each device holds 1/8 of an evenly split kernel: no host or device holds the full model
    k = p["layers"]["mlp"]["up_proj"]["kernel"]
    assert k.addressable_shards[0].data.size == k.size // 8


def test_rules_are_config(reference):
    host_params, batch, _ = reference
    cfg = _config(1, 2, 4)
    cfg.mesh.rules = {"mlp": ["fsdp", "tensor"], "embed": []}
    n = 8
    mesh = make_mesh(cfg.mesh, devices=jax.devices()[:n])
    tx, _ = make_optimizer(cfg.optimizer, cfg.train.steps)
    layout = state_layout(cfg.model, tx, mesh, axis_rules(cfg.mesh.rules))
    assert layout.param_shardings["layers"]["mlp"]["up_proj"]["kernel"].spec == P(None, None, ("fsdp", "tensor"))


def test_mesh_shapes_and_errors():
    assert resolve_shape(MeshConfig(data=-1, fsdp=2, tensor=2), 8) == (2, 1, 2, 2)
    assert resolve_shape(MeshConfig(data=2, fsdp=-1, tensor=1), 8) == (2, 1, 4, 1)
    with pytest.raises(ConfigError, match="not a multiple of 3"):
        resolve_shape(MeshConfig(data=-1, fsdp=3, tensor=1), 8)
    with pytest.raises(ConfigError, match="only one axis may be -1"):
        resolve_shape(MeshConfig(data=-1, fsdp=-1, tensor=1), 8)
    with pytest.raises(ConfigError, match="16 devices, but 8 are available"):
        resolve_shape(MeshConfig(data=4, fsdp=2, tensor=2), 8)
    with pytest.raises(ConfigError, match="unknown logical axis 'mlps'"):
        axis_rules({"mlps": ["tensor"]})


def test_indivisible_sharding_is_named():
    cfg = _config(1, 1, 8)  # 4 kv heads cannot split 8 ways
    mesh = make_mesh(cfg.mesh)
    tx, _ = make_optimizer(cfg.optimizer, 10)
    with pytest.raises(ConfigError, match=r"k_proj.*kernel.*mesh.rules"):
        state_layout(cfg.model, tx, mesh, axis_rules())
