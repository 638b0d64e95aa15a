"""The model's settings: the decoder family (`ModelConfig`, its RoPE scaling), the device mesh and LoRA."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from mathjax_train.config.loading import check_choices
from mathjax_train.errors import ConfigError

Dtype = Literal["float32", "bfloat16", "float16"]
# blocked (plain XLA, causal blocks only) | dot (plain XLA, full score matrix) | splash (Pallas TPU kernel;
# interpreted off TPU) | cudnn (GPU); model/attention.py `self_attention` picks one
AttentionKernel = Literal["dot", "splash", "cudnn", "blocked"]
LayerType = Literal["full_attention", "sliding_attention"]  # HF `layer_types` entries
LoraTarget = Literal["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class RopeScaling:
    """RoPE frequency scaling. `type`: none, linear, llama3 (the LLaMA-3.1 piecewise rule)."""

    type: Literal["none", "linear", "llama3"] = "none"
    factor: float = 1.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192


@dataclass
class ModelConfig:
    """One decoder family: LLaMA-2/3, Mistral (sliding window), Qwen2 (qkv bias), Qwen3 (QK-norm, its own
    head_dim), Gemma 3 text (local/global layers, sandwich norms, GeGLU), tied embeddings; `num_experts` > 0 makes
    every layer's MLP a mixture of experts (Qwen3-MoE, Mixtral; model/moe.py)."""

    # the HF class written by export-hf
    architecture: Literal["llama", "mistral", "qwen2", "qwen3", "gemma3_text", "qwen3_moe", "mixtral"] = "llama"
    vocab_size: int = 0  # 0 = the tokenizer's size (data.tokenizer), taken when training starts
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_layers: int = 32
    num_heads: int = 32
    num_kv_heads: int = 32
    head_dim: int = 0  # 0 = hidden_size // num_heads
    max_position_embeddings: int = 4096
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling = field(default_factory=RopeScaling)
    rms_norm_eps: float = 1e-6
    tie_embeddings: bool = False
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    qk_norm: bool = False  # per-head RMSNorm (eps rms_norm_eps) of queries and keys before RoPE (Qwen3)
    sliding_window: int = 0  # 0 = full attention; with layer_types, the window of the sliding_attention layers
    layer_types: list[LayerType] = field(default_factory=list)  # one per layer; [] = every layer alike
    rope_local_theta: float = 0.0  # RoPE base of sliding_attention layers (unscaled); 0 = rope_theta, scaled alike
    query_pre_attn_scalar: float = 0.0  # attention scores scaled by its -1/2 power; 0 = head_dim (the usual)
    hidden_act: Literal["silu", "gelu_tanh"] = "silu"  # the gated MLP's activation (SwiGLU, or GeGLU for Gemma)
    embed_scale: bool = False  # embeddings times sqrt(hidden_size), in the compute dtype (Gemma)
    sandwich_norms: bool = False  # norms also after attention and around the MLP (Gemma's four per layer)
    norm_plus_one: bool = False  # RMSNorm scales by 1 + weight, weight initialised at 0 (Gemma's stored form)
    final_logit_softcapping: float = 0.0  # logits -> c tanh(logits / c); 0 = off
    bos_token_id: int | None = 1
    eos_token_id: list[int] = field(default_factory=lambda: [2])
    pad_token_id: int | None = None
    # mixture of experts (0 experts = dense): every layer routes each token to its top-k experts
    num_experts: int = 0
    num_experts_per_tok: int = 2
    moe_intermediate_size: int = 0  # each expert's SwiGLU width
    norm_topk_prob: bool = True  # renormalize the top-k probabilities to sum to 1 (Mixtral always does)
    router_aux_loss_coef: float = 0.0  # x the load-balancing loss (Switch style), added to the train loss
    router_z_loss_coef: float = 0.0  # x the router z-loss (mean logsumexp(logits)^2), added to the train loss
    dtype: Dtype = "bfloat16"  # compute dtype
    param_dtype: Dtype = "float32"
    scan_layers: bool = True
    remat_policy: Literal["none", "full", "dots", "dots_with_no_batch_dims"] = "none"
    attention_kernel: AttentionKernel = "blocked"

    @property
    def resolved_head_dim(self) -> int:
        return self.head_dim or self.hidden_size // self.num_heads

    def validate(self, where: str = "model") -> None:
        check_choices(self, where)
        if self.vocab_size < 0:
            raise ConfigError(f"{where}.vocab_size must be >= 0 (0 = the tokenizer's size), got {self.vocab_size}")
        if self.head_dim < 0:
            raise ConfigError(f"{where}.head_dim must be >= 0 (0 = hidden_size // num_heads), got {self.head_dim}")
        if self.num_heads % self.num_kv_heads:
            raise ConfigError(
                f"{where}.num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})"
            )
        if not self.head_dim and self.hidden_size % self.num_heads:
            raise ConfigError(
                f"{where}.hidden_size ({self.hidden_size}) is not divisible by num_heads ({self.num_heads})"
            )
        if self.resolved_head_dim % 2:
            raise ConfigError(f"{where}.head_dim must be even for RoPE, got {self.resolved_head_dim}")
        if self.layer_types and len(self.layer_types) != self.num_layers:
            raise ConfigError(
                f"{where}.layer_types has {len(self.layer_types)} entries but num_layers is {self.num_layers}"
            )
        if "sliding_attention" in self.layer_types and self.sliding_window <= 0:
            raise ConfigError(f"{where}.sliding_window must be > 0 when layer_types has sliding_attention layers")
        for name in ("sliding_window", "rope_local_theta", "query_pre_attn_scalar", "final_logit_softcapping"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{where}.{name} must be >= 0 (0 = off / the default), got {getattr(self, name)}")
        self._validate_moe(where)

    def layer_windows(self) -> tuple[int, ...]:
        """Each layer's sliding window (0 = full attention): `sliding_window` everywhere, or per `layer_types`."""
        if not self.layer_types:
            return (self.sliding_window,) * self.num_layers
        return tuple(self.sliding_window if t == "sliding_attention" else 0 for t in self.layer_types)

    def _validate_moe(self, where: str) -> None:
        moe_arch = self.architecture in ("qwen3_moe", "mixtral")
        if self.num_experts < 0:
            raise ConfigError(f"{where}.num_experts must be >= 0 (0 = dense), got {self.num_experts}")
        if moe_arch and not self.num_experts:
            raise ConfigError(f"{where}.num_experts must be > 0 for architecture {self.architecture}")
        if self.num_experts and not moe_arch:
            raise ConfigError(
                f"{where}.num_experts={self.num_experts} needs architecture qwen3_moe or mixtral, not {self.architecture}"
            )
        if not self.num_experts:
            return
        if not 1 <= self.num_experts_per_tok <= self.num_experts:
            raise ConfigError(
                f"{where}.num_experts_per_tok must be in [1, num_experts={self.num_experts}], "
                f"got {self.num_experts_per_tok}"
            )
        if self.moe_intermediate_size <= 0:
            raise ConfigError(
                f"{where}.moe_intermediate_size must be > 0 with experts, got {self.moe_intermediate_size}"
            )
        if self.architecture == "mixtral" and not self.norm_topk_prob:
            raise ConfigError(f"{where}.norm_topk_prob must be true for mixtral (its router always renormalizes)")
        if self.mlp_bias:
            raise ConfigError(f"{where}.mlp_bias is not supported with experts (num_experts > 0)")
        for name in ("router_aux_loss_coef", "router_z_loss_coef"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{where}.{name} must be >= 0, got {getattr(self, name)}")


@dataclass
class MeshConfig:
    """Device mesh axes; -1 fills with the remaining devices."""

    data: int = -1
    fsdp: int = 1
    tensor: int = 1
    expert: int = 1  # expert parallelism: splits the stacked expert weights (and the batch) over this axis
    rules: dict[str, list[str]] = field(default_factory=dict)  # logical axis -> mesh axes (parallel/rules.py)
    topology: str = ""  # the TPU slice this config is written for (v5p-32, ...): `plan`'s default, checked at start


@dataclass
class LoraConfig:
    """LoRA adapters on a frozen base (model/lora.py): W x + (alpha / rank) B A dropout(x) for each
    targeted projection. `rank` 0 = off (full fine-tuning). `quantize_base: int8` stores the frozen
    projections as int8 with one float32 scale per output channel (QLoRA-style)."""

    rank: int = 0
    alpha: float = 16.0
    dropout: float = 0.0
    targets: list[LoraTarget] = field(default_factory=lambda: ["q_proj", "v_proj"])  # HF module names
    quantize_base: Literal["none", "int8"] = "none"
    param_dtype: Dtype = "float32"  # the adapters' dtype (the base keeps model.param_dtype)

    @property
    def enabled(self) -> bool:
        return self.rank > 0

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank

    def validate(self, where: str = "lora") -> None:
        if self.rank < 0:
            raise ConfigError(f"{where}.rank must be >= 0 (0 = off), got {self.rank}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"{where}.dropout must be in [0, 1), got {self.dropout}")
        check_choices(self, where)
        if self.enabled and not self.targets:
            raise ConfigError(f"{where}.targets: adapters (rank > 0) need at least one target projection")
        if self.quantize_base != "none" and not self.enabled:
            raise ConfigError(f"{where}.quantize_base={self.quantize_base} needs adapters ({where}.rank > 0)")
