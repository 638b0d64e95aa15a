"""`mathjax_train.config` is a package split by area; every name the single module exported is still
importable from it, the errors are the ones in `mathjax_train.errors`, and a config round-trips."""

import ast
import dataclasses
import pickle
import typing
from pathlib import Path

import mathjax_train.config as config
import mathjax_train.errors as errors

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "mathjax_train" / "config"

# The public names of mathjax_train/config.py before it became a package.
PUBLIC_NAMES = """
InputError ConfigError Template ComputeDtype Tools Ending Dtype AttentionKernel EngineAttention RlAggregation
MismatchMask LoraTarget SLOTS_HELP TENSOR_HELP SHARD_INDEX_HELP NUM_SHARDS_HELP DTYPE_HELP DECONTAMINATE_BENCHMARKS
DECONTAMINATE_NGRAM setting check_choices check_shard RopeScaling ModelConfig MeshConfig EngineConfig
SamplingPlanConfig GenerateConfig GenerateJobConfig EvalConfig RftConfig AugmentMethod AugmentJobConfig ServeConfig
OptimizerConfig AUTO_VOCAB_CHUNK AUTO_CHUNK_ABOVE TrainConfig CheckpointConfig DataConfig DistributedConfig RlConfig
LoraConfig Config from_dict to_dict apply_override is_remote read_yaml_mapping merge_mappings relative_to
read_config_file read_bases load_config TokenizerStageConfig ProblemsStageConfig DecontaminateConfig SelectConfig
EvaluateStageConfig ScalingStageConfig ExportStageConfig
""".split()

# A module of the package imports only modules before it (no import circles).
ORDER = ["user_cache", "loading", "model", "data", "train", "sampling", "rl", "run", "pipeline"]


def test_every_name_is_still_exported():
    missing = [n for n in PUBLIC_NAMES if not hasattr(config, n)]
    assert not missing
    assert set(PUBLIC_NAMES) <= set(config.__all__)
    namespace: dict = {}
    exec(f"from mathjax_train.config import {', '.join(PUBLIC_NAMES)}", namespace)


def test_errors_are_one_family_importable_from_both():
    assert errors.ConfigError is config.ConfigError
    assert errors.InputError is config.InputError
    from mathjax_train.data.jsonl_source import JsonlFormatError
    from mathjax_train.data.run_dir import SettingsMismatchError
    from mathjax_train.data.templates import TemplateError
    from mathjax_train.parallel.preflight import PreflightError

    assert JsonlFormatError is errors.JsonlFormatError
    assert SettingsMismatchError is errors.SettingsMismatchError
    assert TemplateError is errors.TemplateError
    assert PreflightError is errors.PreflightError
    for cls in (errors.ConfigError, JsonlFormatError, SettingsMismatchError, TemplateError, PreflightError):
        assert issubclass(cls, errors.InputError) and issubclass(cls, ValueError)
    assert issubclass(SettingsMismatchError, errors.ConfigError)


def test_modules_import_in_one_direction():
    assert sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__") == sorted(ORDER)
    for i, name in enumerate(ORDER):
        tree = ast.parse((PACKAGE / f"{name}.py").read_text())
        imported = {
            n.module.rsplit(".", 1)[-1]
            for n in ast.walk(tree)
            if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("mathjax_train.config")
        }
        assert imported <= set(ORDER[:i]), (name, imported - set(ORDER[:i]))


def test_every_config_class_resolves_its_annotations():
    """`from_dict` and the CLI read field types with typing.get_type_hints, in the module of each class."""
    classes = [v for v in vars(config).values() if isinstance(v, type) and dataclasses.is_dataclass(v)]
    assert len(classes) >= 26
    for cls in classes:
        assert cls.__module__.startswith("mathjax_train.config.")
        assert set(typing.get_type_hints(cls)) == {f.name for f in dataclasses.fields(cls)}, cls


def test_smoke_config_round_trips():
    cfg = config.load_config(REPO / "configs" / "smoke.yaml")
    assert isinstance(cfg, config.Config)
    data = config.to_dict(cfg)
    assert config.from_dict(config.Config, data) == cfg
    assert config.to_dict(config.from_dict(config.Config, data)) == data
    assert pickle.loads(pickle.dumps(cfg)) == cfg
