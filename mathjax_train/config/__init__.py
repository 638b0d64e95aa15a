"""Typed configuration: dataclasses for every setting, YAML files, and `key=value` overrides.

A config is a tree of frozen-free dataclasses. `load_config(path, overrides)` reads YAML, applies
dotted overrides (`train.steps=10`), checks every key and type, and names the file and field of
any mistake. Unknown keys are rejected with the list of valid ones.

By area: `loading` (fields, checks, YAML, overrides, `from_dict`), `model` (decoder, mesh, LoRA),
`data`, `train` (optimizer, loop, checkpoints, multi-host start-up), `sampling` (the engine and the
commands that sample), `rl`, `run` (the whole run's `Config`, `load_config`) and `pipeline` (its
stages); `user_cache` says where this user's caches of compiled code live. Every name is importable
from here; the errors live in `mathjax_train.errors`.
"""

from mathjax_train.config.data import DataConfig, Ending, Template
from mathjax_train.config.loading import (
    apply_override,
    check_choices,
    check_shard,
    from_dict,
    is_remote,
    merge_mappings,
    read_bases,
    read_config_file,
    read_yaml_mapping,
    relative_to,
    setting,
    to_dict,
)
from mathjax_train.config.model import (
    AttentionKernel,
    Dtype,
    LoraConfig,
    LoraTarget,
    MeshConfig,
    ModelConfig,
    RopeScaling,
)
from mathjax_train.config.pipeline import (
    DecontaminateConfig,
    EvaluateStageConfig,
    ExportStageConfig,
    ProblemsStageConfig,
    ScalingStageConfig,
    SelectConfig,
    TokenizerStageConfig,
)
from mathjax_train.config.rl import MismatchMask, RlAggregation, RlConfig
from mathjax_train.config.run import Config, load_config
from mathjax_train.config.sampling import (
    DECONTAMINATE_BENCHMARKS,
    DECONTAMINATE_NGRAM,
    DTYPE_HELP,
    NUM_SHARDS_HELP,
    SHARD_INDEX_HELP,
    SLOTS_HELP,
    TENSOR_HELP,
    AugmentJobConfig,
    AugmentMethod,
    ComputeDtype,
    EngineAttention,
    EngineConfig,
    EvalConfig,
    GenerateConfig,
    GenerateJobConfig,
    RftConfig,
    SamplingPlanConfig,
    ServeConfig,
    Tools,
)
from mathjax_train.config.train import (
    AUTO_CHUNK_ABOVE,
    AUTO_VOCAB_CHUNK,
    CheckpointConfig,
    DistributedConfig,
    OptimizerConfig,
    TrainConfig,
)
from mathjax_train.errors import ConfigError, InputError

__all__ = [
    "AUTO_CHUNK_ABOVE",
    "AUTO_VOCAB_CHUNK",
    "DECONTAMINATE_BENCHMARKS",
    "DECONTAMINATE_NGRAM",
    "DTYPE_HELP",
    "NUM_SHARDS_HELP",
    "SHARD_INDEX_HELP",
    "SLOTS_HELP",
    "TENSOR_HELP",
    "AttentionKernel",
    "AugmentJobConfig",
    "AugmentMethod",
    "CheckpointConfig",
    "ComputeDtype",
    "Config",
    "ConfigError",
    "DataConfig",
    "DecontaminateConfig",
    "DistributedConfig",
    "Dtype",
    "Ending",
    "EngineAttention",
    "EngineConfig",
    "EvalConfig",
    "EvaluateStageConfig",
    "ExportStageConfig",
    "GenerateConfig",
    "GenerateJobConfig",
    "InputError",
    "LoraConfig",
    "LoraTarget",
    "MeshConfig",
    "MismatchMask",
    "ModelConfig",
    "OptimizerConfig",
    "ProblemsStageConfig",
    "RftConfig",
    "RlAggregation",
    "RlConfig",
    "RopeScaling",
    "SamplingPlanConfig",
    "ScalingStageConfig",
    "SelectConfig",
    "ServeConfig",
    "Template",
    "TokenizerStageConfig",
    "Tools",
    "TrainConfig",
    "apply_override",
    "check_choices",
    "check_shard",
    "from_dict",
    "is_remote",
    "load_config",
    "merge_mappings",
    "read_bases",
    "read_config_file",
    "read_yaml_mapping",
    "relative_to",
    "setting",
    "to_dict",
]
