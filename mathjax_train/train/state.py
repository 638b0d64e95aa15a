"""The train state ({step, params, opt_state, rng}) and its shardings, created directly sharded.

Parameters and optimizer state are initialised inside one jit whose out_shardings come from the
logical-axis rules, so no host ever materialises the full model.
"""

from __future__ import annotations

from dataclasses import dataclass

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec

from mathjax_train.config import ModelConfig
from mathjax_train.model import Decoder
from mathjax_train.model import checkpoint as model_ckpt
from mathjax_train.model import lora as lora_params
from mathjax_train.parallel.rules import check_divisible, logical_shardings


@dataclass
class StateLayout:
    """Abstract shapes and shardings of the train state for one model, optimizer and mesh."""

    abstract: dict  # ShapeDtypeStructs
    shardings: dict  # NamedShardings, same tree
    param_shardings: dict


def state_layout(model_cfg: ModelConfig, tx: optax.GradientTransformation, mesh, rules, lora=None) -> StateLayout:
    """With `lora` (an enabled LoraConfig) `params` holds only the adapters, which alone get optimizer
    state, and the frozen base sits under `base`."""
    boxed = model_ckpt.boxed_params(model_cfg, lora)
    frozen = None
    if lora is not None:
        boxed, frozen = lora_params.split(boxed)
    param_shardings = logical_shardings(boxed, mesh, rules)
    params = nn.meta.unbox(boxed)
    check_divisible(params, param_shardings)
    replicated = NamedSharding(mesh, PartitionSpec())
    opt_abstract = jax.eval_shape(tx.init, params)
    opt_shardings = optax.tree_map_params(
        tx,
        lambda _, sh: sh,
        opt_abstract,
        param_shardings,
        transform_non_params=lambda _: replicated,
        is_leaf=lambda x: isinstance(x, NamedSharding),
    )
    rng = jax.eval_shape(lambda: jax.random.PRNGKey(0))
    abstract = {"step": jax.ShapeDtypeStruct((), jnp.int32), "params": params, "opt_state": opt_abstract, "rng": rng}
    shardings = {"step": replicated, "params": param_shardings, "opt_state": opt_shardings, "rng": replicated}
    if frozen is not None:
        shardings["base"] = logical_shardings(frozen, mesh, rules)
        abstract["base"] = nn.meta.unbox(frozen)
        check_divisible(abstract["base"], shardings["base"])
    abstract = jax.tree_util.tree_map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings
    )
    return StateLayout(abstract, shardings, param_shardings)


def init_state(model_cfg: ModelConfig, tx, layout: StateLayout, seed: int, params=None, lora=None):
    """A fresh state: random parameters from `seed`, or the given (already sharded) `params`. With
    `lora`, `params` is the frozen base (load_base) and the adapters start at A random, B zero."""
    model = Decoder(model_cfg, lora)

    def build(key, given):
        init_key, rng = jax.random.split(key)
        p = (
            None
            if given is not None and lora is None
            else nn.meta.unbox(model.init(init_key, jnp.zeros((1, 1), jnp.int32)))["params"]
        )
        state = {"step": jnp.zeros((), jnp.int32), "rng": rng}
        if lora is not None:  # the base's random init is unused, so XLA drops it
            p, state["base"] = lora_params.split(p)[0], given
        else:
            p = given if given is not None else p
        return dict(state, params=p, opt_state=tx.init(p))

    fn = jax.jit(build, out_shardings=layout.shardings, static_argnums=() if params is not None else (1,))
    return fn(jax.random.PRNGKey(seed), params)


def load_base(init_from, model_cfg: ModelConfig, lora, layout: StateLayout, mesh, rules):
    """A LoRA run's frozen base from `init_from`, sharded as the layout's `base`: the checkpoint as is,
    or quantized to int8 on the devices (`lora.quantize_base`)."""
    plain_shardings = logical_shardings(model_ckpt.boxed_params(model_cfg), mesh, rules)
    plain = model_ckpt.load_params(init_from, model_cfg, plain_shardings)
    if lora.quantize_base == "none":
        return plain
    like = layout.abstract["base"]
    return jax.jit(
        lambda p: lora_params.quantize_base(p, like), out_shardings=layout.shardings["base"], donate_argnums=0
    )(plain)
