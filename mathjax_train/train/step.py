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
from mathjax_train.model.decoder import head_kernel
from mathjax_train.train.loss import chunked_cross_entropy, weighted_cross_entropy

SUM_KEYS = ("loss", "z_loss", "correct", "weight", "tokens")


def _sums(model, params, mb, z_loss, vocab_chunk):
    """(loss + z-loss, the sums) of one micro-batch; `vocab_chunk` > 0 never forms the full logits."""
    inputs = (mb["tokens"], mb["positions"], mb["segment_ids"])
    if vocab_chunk:
        hidden, _ = model.apply({"params": params}, *inputs, return_hidden=True)
        sums = chunked_cross_entropy(hidden, head_kernel(params, model.config), mb["targets"], mb["loss_weights"],
                                     z_loss, vocab_chunk)
    else:
        logits, _ = model.apply({"params": params}, *inputs)
        sums = weighted_cross_entropy(logits, mb["targets"], mb["loss_weights"], z_loss)
    sums["tokens"] = jnp.sum(mb["segment_ids"] > 0).astype(jnp.float32)
    return sums["loss"] + sums["z_loss"], sums


def make_train_step(cfg: Config, model_cfg, tx, schedule, layout, mesh, rules, batch_sharding):
    """Compile-ready step(state, batch) -> (state, metrics); the state buffers are donated."""
    model = Decoder(model_cfg)
    micro = cfg.train.microbatches
    z_loss = cfg.train.z_loss
    vocab_chunk = cfg.train.vocab_chunk(model_cfg.vocab_size)
    grad_fn = jax.grad(lambda p, mb: _sums(model, p, mb, z_loss, vocab_chunk), has_aux=True)

    def accumulate(params, batch):
        if micro == 1:
            return grad_fn(params, batch)
        rows = batch["tokens"].shape[0]
        # micro-batch m takes rows m, m + micro, ...: each stays spread over all batch shards
        split = {k: jnp.swapaxes(v.reshape(rows // micro, micro, *v.shape[1:]), 0, 1) for k, v in batch.items()}
        mb_sharding = NamedSharding(mesh, PartitionSpec(None, *batch_sharding.spec))
        split = jax.lax.with_sharding_constraint(split, mb_sharding)

        def body(carry, mb):
            g, s = grad_fn(params, mb)
            return jax.tree_util.tree_map(jnp.add, carry, (g, s)), None

        zeros = (jax.tree_util.tree_map(jnp.zeros_like, params), {k: jnp.zeros((), jnp.float32) for k in SUM_KEYS})
        (grads, sums), _ = jax.lax.scan(body, zeros, split)
        return grads, sums

    def step(state, batch):
        with nn.logical_axis_rules(rules):
            grads, sums = accumulate(state["params"], batch)
        denom = jnp.maximum(sums["weight"], 1.0)
        grads = jax.tree_util.tree_map(lambda g: g / denom, grads)
        grad_norm = optax.global_norm(grads)
        loss = sums["loss"] / denom
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        new = {"step": state["step"] + 1, "params": params, "opt_state": opt_state, "rng": state["rng"]}
        new = jax.tree_util.tree_map(lambda n, o: jnp.where(finite, n, o), new, state)
        metrics = {"loss": loss, "z_loss": sums["z_loss"] / denom, "accuracy": sums["correct"] / denom,
                   "grad_norm": grad_norm, "lr": schedule(state["step"]), "target_tokens": sums["weight"],
                   "tokens": sums["tokens"], "finite": finite}
        return new, metrics

    return jax.jit(step, in_shardings=(layout.shardings, batch_sharding),
                   out_shardings=(layout.shardings, NamedSharding(mesh, PartitionSpec())), donate_argnums=(0,))
