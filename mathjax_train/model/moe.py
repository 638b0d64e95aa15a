"""Mixture-of-experts feed-forward block (Qwen3-MoE, Mixtral): a float32 softmax router picks each token's
top-k experts; the experts are SwiGLU MLPs stored stacked along a leading `expert` axis and computed
dropless with `jax.lax.ragged_dot` over the token choices sorted by expert.

Parameter names follow transformers' in-memory layout (`mlp.gate`, `mlp.experts.{gate,up,down}_proj`), so
import is stacking per-expert tensors and transposing (convert/hf_params.py); Mixtral's `block_sparse_moe`
`w1/w3/w2` are renames of the same.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mathjax_train.config import ConfigError, ModelConfig
from mathjax_train.model.layers import DenseGeneral, dtype_of

EXPERT_PROJECTIONS = ("gate_proj", "up_proj", "down_proj")
AUX_LOSS, Z_LOSS = "moe_aux_loss", "router_z_loss"  # the names the losses are sown under ("intermediates")


def check_lora(cfg: ModelConfig, lora: Any) -> None:
    """LoRA adapters go on attention only in an MoE model: expert projections and int8 bases are refused."""
    if lora is None or not cfg.num_experts or not lora.enabled:
        return
    experts = [t for t in lora.targets if t in EXPERT_PROJECTIONS]
    if experts:
        raise ConfigError(
            f"lora.targets: {experts[0]} is an expert projection in this mixture-of-experts model "
            "(model.num_experts > 0); adapters are supported on q_proj, k_proj, v_proj, o_proj only"
        )
    if lora.quantize_base != "none":
        raise ConfigError("lora.quantize_base: int8 bases are not supported for mixture-of-experts models")


def route(logits: jax.Array, k: int, normalize: bool) -> tuple[jax.Array, jax.Array, jax.Array]:
    """float32 router logits (n, experts) -> (probs (n, experts), top-k weights (n, k), expert ids (n, k)).
    With `normalize` the top-k probabilities are divided by their sum (softmax over the top-k logits)."""
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    weights, ids = jax.lax.top_k(probs, k)
    if normalize:
        weights = weights / jnp.sum(weights, axis=-1, keepdims=True)
    return probs, weights, ids


def router_losses(logits, probs, ids, mask) -> tuple[jax.Array, jax.Array]:
    """(load-balancing loss, z-loss) over the tokens where `mask` (n,) is true.

    Load balancing as transformers computes it (Switch Transformer): experts * sum_e f_e P_e, with f_e the
    fraction of top-k assignments to expert e per token (sums to k) and P_e the mean router probability;
    z-loss: mean logsumexp(logits)^2 (ST-MoE). Both are 1 layer's; the train step averages layers."""
    n_exp = probs.shape[-1]
    m = mask.astype(jnp.float32)
    rows = jnp.maximum(jnp.sum(m), 1.0)
    counts = jnp.sum(jax.nn.one_hot(ids, n_exp, dtype=jnp.float32) * m[:, None, None], axis=(0, 1))
    mean_prob = jnp.sum(probs * m[:, None], axis=0) / rows
    aux = n_exp * jnp.sum((counts / rows) * mean_prob)
    z = jnp.sum(jnp.square(jax.nn.logsumexp(logits.astype(jnp.float32), axis=-1)) * m) / rows
    return aux, z


def expert_ffn(x, weights, ids, gate_w, up_w, down_w) -> jax.Array:
    """Dropless SwiGLU experts: x (n, embed), weights/ids (n, k), stacked kernels (experts, in, out).

    Each of the n * k token choices is sorted by expert, the groups go through `ragged_dot` (one matmul
    per expert over its contiguous rows), the rows are put back in token order, weighted and summed over k."""
    n, k = ids.shape
    n_exp = gate_w.shape[0]
    flat = ids.reshape(-1)
    order = jnp.argsort(flat, stable=True)
    sizes = jnp.bincount(flat, length=n_exp).astype(jnp.int32)
    xs = jnp.take(x, order // k, axis=0)
    h = nn.silu(jax.lax.ragged_dot(xs, gate_w, sizes)) * jax.lax.ragged_dot(xs, up_w, sizes)
    ys = jax.lax.ragged_dot(h, down_w, sizes)
    y = jnp.zeros_like(ys).at[order].set(ys, unique_indices=True).reshape(n, k, -1)
    return jnp.sum(y * weights[..., None].astype(y.dtype), axis=1)


class MoeBlock(nn.Module):
    """(batch, length, embed) -> same; `mask` (batch, length) marks the real tokens the router losses count.
    Sows the layer's load-balancing and z-losses into `intermediates` (AUX_LOSS, Z_LOSS)."""

    config: ModelConfig
    lora: Any = None

    @nn.compact
    def __call__(self, x, mask=None):
        cfg = self.config
        check_lora(cfg, self.lora)
        dt, pdt = dtype_of(cfg.dtype), dtype_of(cfg.param_dtype)
        b, t, e = x.shape
        n_exp, m = cfg.num_experts, cfg.moe_intermediate_size
        xf = x.reshape(b * t, e).astype(dt)
        router = DenseGeneral((n_exp,), ("embed", "expert"), dtype=dt, param_dtype=pdt, name="gate")
        logits = router(xf).astype(jnp.float32)
        probs, weights, ids = route(logits, cfg.num_experts_per_tok, cfg.norm_topk_prob)
        mask = jnp.ones((b * t,), bool) if mask is None else mask.reshape(b * t)
        aux, z = router_losses(logits, probs, ids, mask)
        self.sow("intermediates", AUX_LOSS, aux)
        self.sow("intermediates", Z_LOSS, z)

        experts = ExpertWeights(n_exp, e, m, pdt, name="experts")()
        y = expert_ffn(xf, weights.astype(dt), ids, *(w.astype(dt) for w in experts))
        return y.reshape(b, t, e)


class ExpertWeights(nn.Module):
    """The stacked expert kernels gate_proj, up_proj (expert, embed, mlp) and down_proj (expert, mlp, embed)."""

    num_experts: int
    embed: int
    mlp: int
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self):
        init = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal", in_axis=1, out_axis=2, batch_axis=0)
        up_shape, down_shape = (self.num_experts, self.embed, self.mlp), (self.num_experts, self.mlp, self.embed)
        return tuple(
            self.param(name, nn.with_logical_partitioning(init, axes), shape, self.param_dtype)
            for name, shape, axes in (
                ("gate_proj", up_shape, ("expert", "embed", "mlp")),
                ("up_proj", up_shape, ("expert", "embed", "mlp")),
                ("down_proj", down_shape, ("expert", "mlp", "embed")),
            )
        )


def layer_mean(intermediates, name: str) -> jax.Array:
    """The mean over layers of the loss sown as `name` (scanned layers sow a (layers,) array, unscanned layers a
    scalar each)."""
    found = []

    def visit(tree):
        for key, value in tree.items():
            if key == name:
                found.extend(jnp.ravel(jnp.asarray(v)) for v in value)
            elif isinstance(value, dict):
                visit(value)

    visit(dict(intermediates))
    if not found:
        raise ValueError(f"no {name} was sown: is this a mixture-of-experts model?")
    return jnp.mean(jnp.concatenate(found))
