"""The whole run's config (`Config`: one section per area) and `load_config`, which reads it (or any
config dataclass) from YAML and overrides."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mathjax_train.config.data import DataConfig
from mathjax_train.config.loading import apply_override, from_dict, read_config_file
from mathjax_train.config.model import LoraConfig, MeshConfig, ModelConfig
from mathjax_train.config.rl import RlConfig
from mathjax_train.config.sampling import GenerateConfig
from mathjax_train.config.train import CheckpointConfig, DistributedConfig, OptimizerConfig, TrainConfig
from mathjax_train.errors import ConfigError


@dataclass
class Config:
    """The whole run: where outputs go, which model, how it is sharded, trained and sampled."""

    output_dir: str = "runs/default"
    init_from: str = ""  # a checkpoint directory written by import-hf or train; "" = random init
    model: ModelConfig = field(default_factory=ModelConfig)
    mesh: MeshConfig = field(default_factory=MeshConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    data: DataConfig = field(default_factory=DataConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    rl: RlConfig = field(default_factory=RlConfig)  # read by `mathjax-train rl` only

    def validate(self) -> None:
        self.model.validate("model")
        self.lora.validate("lora")
        if self.lora.enabled and not self.init_from:
            raise ConfigError("lora.rank > 0 trains adapters on a frozen base: set init_from to its checkpoint")
        self.train.validate("train")
        self.optimizer.validate("optimizer")
        self.checkpoint.validate("checkpoint")
        self.data.validate("data")
        self.distributed.validate("distributed")
        self.rl.validate("rl")
        if self.model.attention_kernel == "splash" and self.train.seq_len % 128:
            raise ConfigError(
                f"train.seq_len ({self.train.seq_len}) must be a multiple of 128 for "
                "model.attention_kernel=splash (the kernel's block size), or use dot"
            )


def load_config(path: str | None = None, overrides: list[str] | tuple[str, ...] = (), cls: type = Config) -> Any:
    """Read a YAML config (with its `base:` files; defaults when `path` is None), apply overrides, validate."""
    data: dict = {}
    source = "defaults"
    if path:
        source = str(path)
        data = read_config_file(path)
    for ov in overrides:
        apply_override(data, cls, ov)
    try:
        cfg = from_dict(cls, data)
        if hasattr(cfg, "validate"):
            cfg.validate()
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    return cfg
