"""Typed configuration: dataclasses for every setting, YAML files, and `key=value` overrides.

A config is a tree of frozen-free dataclasses. `load_config(path, overrides)` reads YAML, applies
dotted overrides (`train.steps=10`), checks every key and type, and names the file and field of
any mistake. Unknown keys are rejected with the list of valid ones.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any

import yaml


class ConfigError(ValueError):
    """A config file or override is wrong; the message names the source and the field."""


@dataclass
class RopeScaling:
    """RoPE frequency scaling. `type`: none, linear, llama3 (the LLaMA-3.1 piecewise rule)."""

    type: str = "none"
    factor: float = 1.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192


@dataclass
class ModelConfig:
    """One decoder family: LLaMA-2/3, Mistral (sliding window), Qwen2 (qkv bias), tied embeddings."""

    architecture: str = "llama"  # llama | mistral | qwen2: the HF class written by export-hf
    vocab_size: int = 32000
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
    sliding_window: int = 0  # 0 = full attention
    bos_token_id: int | None = 1
    eos_token_id: list[int] = field(default_factory=lambda: [2])
    pad_token_id: int | None = None
    dtype: str = "bfloat16"  # compute dtype
    param_dtype: str = "float32"
    scan_layers: bool = True
    remat_policy: str = "none"  # none | full | dots | dots_with_no_batch_dims
    attention_kernel: str = "dot"  # dot (plain XLA); TPU kernels come with the TPU recipes

    @property
    def resolved_head_dim(self) -> int:
        return self.head_dim or self.hidden_size // self.num_heads

    def validate(self, where: str = "model") -> None:
        if self.architecture not in ("llama", "mistral", "qwen2"):
            raise ConfigError(f"{where}.architecture: {self.architecture!r} is not one of llama, mistral, qwen2")
        if self.num_heads % self.num_kv_heads:
            raise ConfigError(
                f"{where}.num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})")
        if not self.head_dim and self.hidden_size % self.num_heads:
            raise ConfigError(f"{where}.hidden_size ({self.hidden_size}) is not divisible by num_heads ({self.num_heads})")
        if self.resolved_head_dim % 2:
            raise ConfigError(f"{where}.head_dim must be even for RoPE, got {self.resolved_head_dim}")
        if self.rope_scaling.type not in ("none", "linear", "llama3"):
            raise ConfigError(f"{where}.rope_scaling.type: {self.rope_scaling.type!r} is not one of none, linear, llama3")
        for name in ("dtype", "param_dtype"):
            if getattr(self, name) not in ("float32", "bfloat16", "float16"):
                raise ConfigError(f"{where}.{name}: {getattr(self, name)!r} is not one of float32, bfloat16, float16")
        if self.remat_policy not in ("none", "full", "dots", "dots_with_no_batch_dims"):
            raise ConfigError(f"{where}.remat_policy: {self.remat_policy!r} is not one of "
                              "none, full, dots, dots_with_no_batch_dims")
        if self.attention_kernel not in ("dot",):
            raise ConfigError(f"{where}.attention_kernel: {self.attention_kernel!r} is not one of dot")


@dataclass
class MeshConfig:
    """Device mesh axes; -1 fills with the remaining devices."""

    data: int = -1
    fsdp: int = 1
    tensor: int = 1


@dataclass
class GenerateConfig:
    """Sampling settings shared by `generate`, `evaluate` and the synthesis commands."""

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    num_samples: int = 1
    seed: int = 0
    batch_size: int = 8
    stop: list[str] = field(default_factory=list)


@dataclass
class Config:
    """The whole run: where outputs go, which model, how it is sharded, how it samples."""

    output_dir: str = "runs/default"
    init_from: str = ""  # a checkpoint directory written by import-hf or train
    model: ModelConfig = field(default_factory=ModelConfig)
    mesh: MeshConfig = field(default_factory=MeshConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)

    def validate(self) -> None:
        self.model.validate("model")


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _describe(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check `value` against the annotation `tp`, converting only where it is lossless."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return from_dict(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            value = [value]  # a scalar where a list is expected: a list of one
        return [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # YAML 1.1 reads "1e-5" as a string
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    if tp is Any:
        return value
    raise ConfigError(f"{where}: unsupported annotation {_describe(tp)}")


def from_dict(cls: type, data: dict, where: str = "config") -> Any:
    """Build dataclass `cls` from a mapping; unknown keys are an error listing the valid ones."""
    hints = _field_types(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; valid keys: {', '.join(names)}")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def apply_override(data: dict, cls: type, override: str) -> None:
    """Apply one `a.b.c=value` override to the raw mapping `data` (validated against `cls`)."""
    if "=" not in override:
        raise ConfigError(f"override {override!r}: expected key=value")
    key, raw = override.split("=", 1)
    parts = key.strip().split(".")
    node, node_cls, path = data, cls, []
    for i, part in enumerate(parts):
        names = [f.name for f in dataclasses.fields(node_cls)]
        if part not in names:
            where = ".".join(path) or "config"
            raise ConfigError(f"override {override!r}: unknown key {part!r} in {where}; valid keys: {', '.join(names)}")
        path.append(part)
        tp = _field_types(node_cls)[part]
        if i == len(parts) - 1:
            node[part] = yaml.safe_load(raw) if raw.strip() else ""
            if tp is str and not isinstance(node[part], str):
                node[part] = raw  # keep e.g. output_dir=123 as the string the user typed
        else:
            if not dataclasses.is_dataclass(tp):
                raise ConfigError(f"override {override!r}: {'.'.join(path)} is not a section")
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {override!r}: {'.'.join(path)} is not a section")
            node_cls = tp


def load_config(path: str | None = None, overrides: list[str] | tuple[str, ...] = (), cls: type = Config) -> Any:
    """Read a YAML config (or defaults when `path` is None), apply overrides, validate."""
    data: dict = {}
    source = "defaults"
    if path:
        source = str(path)
        from etils import epath

        try:
            text = epath.Path(path).read_text()
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
    for ov in overrides:
        apply_override(data, cls, ov)
    try:
        cfg = from_dict(cls, data)
        if hasattr(cfg, "validate"):
            cfg.validate()
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    return cfg
