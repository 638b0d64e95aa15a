"""Gemma 3's config.json fields <-> ModelConfig (model_type gemma3_text; the text part of gemma3).

Gemma 3 alternates sliding-window ("sliding_attention") and global layers (`layer_types`), gives the two
kinds their own RoPE (`rope_parameters` per layer type), norms with 1 + weight, scales embeddings by
sqrt(hidden_size) and scores by query_pre_attn_scalar**-0.5, and uses a GeGLU MLP (gelu_pytorch_tanh).
"""

from __future__ import annotations

from typing import Any

from mathjax_train.config import ConfigError, ModelConfig

ACTIVATIONS = {"gelu_pytorch_tanh": "gelu_tanh"}  # HF hidden_activation -> ModelConfig.hidden_act
GEMMA3_SWITCHES = ("qk_norm", "embed_scale", "sandwich_norms", "norm_plus_one")  # all on for Gemma 3
DEFAULT_PATTERN = 6  # HF's sliding_window_pattern: every 6th layer is global when layer_types is absent


def text_config(hf: dict, source: str) -> dict:
    """The text model's config of a Gemma3ForConditionalGeneration config.json (model_type gemma3)."""
    text = hf.get("text_config")
    if not isinstance(text, dict):
        raise ConfigError(f"{source}: model_type 'gemma3' needs a text_config object; import a Gemma3ForCausalLM")
    text = dict(text)
    if text.setdefault("model_type", "gemma3_text") != "gemma3_text":
        raise ConfigError(f"{source}: field text_config.model_type={text['model_type']!r}; expected 'gemma3_text'")
    text.setdefault("tie_word_embeddings", hf.get("tie_word_embeddings", True))
    # Gemma3ForConditionalGeneration never soft-caps its logits, whatever text_config says (Gemma 3's is null)
    text["final_logit_softcapping"] = None
    return text


def gemma3_fields(hf: dict, source: str, rope) -> dict[str, Any]:
    """ModelConfig fields of a gemma3_text config.json; `rope(config, source)` reads a config's RoPE fields.
    What Gemma 3 allows but we do not implement is an error naming the field."""
    for key in ("attn_logit_softcapping",):
        if hf.get(key) is not None:
            raise ConfigError(f"{source}: field {key}={hf[key]!r} is not supported (attention soft-capping); only null")
    if hf.get("use_bidirectional_attention"):
        raise ConfigError(f"{source}: field use_bidirectional_attention=true is not supported; only causal attention")
    act = hf.get("hidden_activation", hf.get("hidden_act", "gelu_pytorch_tanh"))
    if act not in ACTIVATIONS:
        raise ConfigError(
            f"{source}: field hidden_activation={act!r} is not supported; supported: {', '.join(ACTIVATIONS)}"
        )
    n = int(hf["num_hidden_layers"])
    layer_types = hf.get("layer_types")
    if layer_types is None:
        pattern = int(hf.get("sliding_window_pattern") or DEFAULT_PATTERN)
        layer_types = ["sliding_attention" if (i + 1) % pattern else "full_attention" for i in range(n)]
    bad = [t for t in layer_types if t not in ("sliding_attention", "full_attention")]
    if bad:
        raise ConfigError(f"{source}: field layer_types has {bad[0]!r}; supported: sliding_attention, full_attention")
    params = hf.get("rope_parameters")
    if params is None or "full_attention" not in params:  # the legacy keys
        full = dict(hf.get("rope_scaling") or {})
        full["rope_theta"] = hf.get("rope_theta", 1_000_000.0)
        local = {"rope_type": "default", "rope_theta": hf.get("rope_local_base_freq", 10_000.0)}
    else:
        full, local = params["full_attention"], params.get("sliding_attention") or {"rope_type": "default"}
    theta, scaling = rope({"rope_parameters": full}, source)
    if local.get("rope_type", local.get("type", "default")) != "default":
        raise ConfigError(
            f"{source}: field rope_parameters.sliding_attention.rope_type={local.get('rope_type')!r} is not "
            "supported; the sliding layers' RoPE must be default"
        )
    cap = hf.get("final_logit_softcapping")
    head_dim = int(hf.get("head_dim") or 256)
    return dict(
        hidden_act=ACTIVATIONS[act],
        layer_types=list(layer_types),
        sliding_window=int(hf.get("sliding_window") or 0) if "sliding_attention" in layer_types else 0,
        rope_theta=theta,
        rope_scaling=scaling,
        rope_local_theta=float(local.get("rope_theta", 10_000.0)),
        query_pre_attn_scalar=float(hf.get("query_pre_attn_scalar") or head_dim),
        final_logit_softcapping=float(cap or 0.0),
        head_dim=head_dim,
        tie_embeddings=bool(hf.get("tie_word_embeddings", True)),
        **{k: True for k in GEMMA3_SWITCHES},
    )


def gemma3_to_hf(cfg: ModelConfig, rope: dict) -> dict[str, Any]:
    """The Gemma-3-only config.json fields for `cfg`; `rope` is the global layers' rope_parameters."""
    off = [k for k in GEMMA3_SWITCHES if not getattr(cfg, k)]
    if off or cfg.hidden_act != "gelu_tanh":
        raise ConfigError(f"model: gemma3_text export needs {', '.join(GEMMA3_SWITCHES)} on and hidden_act gelu_tanh")
    if cfg.qkv_bias != cfg.o_bias or cfg.mlp_bias:
        raise ConfigError("model: gemma3_text export needs qkv_bias == o_bias and no mlp_bias")
    if not cfg.rope_local_theta and cfg.rope_scaling.type != "none":
        raise ConfigError("model: gemma3_text export needs rope_local_theta when rope_scaling is set")
    windows = cfg.layer_windows()
    return {
        "hidden_activation": "gelu_pytorch_tanh",
        "layer_types": ["sliding_attention" if w else "full_attention" for w in windows],
        "sliding_window": cfg.sliding_window or None,
        "rope_parameters": {
            "full_attention": rope,
            "sliding_attention": {"rope_type": "default", "rope_theta": cfg.rope_local_theta or cfg.rope_theta},
        },
        "query_pre_attn_scalar": _int_if_whole(cfg.query_pre_attn_scalar or cfg.resolved_head_dim),
        "final_logit_softcapping": cfg.final_logit_softcapping or None,
        "attn_logit_softcapping": None,
        "attention_bias": cfg.qkv_bias,
        "use_bidirectional_attention": False,
    }


def _int_if_whole(x: float) -> float | int:
    """HF's Gemma3TextConfig types query_pre_attn_scalar as int: write whole values as one."""
    return int(x) if float(x).is_integer() else x


def gemma_only_fields(cfg: ModelConfig) -> list[str]:
    """The Gemma fields set on `cfg`, which other families' config.json cannot hold (export refuses them)."""
    fields = [k for k in GEMMA3_SWITCHES[1:] if getattr(cfg, k)]
    fields += [k for k in ("rope_local_theta", "query_pre_attn_scalar", "final_logit_softcapping") if getattr(cfg, k)]
    return fields + (["layer_types"] if cfg.layer_types else []) + (["hidden_act"] if cfg.hidden_act != "silu" else [])


# Gemma3ForConditionalGeneration's text tensors: language_model.model.* in the released checkpoints and as
# transformers 5.23 saves them, model.language_model.* as it names them in memory (either is read); the vision
# tower and projector have no place in a text model.
TEXT_PREFIXES = ("model.language_model.", "language_model.model.")


def text_tensor_name(name: str) -> str | None:
    """A multimodal Gemma 3 tensor's name in Gemma3ForCausalLM, or None for the vision tensors."""
    for prefix in TEXT_PREFIXES:
        if name.startswith(prefix):
            return "model." + name[len(prefix) :]
    if name in ("lm_head.weight", "language_model.lm_head.weight"):
        return "lm_head.weight"
    return None
