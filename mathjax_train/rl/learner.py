"""The learner's jitted programs: one policy update on a minibatch (the GRPO loss of rl/loss.py over
the decoder's per-token log-probabilities, clipping, and train/step.py's kind of guard: no update on
a non-finite loss or gradient) and the frozen reference's log-probabilities for the KL term."""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec

from mathjax_train.config import Config, RlConfig
from mathjax_train.model import Decoder
from mathjax_train.model.target import traced_for
from mathjax_train.parallel.mesh import make_mesh
from mathjax_train.rl.loss import grpo_loss, token_logprobs_and_entropy

MINIBATCH_KEYS = (
    "tokens",
    "targets",
    "positions",
    "segment_ids",
    "loss_mask",
    "old_logp",
    "advantages",
    "ref_logp",
    "is_weight",
)
EXACT_KEY = "exact_logp"  # with rl.exact_logprobs: infer/exact.py's log-probabilities at the update's parameters


def learner_devices(cfg: Config, devices=None) -> list:
    """The devices `rl`'s learner runs on, split by the run's mesh as SFT splits them: all of `devices` (default:
    every device of every host), or, on one host, the first data x fsdp x tensor of them when the mesh names
    every size (mesh.data=1: one device). `plan --rl` compiles for the same ones."""
    devices = list(jax.devices() if devices is None else devices)
    sizes = (cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor)
    if -1 not in sizes and math.prod(sizes) < len(devices) and jax.process_count() == 1:
        devices = devices[: math.prod(sizes)]
    make_mesh(cfg.mesh, devices)  # a mesh that does not fit the devices fails here, naming the axes
    return devices


def _forward(model, params, mb):
    logits, _ = model.apply({"params": params}, mb["tokens"], mb["positions"], mb["segment_ids"])
    return token_logprobs_and_entropy(logits, mb["targets"])


def make_update(model_cfg, rl: RlConfig, tx, layout, mesh, rules, batch_sharding, constant_len: int):
    """update(state, minibatch, bump) -> (state, metrics): one optimizer step; `bump` (0/1) advances
    state["step"], which counts RL steps (the optimizer counts its own updates). State donated."""
    model = Decoder(model_cfg)
    use_ref = rl.kl_coef > 0

    def loss_fn(params, mb):
        logp, entropy = _forward(model, params, mb)
        if rl.exact_logprobs:  # the exact program's values (infer/exact.py), exactly; the gradient of the forward's
            logp = mb[EXACT_KEY] + (logp - jax.lax.stop_gradient(logp))
        return grpo_loss(
            logp,
            mb["old_logp"],
            mb["advantages"],
            mb["loss_mask"],
            aggregation=rl.aggregation,
            clip_low=rl.clip_low,
            clip_high=rl.clip_high,
            ref_logp=mb["ref_logp"] if use_ref else None,
            kl_coef=rl.kl_coef,
            entropy=entropy,
            entropy_coef=rl.entropy_coef,
            constant_len=constant_len,
            is_weight=mb["is_weight"],
        )

    def update(state, mb, bump):
        with nn.logical_axis_rules(rules):
            (loss, m), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"], mb)
        grad_norm = optax.global_norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        # a minibatch with nothing to train (padding rows of a short dynamic-sampling batch) must not move
        # the weights on Adam's momentum alone
        apply = finite & (m["trained_tokens"] > 0)
        new = {"params": params, "opt_state": opt_state}
        new = jax.tree_util.tree_map(
            lambda n, o: jnp.where(apply, n, o), new, {"params": state["params"], "opt_state": state["opt_state"]}
        )
        new.update(step=state["step"] + bump, rng=state["rng"])
        metrics = {"loss": loss, "grad_norm": grad_norm, "finite": finite, **m}
        return new, metrics

    replicated = NamedSharding(mesh, PartitionSpec())
    return jax.jit(
        traced_for(mesh.devices.flat, update),
        in_shardings=(layout.shardings, batch_sharding, replicated),
        out_shardings=(layout.shardings, replicated),
        donate_argnums=(0,),
    )


def make_reference_logprobs(model_cfg, rules, mesh):
    """logp(params, batch) -> (rows, t) log-probabilities of the targets under `params`, no gradient: the frozen
    reference's for the KL term, and the policy's before a step's first update (rl/mismatch.py)."""
    model = Decoder(model_cfg)

    def fn(params, mb):
        with nn.logical_axis_rules(rules):
            return _forward(model, params, mb)[0]

    # whole on every device: every host reads all rows back
    return jax.jit(traced_for(mesh.devices.flat, fn), out_shardings=NamedSharding(mesh, PartitionSpec()))
