"""Everything one train step needs, built from the config: mesh, rules, optimizer, state layout,
batch sharding and the jitted step. The trainer, `plan`'s ahead-of-time compile, the benchmarks
and the tests all build it here, so they compile the same step."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import jax

from mathjax_train.config import Config, ModelConfig
from mathjax_train.parallel.mesh import make_mesh
from mathjax_train.parallel.rules import axis_rules, batch_sharding
from mathjax_train.train.optimizer import make_optimizer
from mathjax_train.train.state import StateLayout, init_state, load_base, state_layout
from mathjax_train.train.step import make_train_step


@dataclass
class StepSetup:
    model_cfg: ModelConfig
    mesh: Any
    rules: tuple
    tx: Any
    schedule: Callable
    layout: StateLayout
    batch_sharding: Any
    step: jax.stages.Wrapped  # jitted step(state, batch) -> (state, metrics); state donated
    lora: Any = None  # the enabled LoraConfig of a LoRA run, else None

    def init_state(self, seed: int, params=None):
        """A fresh sharded state: random parameters from `seed`, or the given sharded `params` (LoRA:
        the frozen base from `load_base`)."""
        return init_state(self.model_cfg, self.tx, self.layout, seed, params, self.lora)

    def load_base(self, init_from):
        """LoRA: the frozen base from `init_from`, laid out as the state's `base`."""
        return load_base(init_from, self.model_cfg, self.lora, self.layout, self.mesh, self.rules)


def build_step(
    cfg: Config, model_cfg: ModelConfig | None = None, devices=None, unroll_microbatches: bool = False
) -> StepSetup:
    """The step for `cfg` (model from `model_cfg` when given) on `devices` (default: all); `unroll_microbatches`
    for plan's cost probes (train/step.py)."""
    model_cfg = model_cfg or cfg.model
    mesh = make_mesh(cfg.mesh, devices)
    rules = axis_rules(cfg.mesh.rules)
    tx, schedule = make_optimizer(cfg.optimizer, cfg.train.steps)
    lora = cfg.lora if cfg.lora.enabled else None
    layout = state_layout(model_cfg, tx, mesh, rules, lora)
    bsh = batch_sharding(mesh, rules)
    step = make_train_step(cfg, model_cfg, tx, schedule, layout, mesh, rules, bsh, unroll_microbatches)
    return StepSetup(model_cfg, mesh, rules, tx, schedule, layout, bsh, step, lora)
