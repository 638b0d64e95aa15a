"""The decoder family: LLaMA-2/3, Mistral, Qwen2, Qwen3 and tied-embedding models behind config switches.

Parameter names follow HF (`embed_tokens`, `layers`, `self_attn.q_proj`, `mlp.gate_proj`,
`self_attn.q_norm`, `input_layernorm`, `norm`, `lm_head`) so that conversion is renames, transposes and stacking.
With `scan_layers`, layer parameters are stacked under `layers` with a leading `layers` axis;
without it they live under `layers_0`, `layers_1`, ...
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import flax.linen as nn

from mathjax_train.config import ModelConfig
from mathjax_train.model.attention import Attention, PagedKernel, PagedKV
from mathjax_train.model.layers import PROJECTION, DenseGeneral, Embed, RMSNorm, dtype_of, softcap
from mathjax_train.model.moe import MoeBlock

_PROJECTIONS = jax.checkpoint_policies.save_only_these_names(PROJECTION)
# The projections' dots sit inside a custom VJP (layers.project) where a policy cannot see them: they are
# saved by name. Both dots policies save them (they have no batch dimensions); `dots` also saves the
# attention scores of the `dot` kernel (a dot with batch dimensions).
REMAT_POLICIES = {
    "full": None,
    "dots": jax.checkpoint_policies.save_from_both_policies(jax.checkpoint_policies.checkpoint_dots, _PROJECTIONS),
    "dots_with_no_batch_dims": jax.checkpoint_policies.save_from_both_policies(
        jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims, _PROJECTIONS
    ),
}


class MLP(nn.Module):
    config: ModelConfig
    lora: Any = None

    @nn.compact
    def __call__(self, x):
        cfg = self.config
        dt, pdt = dtype_of(cfg.dtype), dtype_of(cfg.param_dtype)
        dense = lambda n, feats, axes: DenseGeneral(  # noqa: E731
            (feats,), axes, use_bias=cfg.mlp_bias, dtype=dt, param_dtype=pdt, lora=self.lora, name=n
        )
        gate = dense("gate_proj", cfg.intermediate_size, ("embed", "mlp"))(x)
        up = dense("up_proj", cfg.intermediate_size, ("embed", "mlp"))(x)
        act = nn.silu(gate) if cfg.hidden_act == "silu" else nn.gelu(gate, approximate=True)
        h = nn.with_logical_constraint(act * up, ("batch", "length", "mlp"))
        return dense("down_proj", cfg.hidden_size, ("mlp", "embed"))(h)


class DecoderLayer(nn.Module):
    """Pre-norm block (with `sandwich_norms`, Gemma's: the attention and MLP outputs are normed too, and the
    MLP's input norm is `pre_feedforward_layernorm`). Call signature fits nn.scan: (carry=(x, cache), layer
    index) -> (carry, None); the cache (whole stack, or None) travels in the carry so its updates happen in place."""

    config: ModelConfig
    lora: Any = None
    paged_kernel: PagedKernel = "xla"

    @nn.compact
    def __call__(self, carry, layer, positions, segment_ids, kv):
        x, cache = carry
        cfg = self.config
        dt, pdt = dtype_of(cfg.dtype), dtype_of(cfg.param_dtype)
        norm = lambda n: RMSNorm(cfg.rms_norm_eps, dtype=dt, param_dtype=pdt, plus_one=cfg.norm_plus_one, name=n)  # noqa: E731
        h, cache = Attention(cfg, self.lora, self.paged_kernel, name="self_attn")(
            norm("input_layernorm")(x), positions, segment_ids, cache, kv, layer
        )
        if cfg.sandwich_norms:
            x = x + norm("post_attention_layernorm")(h)
            x = x + norm("post_feedforward_layernorm")(
                MLP(cfg, self.lora, name="mlp")(norm("pre_feedforward_layernorm")(x))
            )
        elif cfg.num_experts:
            x = x + h
            x = x + MoeBlock(cfg, self.lora, name="mlp")(norm("post_attention_layernorm")(x), segment_ids > 0)
        else:
            x = x + h
            x = x + MLP(cfg, self.lora, name="mlp")(norm("post_attention_layernorm")(x))
        x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
        return (x, cache), None


class Decoder(nn.Module):
    """tokens/positions/segment_ids (batch, length) -> float32 logits (batch, length, vocab).

    `cache` (optional) is a side buffer {"k", "v": (layers, kv_heads, batch, side_len, head_dim)} and
    `kv` (PagedKV) the read-only pages of earlier tokens: the call writes its tokens' keys and values
    into the side buffer at `kv.side_pos`, attends over pages and side buffer, and returns the updated
    side buffer (`kv_cache.flush_side` moves it into the pages). With the pallas kernel `cache` is
    {"pool": the ragged pool}, written in place and returned. `last` (batch,) computes logits only
    at those positions (prefill needs only its last token's), giving (batch, 1, vocab).
    `return_hidden` returns the final normed hidden states (batch, length, embed) in the compute dtype
    instead of logits, for a loss that applies the head itself (`head_kernel`, train/loss.py).
    `lora` (a LoraConfig, or None) gives the projections adapters and optionally an int8 base (model/lora.py).
    `paged_kernel` picks how attention reads the paged cache (model/attention.py: PagedKernel).
    """

    config: ModelConfig
    lora: Any = None
    paged_kernel: PagedKernel = "xla"

    @nn.compact
    def __call__(
        self,
        tokens,
        positions=None,
        segment_ids=None,
        cache=None,
        kv: PagedKV | None = None,
        last=None,
        return_hidden: bool = False,
    ):
        cfg = self.config
        dt, pdt = dtype_of(cfg.dtype), dtype_of(cfg.param_dtype)
        if positions is None:
            positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
        if segment_ids is None:
            segment_ids = jnp.ones_like(tokens)
        if (cache is None) != (kv is None):
            raise ValueError("Decoder: pass both `cache` and `kv`, or neither")
        embed = Embed(cfg.vocab_size, cfg.hidden_size, dtype=dt, param_dtype=pdt, name="embed_tokens")
        x = embed(tokens)
        if cfg.embed_scale:  # sqrt(hidden) rounded to the compute dtype first, as HF does
            x = x * jnp.asarray(cfg.hidden_size**0.5, dt)
        x = nn.with_logical_constraint(x, ("batch", "length", "embed"))

        names = () if cache is None else tuple(cache)  # {"k", "v"} side buffers, or the pallas {"pool"}
        layer_caches = None if cache is None else tuple(cache[n] for n in names)
        block = DecoderLayer
        if cfg.remat_policy != "none":
            block = nn.remat(DecoderLayer, policy=REMAT_POLICIES[cfg.remat_policy], prevent_cse=not cfg.scan_layers)
        carry = (x, layer_caches)
        if cfg.scan_layers:
            stack = nn.scan(
                block,
                variable_axes={"params": 0, "intermediates": 0},
                split_rngs={"params": True, "dropout": True},
                in_axes=(0, nn.broadcast, nn.broadcast, nn.broadcast),
                length=cfg.num_layers,
                metadata_params={nn.PARTITION_NAME: "layers"},
            )
            carry, _ = stack(cfg, self.lora, self.paged_kernel, name="layers")(
                carry, jnp.arange(cfg.num_layers), positions, segment_ids, kv
            )
        else:
            for i in range(cfg.num_layers):
                carry, _ = block(cfg, self.lora, self.paged_kernel, name=f"layers_{i}")(
                    carry, i, positions, segment_ids, kv
                )
        x, new_layer_caches = carry
        if last is not None:
            x = jnp.take_along_axis(x, jnp.asarray(last, jnp.int32)[:, None, None], axis=1)

        x = RMSNorm(cfg.rms_norm_eps, dtype=dt, param_dtype=pdt, plus_one=cfg.norm_plus_one, name="norm")(x)
        new_cache = None if new_layer_caches is None else dict(zip(names, new_layer_caches))
        if return_hidden:
            return nn.with_logical_constraint(x, ("batch", "length", "embed")), new_cache
        if cfg.tie_embeddings:
            logits = embed.attend(x)
        else:
            logits = DenseGeneral((cfg.vocab_size,), ("embed", "vocab"), dtype=dt, param_dtype=pdt, name="lm_head")(x)
        logits = softcap(logits.astype(jnp.float32), cfg.final_logit_softcapping)
        logits = nn.with_logical_constraint(logits, ("batch", "length", "vocab"))
        return logits, new_cache


def head_kernel(params, cfg: ModelConfig) -> jax.Array:
    """The output head as an (embed, vocab) matrix: `lm_head`'s kernel, or the tied embedding transposed."""
    if cfg.tie_embeddings:
        return params["embed_tokens"]["embedding"].T
    return params["lm_head"]["kernel"]
