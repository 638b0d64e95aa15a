"""The mapping between HF tensor names and our parameter tree, with its transforms.

Every transform is a named function with a test: HF linear weights are (out, in) and ours are
(*in, *out) kernels, so conversion is a transpose and a reshape; RoPE uses the same half-split
layout on both sides, so no permutation of q/k rows is needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from mathjax_train.config import ModelConfig


def linear_to_kernel(w: np.ndarray, in_shape: tuple, out_shape: tuple) -> np.ndarray:
    """HF nn.Linear weight (out, in) -> our kernel (*in_shape, *out_shape)."""
    return w.T.reshape(*in_shape, *out_shape)


def kernel_to_linear(k: np.ndarray, n_in: int) -> np.ndarray:
    """Our kernel (*in, *out) -> HF nn.Linear weight (out, in)."""
    n_in_size = int(np.prod(k.shape[:n_in]))
    return k.reshape(n_in_size, -1).T


@dataclass(frozen=True)
class ParamSpec:
    """One HF tensor: where it goes in our tree (layer index or None) and how to transform it."""

    hf_name: str
    path: tuple[str, ...]  # path inside the layer subtree, or from the root for non-layer params
    layer: int | None
    hf_shape: tuple[int, ...]
    shape: tuple[int, ...]
    to_ours: Callable[[np.ndarray], np.ndarray]
    to_hf: Callable[[np.ndarray], np.ndarray]
    expert: int | None = None  # index along a stacked `expert` axis (after `layers`), for MoE experts


def stack_index(spec: ParamSpec, layer: int | None) -> tuple[int, ...]:
    """Where one HF tensor sits in its (possibly stacked) array: (layer?, expert?)."""
    return tuple(i for i in (layer, spec.expert) if i is not None)


def linear_spec(hf_name, path, layer, in_shape, out_shape) -> ParamSpec:
    """An HF nn.Linear weight (out, in) <-> our kernel (*in_shape, *out_shape)."""
    hf_shape = (int(np.prod(out_shape)), int(np.prod(in_shape)))
    return ParamSpec(
        hf_name,
        path,
        layer,
        hf_shape,
        tuple(in_shape) + tuple(out_shape),
        lambda w: linear_to_kernel(w, in_shape, out_shape),
        lambda k: kernel_to_linear(k, len(in_shape)),
    )


def _vector(hf_name, path, layer, shape) -> ParamSpec:
    hf_shape = (int(np.prod(shape)),)
    return ParamSpec(hf_name, path, layer, hf_shape, tuple(shape), lambda w: w.reshape(shape), lambda b: b.reshape(-1))


def param_specs(cfg: ModelConfig) -> list[ParamSpec]:
    """All tensors of an HF checkpoint for `cfg`, in a stable order."""
    e, h, kv, d, m, v = (
        cfg.hidden_size,
        cfg.num_heads,
        cfg.num_kv_heads,
        cfg.resolved_head_dim,
        cfg.intermediate_size,
        cfg.vocab_size,
    )
    specs = [
        ParamSpec(
            "model.embed_tokens.weight", ("embed_tokens", "embedding"), None, (v, e), (v, e), lambda w: w, lambda w: w
        )
    ]
    for i in range(cfg.num_layers):
        p = f"model.layers.{i}."
        for name, heads in (("q_proj", h), ("k_proj", kv), ("v_proj", kv)):
            specs.append(
                linear_spec(p + f"self_attn.{name}.weight", ("self_attn", name, "kernel"), i, (e,), (heads, d))
            )
            if cfg.qkv_bias:
                specs.append(_vector(p + f"self_attn.{name}.bias", ("self_attn", name, "bias"), i, (heads, d)))
        if cfg.qk_norm:
            for name in ("q_norm", "k_norm"):
                specs.append(_vector(p + f"self_attn.{name}.weight", ("self_attn", name, "scale"), i, (d,)))
        specs.append(linear_spec(p + "self_attn.o_proj.weight", ("self_attn", "o_proj", "kernel"), i, (h, d), (e,)))
        if cfg.o_bias:
            specs.append(_vector(p + "self_attn.o_proj.bias", ("self_attn", "o_proj", "bias"), i, (e,)))
        if cfg.num_experts:
            specs += _moe_specs(cfg, p, i)
        for name, fin, fout in () if cfg.num_experts else (("gate_proj", e, m), ("up_proj", e, m), ("down_proj", m, e)):
            specs.append(linear_spec(p + f"mlp.{name}.weight", ("mlp", name, "kernel"), i, (fin,), (fout,)))
            if cfg.mlp_bias:
                specs.append(_vector(p + f"mlp.{name}.bias", ("mlp", name, "bias"), i, (fout,)))
        norms: tuple[str, ...] = ("input_layernorm", "post_attention_layernorm")
        if cfg.sandwich_norms:  # Gemma: norm_plus_one keeps HF's stored weight, so these stay plain renames
            norms += ("pre_feedforward_layernorm", "post_feedforward_layernorm")
        for name in norms:
            specs.append(_vector(p + f"{name}.weight", (name, "scale"), i, (e,)))
    specs.append(_vector("model.norm.weight", ("norm", "scale"), None, (e,)))
    if not cfg.tie_embeddings:
        specs.append(linear_spec("lm_head.weight", ("lm_head", "kernel"), None, (e,), (v,)))
    return specs


# HF's per-expert module names (as checkpoints on the Hub and transformers' save_pretrained write them) -> ours
EXPERT_NAMES = {
    "qwen3_moe": ("mlp", {"gate_proj": "gate_proj", "up_proj": "up_proj", "down_proj": "down_proj"}),
    "mixtral": ("block_sparse_moe", {"gate_proj": "w1", "up_proj": "w3", "down_proj": "w2"}),
}


def _moe_specs(cfg: ModelConfig, prefix: str, layer: int) -> list[ParamSpec]:
    """Router `<block>.gate.weight` (experts, embed) and each expert's three projections, stacked along
    the `expert` axis of ours (mlp.experts.{gate,up,down}_proj: (expert, in, out))."""
    e, m = cfg.hidden_size, cfg.moe_intermediate_size
    block, names = EXPERT_NAMES[cfg.architecture]
    specs = [linear_spec(prefix + f"{block}.gate.weight", ("mlp", "gate", "kernel"), layer, (e,), (cfg.num_experts,))]
    for j in range(cfg.num_experts):
        for ours, fin, fout in (("gate_proj", e, m), ("up_proj", e, m), ("down_proj", m, e)):
            s = linear_spec(
                prefix + f"{block}.experts.{j}.{names[ours]}.weight", ("mlp", "experts", ours), layer, (fin,), (fout,)
            )
            specs.append(ParamSpec(s.hf_name, s.path, layer, s.hf_shape, s.shape, s.to_ours, s.to_hf, expert=j))
    return specs


def tree_path(spec: ParamSpec, scan_layers: bool) -> tuple[tuple[str, ...], int | None]:
    """Where `spec` lives in the param tree, and the index along the stacked `layers` axis if any."""
    if spec.layer is None:
        return spec.path, None
    if scan_layers:
        return ("layers",) + spec.path, spec.layer
    return (f"layers_{spec.layer}",) + spec.path, None


def get_path(tree: dict, path: tuple[str, ...]):
    for key in path:
        tree = tree[key]
    return tree


def set_path(tree: dict, path: tuple[str, ...], value) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value
