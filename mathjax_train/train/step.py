"""One jitted optimizer step: micro-batch gradient accumulation, loss over target tokens only,
clipping, and a guard that leaves the state untouched when the loss or gradient is not finite."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec

from mathjax_train.config import Config
from mathjax_train.model import Decoder
from mathjax_train.model import lora as lora_params
from mathjax_train.model import moe
from mathjax_train.model.decoder import head_kernel
from mathjax_train.model.target import traced_for
from mathjax_train.train.loss import chunked_cross_entropy, weighted_cross_entropy

SUM_KEYS = ("loss", "z_loss", "correct", "weight", "tokens")
MOE_KEYS = (moe.AUX_LOSS, moe.Z_LOSS)  # with experts: the router losses, each micro-batch's times its weight


def _sums(model, params, mb, z_loss, vocab_chunk, rngs=None):
    """(objective, the sums) of one micro-batch; `vocab_chunk` > 0 never forms the full logits. The objective is
    CE + z-loss, plus for a mixture of experts the coefficients times the router losses (layer means, sown by
    model/moe.py) weighted by the micro-batch's target weight, so the step's one division makes them means."""
    cfg = model.config
    inputs = (mb["tokens"], mb["positions"], mb["segment_ids"])
    mutable = ["intermediates"] if cfg.num_experts else False
    if vocab_chunk:
        (hidden, _), state = _apply(model, params, inputs, rngs, mutable, return_hidden=True)
        sums = chunked_cross_entropy(
            hidden,
            head_kernel(params, cfg),
            mb["targets"],
            mb["loss_weights"],
            z_loss,
            vocab_chunk,
            cfg.final_logit_softcapping,
        )
    else:
        (logits, _), state = _apply(model, params, inputs, rngs, mutable)
        sums = weighted_cross_entropy(logits, mb["targets"], mb["loss_weights"], z_loss)
    sums["tokens"] = jnp.sum(mb["segment_ids"] > 0).astype(jnp.float32)
    objective = sums["loss"] + sums["z_loss"]
    if cfg.num_experts:
        for key, coef in zip(MOE_KEYS, (cfg.router_aux_loss_coef, cfg.router_z_loss_coef)):
            sums[key] = moe.layer_mean(state["intermediates"], key) * sums["weight"]
            objective = objective + coef * sums[key]
    return objective, sums


def _apply(model, params, inputs, rngs, mutable, **kwargs):
    """model.apply returning (output, collections); the collections are {} unless `mutable` names some."""
    if not mutable:
        return model.apply({"params": params}, *inputs, rngs=rngs, **kwargs), {}
    return model.apply({"params": params}, *inputs, rngs=rngs, mutable=mutable, **kwargs)


def make_train_step(
    cfg: Config, model_cfg, tx, schedule, layout, mesh, rules, batch_sharding, unroll_microbatches: bool = False
):
    """Compile-ready step(state, batch) -> (state, metrics); the state buffers are donated.
    `unroll_microbatches` writes the micro-batch loop out (plan's cost probes: XLA counts a loop body once).

    With LoRA (cfg.lora.rank > 0) gradients are taken for `params` (the adapters) only; the frozen
    `base` goes into the forward pass and comes out untouched."""
    lora = cfg.lora if cfg.lora.enabled else None
    model = Decoder(model_cfg, lora)
    micro = cfg.train.microbatches
    z_loss = cfg.train.z_loss
    vocab_chunk = cfg.train.vocab_chunk(model_cfg.vocab_size)
    dropout = lora is not None and lora.dropout > 0

    def loss_fn(trainable, frozen, mb, key):
        params = trainable if lora is None else lora_params.join(frozen, trainable)
        return _sums(model, params, mb, z_loss, vocab_chunk, {"dropout": key} if dropout else None)

    grad_fn = jax.grad(loss_fn, has_aux=True)

    def accumulate(params, frozen, batch, key):
        if micro == 1:
            return grad_fn(params, frozen, batch, key)
        rows = batch["tokens"].shape[0]
        # micro-batch m takes rows m, m + micro, ...: each stays spread over all batch shards
        split = {k: jnp.swapaxes(v.reshape(rows // micro, micro, *v.shape[1:]), 0, 1) for k, v in batch.items()}
        mb_sharding = NamedSharding(mesh, PartitionSpec(None, *batch_sharding.spec))
        split = jax.lax.with_sharding_constraint(split, mb_sharding)

        def body(carry, xs):
            mb, m = xs
            g, s = grad_fn(params, frozen, mb, jax.random.fold_in(key, m))
            return jax.tree_util.tree_map(jnp.add, carry, (g, s)), None

        keys = SUM_KEYS + (MOE_KEYS if model_cfg.num_experts else ())
        zeros = (jax.tree_util.tree_map(jnp.zeros_like, params), {k: jnp.zeros((), jnp.float32) for k in keys})
        (grads, sums), _ = jax.lax.scan(body, zeros, (split, jnp.arange(micro)), unroll=unroll_microbatches)
        return grads, sums

    def step(state, batch):
        key = jax.random.fold_in(state["rng"], state["step"])  # LoRA dropout's masks, reproducible on resume
        with nn.logical_axis_rules(rules):
            grads, sums = accumulate(state["params"], state.get("base"), batch, key)
        denom = jnp.maximum(sums["weight"], 1.0)
        grads = jax.tree_util.tree_map(lambda g: g / denom, grads)
        grad_norm = optax.global_norm(grads)
        loss = sums["loss"] / denom
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        new = {"step": state["step"] + 1, "params": params, "opt_state": opt_state, "rng": state["rng"]}
        new = jax.tree_util.tree_map(lambda n, o: jnp.where(finite, n, o), new, {k: state[k] for k in new})
        if "base" in state:
            new["base"] = state["base"]
        metrics = {
            "loss": loss,
            "z_loss": sums["z_loss"] / denom,
            "accuracy": sums["correct"] / denom,
            "grad_norm": grad_norm,
            "lr": schedule(state["step"]),
            "target_tokens": sums["weight"],
            "tokens": sums["tokens"],
            "finite": finite,
        }
        metrics.update({k: sums[k] / denom for k in MOE_KEYS if k in sums})
        return new, metrics

    return jax.jit(
        traced_for(mesh.devices.flat, step),  # kernels compile for the mesh's chips, whatever the host
        in_shardings=(layout.shardings, batch_sharding),
        out_shardings=(layout.shardings, NamedSharding(mesh, PartitionSpec())),
        donate_argnums=(0,),
    )
