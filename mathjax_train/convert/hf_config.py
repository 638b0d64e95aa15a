"""HF `config.json` <-> ModelConfig. Unsupported or missing fields are errors naming the file."""

from __future__ import annotations

import json
from typing import Any

from mathjax_train.config import ConfigError, ModelConfig, RopeScaling
from mathjax_train.convert import hf_gemma

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3", "qwen3_moe", "mixtral", "gemma3_text", "gemma3")
HF_ARCHITECTURES = {
    "gemma3_text": "Gemma3ForCausalLM",
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "qwen3_moe": "Qwen3MoeForCausalLM",
    "mixtral": "MixtralForCausalLM",
}
SLIDING = ("mistral", "mixtral")  # model types whose sliding_window applies to every layer
QK_NORM = ("qwen3", "qwen3_moe")
REQUIRED = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")


def _ids(value: Any) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in (value if isinstance(value, list) else [value])]


def _rope(hf: dict, source: str) -> tuple[float, RopeScaling]:
    """Read RoPE settings from either `rope_parameters` (transformers 5) or legacy keys."""
    params = hf.get("rope_parameters")
    if params is None:
        params = dict(hf.get("rope_scaling") or {})
        params.setdefault("rope_theta", hf.get("rope_theta", 10000.0))
    kind = params.get("rope_type", params.get("type", "default"))
    theta = float(params.get("rope_theta", hf.get("rope_theta", 10000.0)))
    if kind == "default":
        return theta, RopeScaling()
    if kind == "linear":
        return theta, RopeScaling(type="linear", factor=float(params["factor"]))
    if kind == "llama3":
        try:
            return theta, RopeScaling(
                type="llama3",
                factor=float(params["factor"]),
                low_freq_factor=float(params["low_freq_factor"]),
                high_freq_factor=float(params["high_freq_factor"]),
                original_max_position_embeddings=int(params["original_max_position_embeddings"]),
            )
        except KeyError as e:
            raise ConfigError(f"{source}: field rope_parameters.{e.args[0]} is required for rope_type llama3") from None
    raise ConfigError(f"{source}: field rope_type={kind!r} is not supported; supported: default, linear, llama3")


def _moe_fields(hf: dict, model_type: str, source: str) -> dict[str, Any]:
    """ModelConfig's mixture-of-experts fields from a qwen3_moe or mixtral config; {} for dense types.
    Layouts with some dense layers (qwen3_moe decoder_sparse_step > 1, mlp_only_layers) are refused."""
    if model_type == "qwen3_moe":
        if int(hf.get("decoder_sparse_step") or 1) != 1:
            raise ConfigError(
                f"{source}: field decoder_sparse_step={hf['decoder_sparse_step']} (some dense layers) is not "
                "supported; only 1"
            )
        if hf.get("mlp_only_layers"):
            raise ConfigError(
                f"{source}: field mlp_only_layers={hf['mlp_only_layers']} (dense layers) is not supported; only []"
            )
        # Hub checkpoints (Qwen3-30B-A3B) write num_experts; transformers 5 writes it as num_local_experts
        experts = hf.get("num_experts") or hf.get("num_local_experts") or 0
        for key, value in (("num_experts", experts), ("moe_intermediate_size", hf.get("moe_intermediate_size"))):
            if not value:
                raise ConfigError(f"{source}: required field {key!r} is missing")
        return dict(
            num_experts=int(experts),
            moe_intermediate_size=int(hf["moe_intermediate_size"]),
            norm_topk_prob=bool(hf.get("norm_topk_prob", False)),
            num_experts_per_tok=int(hf.get("num_experts_per_tok", 8)),
            router_aux_loss_coef=float(hf.get("router_aux_loss_coef") or 0.0),
        )
    if model_type == "mixtral":
        if float(hf.get("router_jitter_noise") or 0.0):
            raise ConfigError(
                f"{source}: field router_jitter_noise={hf['router_jitter_noise']} is not supported; only 0"
            )
        if not hf.get("num_local_experts"):
            raise ConfigError(f"{source}: required field 'num_local_experts' is missing")
        return dict(
            num_experts=int(hf["num_local_experts"]),
            moe_intermediate_size=int(hf["intermediate_size"]),
            norm_topk_prob=True,
            num_experts_per_tok=int(hf.get("num_experts_per_tok", 2)),
            router_aux_loss_coef=float(hf.get("router_aux_loss_coef") or 0.0),
        )
    return {}


def model_config_from_hf(hf: dict, source: str = "config.json", generation: dict | None = None) -> ModelConfig:
    """Map an HF config dict to ModelConfig; `generation` (generation_config.json) may add EOS ids."""
    model_type = hf.get("model_type")
    if model_type == "gemma3":  # Gemma3ForConditionalGeneration: its text model (import_hf maps the tensors)
        hf, model_type = hf_gemma.text_config(hf, source), "gemma3_text"
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ConfigError(
            f"{source}: field model_type={model_type!r} is not supported; supported: {', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    for key in REQUIRED:
        if hf.get(key) is None:
            raise ConfigError(f"{source}: required field {key!r} is missing")
    act = hf.get("hidden_act", "silu")
    if act not in ("silu", "swish") and model_type != "gemma3_text":
        raise ConfigError(f"{source}: field hidden_act={act!r} is not supported; supported: silu")
    sliding = 0
    if model_type in SLIDING:
        sliding = int(hf.get("sliding_window") or 0)
    if model_type in ("qwen2", "qwen3", "qwen3_moe") and hf.get("use_sliding_window"):
        raise ConfigError(
            f"{source}: field use_sliding_window=true is not supported for {model_type} "
            "(per-layer windows); only full attention"
        )
    layer_types = hf.get("layer_types")
    if layer_types and any(t != "full_attention" for t in layer_types) and model_type not in (*SLIDING, "gemma3_text"):
        raise ConfigError(f"{source}: field layer_types has non-full attention layers; not supported")
    gemma = hf_gemma.gemma3_fields(hf, source, _rope) if model_type == "gemma3_text" else {}
    theta, scaling = gemma.pop("rope_theta", None), gemma.pop("rope_scaling", None)
    if theta is None:
        theta, scaling = _rope(hf, source)
    heads = int(hf["num_attention_heads"])
    attn_bias = bool(hf.get("attention_bias", False))
    eos = _ids(hf.get("eos_token_id"))
    if generation:
        eos += [i for i in _ids(generation.get("eos_token_id")) if i not in eos]
    fields: dict[str, Any] = dict(
        architecture=model_type,
        vocab_size=int(hf["vocab_size"]),
        hidden_size=int(hf["hidden_size"]),
        intermediate_size=int(hf["intermediate_size"]),
        num_layers=int(hf["num_hidden_layers"]),
        num_heads=heads,
        num_kv_heads=int(hf.get("num_key_value_heads") or heads),
        head_dim=int(hf.get("head_dim") or 0),
        max_position_embeddings=int(hf.get("max_position_embeddings", 4096)),
        rope_theta=theta,
        rope_scaling=scaling,
        rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        qkv_bias=True if model_type == "qwen2" else attn_bias,
        o_bias=False if model_type == "qwen2" else attn_bias,
        mlp_bias=bool(hf.get("mlp_bias", False)),
        qk_norm=model_type in QK_NORM,
        sliding_window=sliding,
        bos_token_id=hf.get("bos_token_id"),
        eos_token_id=eos,
        pad_token_id=hf.get("pad_token_id"),
        **_moe_fields(hf, model_type, source),
    )
    cfg = ModelConfig(**{**fields, **gemma})
    if cfg.head_dim == cfg.hidden_size // cfg.num_heads:
        cfg.head_dim = 0
    try:
        cfg.validate("model")
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    return cfg


def model_config_to_hf(cfg: ModelConfig, torch_dtype: str) -> dict:
    """The config.json that transformers loads for `cfg` (transformers 5 rope_parameters form)."""
    a = cfg.architecture
    if a == "qwen2" and (not cfg.qkv_bias or cfg.o_bias):
        raise ConfigError("model: qwen2 export needs qkv_bias=true and o_bias=false")
    if a != "qwen2" and cfg.qkv_bias != cfg.o_bias:
        raise ConfigError(f"model: {a} export needs qkv_bias == o_bias (HF attention_bias covers both)")
    if a in QK_NORM and not cfg.qk_norm:
        raise ConfigError(f"model: {a} export needs qk_norm=true")
    if a not in (*QK_NORM, "gemma3_text") and cfg.qk_norm:
        raise ConfigError(f"model: qk_norm is only exported for {', '.join(QK_NORM)} and gemma3_text, not {a}")
    if a not in (*SLIDING, "gemma3_text") and cfg.sliding_window:
        raise ConfigError(f"model: sliding_window is only exported for {', '.join(SLIDING)} and gemma3_text, not {a}")
    gemma_only = hf_gemma.gemma_only_fields(cfg)
    if a != "gemma3_text" and gemma_only:
        raise ConfigError(f"model: {', '.join(gemma_only)} are only exported for gemma3_text, not {a}")
    if a == "mixtral" and cfg.qkv_bias:
        raise ConfigError("model: mixtral export needs qkv_bias=false and o_bias=false (HF Mixtral has no biases)")
    rope: dict[str, Any] = {"rope_type": "default", "rope_theta": cfg.rope_theta}
    s = cfg.rope_scaling
    if s.type == "linear":
        rope.update(rope_type="linear", factor=s.factor)
    elif s.type == "llama3":
        rope.update(
            rope_type="llama3",
            factor=s.factor,
            low_freq_factor=s.low_freq_factor,
            high_freq_factor=s.high_freq_factor,
            original_max_position_embeddings=s.original_max_position_embeddings,
        )
    hf: dict[str, Any] = {
        "architectures": [HF_ARCHITECTURES[a]],
        "model_type": a,
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_kv_heads,
        "head_dim": cfg.resolved_head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": cfg.max_position_embeddings,
        "rms_norm_eps": cfg.rms_norm_eps,
        "rope_parameters": rope,
        "tie_word_embeddings": cfg.tie_embeddings,
        "bos_token_id": cfg.bos_token_id,
        "eos_token_id": cfg.eos_token_id[0] if len(cfg.eos_token_id) == 1 else cfg.eos_token_id,
        "pad_token_id": cfg.pad_token_id,
        "dtype": torch_dtype,
        "use_cache": True,
    }
    if a == "llama":
        hf.update(attention_bias=cfg.qkv_bias, mlp_bias=cfg.mlp_bias)
    elif a == "mistral":
        hf.update(sliding_window=cfg.sliding_window or None)
    elif a == "qwen2":
        hf.update(use_sliding_window=False, sliding_window=None)
    elif a == "qwen3":
        hf.update(attention_bias=cfg.qkv_bias, use_sliding_window=False, sliding_window=None)
    elif a == "gemma3_text":
        del hf["hidden_act"]
        hf.update(hf_gemma.gemma3_to_hf(cfg, rope))
    elif a == "qwen3_moe":
        hf.update(
            attention_bias=cfg.qkv_bias,
            use_sliding_window=False,
            sliding_window=None,
            num_experts=cfg.num_experts,
            num_experts_per_tok=cfg.num_experts_per_tok,
            moe_intermediate_size=cfg.moe_intermediate_size,
            norm_topk_prob=cfg.norm_topk_prob,
            decoder_sparse_step=1,
            mlp_only_layers=[],
            router_aux_loss_coef=cfg.router_aux_loss_coef,
        )
    elif a == "mixtral":
        hf.update(
            sliding_window=cfg.sliding_window or None,
            num_local_experts=cfg.num_experts,
            num_experts_per_tok=cfg.num_experts_per_tok,
            intermediate_size=cfg.moe_intermediate_size,  # Mixtral's intermediate_size is each expert's
            router_aux_loss_coef=cfg.router_aux_loss_coef,
            router_jitter_noise=0.0,
        )
    if cfg.mlp_bias and a != "llama":
        raise ConfigError(f"model: mlp_bias is only exported for llama, not {a}")
    return hf


def read_json(path, what: str) -> dict:
    """Read a JSON object from an epath, naming the file in any error."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} not found") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    return data
