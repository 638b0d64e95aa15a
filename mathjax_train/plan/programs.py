"""Every program a recipe runs, built by the code that runs it and lowered for a set of devices (a TPU slice's,
from libtpu, or fake CPU devices) on abstract arguments: nothing is allocated. `plan --compile` compiles them.

- the train step (SFT, LoRA, QLoRA: train/setup.py's `build_step`);
- the sampling engine's prefill and decode chunks (infer/programs.py) at the engine's largest shapes, with its
  kernel, layout and tensor-parallel placement; generate, evaluate, rft, serve and rl all sample with them;
- rl's learner update and reference log-probabilities (rl/learner.py) over every chip, the hand-over of its
  parameters to the engines' layout (rl/reshard.py), and one host's engine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec

from mathjax_train.config import Config, MeshConfig, ModelConfig
from mathjax_train.data.batches import BATCH_DTYPES
from mathjax_train.infer.layout import decode_config, decode_params, unroll_by_default
from mathjax_train.infer.paged_kernels import KernelSpec, cache_arrays
from mathjax_train.infer.placement import Placement, is_placed
from mathjax_train.infer.programs import Programs, bucket
from mathjax_train.model.attention import PagedKernel
from mathjax_train.model.checkpoint import boxed_params
from mathjax_train.model.target import of_device
from mathjax_train.parallel.mesh import host_groups, make_mesh
from mathjax_train.parallel.rules import axis_rules, batch_sharding
from mathjax_train.plan.memory import local_bytes, rl_engine_pages

# the decode chunk's per-row inputs (infer/engine.py `_batch`)
ROW_DTYPES = {
    "last": np.int32,
    "length": np.int32,
    "active": np.bool_,
    "step": np.int32,
    "max_step": np.int32,
    "seed": np.uint32,
    "temperature": np.float32,
    "top_p": np.float32,
    "top_k": np.int32,
    "ignore_eos": np.bool_,
}
# rl's minibatch (rl/batch.py build_batch, plus the reference's log-probabilities and rl/mismatch.py's weights)
RL_DTYPES = {
    "tokens": np.int32,
    "targets": np.int32,
    "positions": np.int32,
    "segment_ids": np.int32,
    "loss_mask": np.float32,
    "old_logp": np.float32,
    "advantages": np.float32,
    "ref_logp": np.float32,
    "is_weight": np.float32,
    "exact_logp": np.float32,  # read only with rl.exact_logprobs
}


def _abstract(tree, shardings):
    return jax.tree_util.tree_map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), tree, shardings)


def _inputs(dtypes: dict, shape: tuple, sharding) -> dict:
    return {k: jax.ShapeDtypeStruct(shape, jnp.dtype(dt), sharding=sharding) for k, dt in dtypes.items()}


def train_step(cfg: Config, devices, model_cfg: ModelConfig | None = None, unroll_microbatches: bool = False):
    """The train step of `cfg` (its model, or `model_cfg`) on `devices` with the recipe's mesh and shardings."""
    from mathjax_train.train.setup import build_step

    setup = build_step(cfg, model_cfg, devices=devices, unroll_microbatches=unroll_microbatches)
    batch = _inputs(BATCH_DTYPES, (cfg.train.batch_size, cfg.train.seq_len), setup.batch_sharding)
    with jax.set_mesh(setup.mesh):
        return setup.step.lower(setup.layout.abstract, batch)


@dataclass(frozen=True)
class EngineShape:
    """The sizes an engine's programs are compiled at: its largest decode chunk (every slot) and prefill chunk."""

    slots: int
    pages: int
    page_size: int
    max_seq_len: int
    decode_steps: int
    prefill_budget: int
    kernel: PagedKernel  # infer/paged_kernels.py, resolved for the devices (its name: the shape travels as JSON)
    layers: str = "auto"  # engine.layers

    @property
    def pages_per_seq(self) -> int:
        return math.ceil(self.max_seq_len / self.page_size)


def engine_placement(devices) -> Placement:
    """The engine's placement on `devices` (one host's first T): infer/placement.py's layout. One device gets a
    mesh of one too (the running engine needs none there), so that Pallas lowers for the mesh's chip, not the
    host's default device."""
    devices = tuple(devices)
    return Placement(devices, make_mesh(MeshConfig(data=1, fsdp=1, tensor=len(devices)), list(devices)), axis_rules())


def engine_arrays(model: ModelConfig, shape: EngineShape, placement: Placement) -> tuple[dict, dict, ModelConfig]:
    """(decode params, KV cache, the decode config) as abstract arrays placed as the engine places them."""
    unroll = unroll_by_default(shape.layers, of_device(placement.devices[0]).platform)
    dcfg = decode_config(model, unroll)
    shapes = jax.eval_shape(lambda p: decode_params(p, model, unroll), nn.meta.unbox(boxed_params(model)))
    params = _abstract(shapes, placement.param_shardings(dcfg))
    cache_shapes = jax.eval_shape(
        lambda: cache_arrays(KernelSpec.of(shape.kernel), model, shape.pages, shape.page_size)
    )
    cache = _abstract(cache_shapes, placement.cache_shardings(cache_shapes))
    return params, cache, dcfg


def engine_programs(model: ModelConfig, shape: EngineShape, devices, params=None) -> dict:
    """{"prefill", "decode"}: the engine's chunks lowered at their largest shapes on `devices`. `params`: the
    abstract parameters the engine reads (default: the model's at model.param_dtype, laid out for decoding)."""
    placement = engine_placement(devices)
    own_params, cache, dcfg = engine_arrays(model, shape, placement)
    params = own_params if params is None else params
    programs = Programs(dcfg, list(model.eos_token_id), shape.decode_steps, KernelSpec.of(shape.kernel), placement)
    rep = placement.replicated()
    width = shape.pages_per_seq
    tokens = bucket(shape.prefill_budget, 1 << 30, 16)
    scalar = lambda dt: jax.ShapeDtypeStruct((1,), jnp.dtype(dt), sharding=rep)  # noqa: E731
    prefill = programs.lower(
        "prefill",
        params,
        cache,
        jax.ShapeDtypeStruct((1, tokens), jnp.int32, sharding=rep),
        scalar(np.int32),
        scalar(np.int32),
        jax.ShapeDtypeStruct((1, width), jnp.int32, sharding=rep),
    )
    s = shape.slots
    decode = programs.lower(
        "decode",
        params,
        cache,
        _inputs(ROW_DTYPES, (s,), rep),
        jax.ShapeDtypeStruct((s, width), jnp.int32, sharding=rep),
        {
            "steps": jax.ShapeDtypeStruct((), jnp.int32, sharding=rep),
            "exit_on_end": jax.ShapeDtypeStruct((), jnp.bool_, sharding=rep),
        },
    )
    return {"prefill": prefill, "decode": decode}


def rl_engine_shape(cfg: Config, model: ModelConfig, kernel: PagedKernel, hosts: int = 1) -> EngineShape:
    """The engine each host samples on (rl/rollout.py Sampler): rl.engine's settings, the slots and pages of
    plan/memory.py rl_engine_pages (one host's share of the groups), sequences of train.seq_len + 1 tokens."""
    eng = cfg.rl.engine
    slots, pages = rl_engine_pages(cfg, model, hosts)
    max_seq_len = min(cfg.train.seq_len + 1, model.max_position_embeddings)
    return EngineShape(
        slots, pages, eng.page_size, max_seq_len, eng.decode_steps, eng.prefill_budget, kernel, eng.layers
    )


def rl_engine_devices(cfg: Config, devices) -> tuple[list, int, int]:
    """(the first host's engine devices, the engine's T = rl.engine.tensor resolved for a host's devices, hosts)."""
    from mathjax_train.infer.placement import resolve_tensor

    hosts = host_groups(devices)
    tensor = resolve_tensor(cfg.rl.engine.tensor, cfg.model, len(hosts[0]))
    return hosts[0][:tensor], tensor, len(hosts)


def rl_programs(cfg: Config, devices, kernel: PagedKernel, only: str | None = None) -> tuple[dict, dict]:
    """rl's programs as `rl` lays them out on `devices` (a slice's chips), and the arrays that stay alive through a
    step, in bytes per chip of the first host's engine (the fullest chips):

    - "update", "reference": the learner's, over every device with the recipe's mesh (rl/learner.py
      `learner_devices`), on one minibatch of B x G / rl.minibatches rows split over the batch axes;
    - "reshard": the learner's parameters to the sampler layout (rl/reshard.py), absent when the learner's layout
      already is the engine's (one device: the engine reads the learner's arrays);
    - "prefill", "decode": one host's engine on its first T devices (rl.engine.tensor), its share of the slots.

    `only`: just that program. Live arrays: {"state", "params" (part of the state), "reference",
    "engine_params" (the reshard's output, the parameters / T), "kv_cache", "decode_copy" (what infer/layout.py
    remakes for decoding: a tied head's own matrix)}; "engine_tensor", "hosts" and "slots" say how it is laid out."""
    from mathjax_train.rl.learner import learner_devices, make_reference_logprobs, make_update
    from mathjax_train.rl.reshard import reshard_program, sampler_mesh, sampler_shardings
    from mathjax_train.train.optimizer import make_optimizer
    from mathjax_train.train.state import state_layout

    rl, model = cfg.rl, cfg.model
    devices = learner_devices(cfg, devices)
    mesh = make_mesh(cfg.mesh, devices)
    rules = axis_rules(cfg.mesh.rules)
    tx, _ = make_optimizer(cfg.optimizer, cfg.train.steps * rl.updates_per_batch * rl.minibatches)
    layout = state_layout(model, tx, mesh, rules)
    bsh = batch_sharding(mesh, rules)
    rows = rl.prompts_per_step * rl.group_size
    want = lambda name: only is None or only == name  # noqa: E731
    lowered = {}
    with jax.set_mesh(mesh):
        if want("update"):
            update = make_update(model, rl, tx, layout, mesh, rules, bsh, constant_len=rl.max_new_tokens)
            minibatch = _inputs(RL_DTYPES, (rows // rl.minibatches, cfg.train.seq_len), bsh)
            bump = jax.ShapeDtypeStruct((), jnp.int32, sharding=jax.sharding.NamedSharding(mesh, PartitionSpec()))
            lowered["update"] = update.lower(layout.abstract, minibatch, bump)
        if want("reference"):  # every step runs it for the policy's log-probabilities (rl/mismatch.py), the KL too
            batch = _inputs(  # rl/trainer.py takes them a minibatch at a time
                {k: RL_DTYPES[k] for k in ("tokens", "targets", "positions", "segment_ids")},
                (rows // rl.minibatches, cfg.train.seq_len),
                bsh,
            )
            lowered["reference"] = make_reference_logprobs(model, rules, mesh).lower(layout.abstract["params"], batch)

    engine_devices, tensor, hosts = rl_engine_devices(cfg, devices)
    shape = rl_engine_shape(cfg, model, kernel, hosts)
    placement = engine_placement(engine_devices)
    decode_shapes, cache, _ = engine_arrays(model, shape, placement)
    params = layout.abstract["params"]
    in_place = is_placed(params, placement.param_shardings(model))
    if not in_place and want("reshard"):
        target = sampler_shardings(model, sampler_mesh(tensor, devices), placement.rules)
        lowered["reshard"] = reshard_program(layout.param_shardings, target).lower(params)
    engine = [n for n in ("prefill", "decode") if want(n)]
    if engine:
        built = engine_programs(model, shape, placement.devices, params=decode_shapes)
        lowered.update({n: built[n] for n in engine})
    engine_params = 0 if in_place else local_bytes(_abstract(params, placement.param_shardings(model)))
    live = {
        "state": local_bytes(layout.abstract),
        "params": local_bytes(params),
        "reference": local_bytes(params) if rl.kl_coef > 0 else 0,
        "engine_params": engine_params,
        "kv_cache": local_bytes(cache),
        "decode_copy": local_bytes({k: v for k, v in decode_shapes.items() if k not in params}),
    }
    return lowered, {**live, "engine_tensor": tensor, "hosts": hosts, "slots": shape.slots, "pages": shape.pages}


LIVE_BYTES = ("state", "reference", "engine_params", "kv_cache", "decode_copy")  # "params" is part of "state"


def rl_arguments(live: dict) -> dict:
    """Bytes of the live arrays each rl program counts itself (its arguments; the reshard's output too): the
    others stay alive beside it. The engine reads the reshard's output, or the learner's parameters in place."""
    engine = (live["engine_params"] or live["params"]) + live["decode_copy"] + live["kv_cache"]
    return {
        "update": live["state"],
        "reference": live["reference"],
        "reshard": live["params"] + live["engine_params"],
        "prefill": engine,
        "decode": engine,
    }


__all__ = [
    "EngineShape",
    "engine_arrays",
    "engine_placement",
    "engine_programs",
    "rl_arguments",
    "rl_engine_devices",
    "rl_engine_shape",
    "rl_programs",
    "train_step",
]
