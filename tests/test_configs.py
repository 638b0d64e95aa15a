"""Every file in configs/ loads and validates; config errors name the file and field."""

from pathlib import Path

import pytest

from mathjax_train.config import ConfigError, load_config
from mathjax_train.pipeline.spec import is_pipeline_file, load_pipeline

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def test_there_are_configs():
    assert any(p.name == "smoke.yaml" for p in CONFIGS)


def test_every_base_file_is_used_and_recipes_state_only_differences():
    """configs/base/ holds partial configs (model, recipe, topology); each is composed into some recipe."""
    import yaml

    bases = sorted((CONFIGS[0].parent / "base").glob("*.yaml"))
    used = set()
    for path in [*CONFIGS, *bases]:
        raw = yaml.safe_load(path.read_text())
        named = raw.get("base", []) if not is_pipeline_file(str(path)) else []
        used |= {(path.parent / b).resolve() for b in ([named] if isinstance(named, str) else named)}
    assert bases and {b.resolve() for b in bases} <= used
    from mathjax_train.config import read_bases

    def restated(raw, base, where=""):
        for k, v in raw.items():
            if isinstance(v, dict) and isinstance(base.get(k), dict):
                yield from restated(v, base[k], f"{where}{k}.")
            elif k in base and base[k] == v:
                yield f"{where}{k}"

    composed = [p for p in CONFIGS if not is_pipeline_file(str(p)) and "base" in yaml.safe_load(p.read_text())]
    assert len(composed) >= 15
    for path in composed:
        raw = yaml.safe_load(path.read_text())
        assert not list(restated(raw, read_bases(raw.pop("base"), str(path), str(path)))), path.name


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_config_loads(path):
    if is_pipeline_file(str(path)):  # a pipeline: every stage typed, references resolved
        pipe = load_pipeline(str(path))
        assert pipe.stages and pipe.run_dir
        return
    cfg = load_config(str(path))
    assert cfg.train.steps >= 1 and cfg.output_dir


def test_unknown_key_lists_valid_ones(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  stepz: 3\n")
    with pytest.raises(ConfigError) as e:
        load_config(str(bad))
    assert str(bad) in str(e.value) and "'stepz'" in str(e.value) and "steps" in str(e.value)
    with pytest.raises(ConfigError, match="unknown key 'stepz' in train; valid keys: steps"):
        load_config(None, ["train.stepz=3"])


def test_wrong_type_and_bad_values_are_named(tmp_path):
    with pytest.raises(ConfigError, match=r"train.steps: expected an integer, got 'many'"):
        load_config(None, ["train.steps=many"])
    with pytest.raises(ConfigError, match=r"optimizer.schedule: 'cosin' is not one of"):
        load_config(None, ["optimizer.schedule=cosin"])
    with pytest.raises(ConfigError, match=r"train.batch_size \(6\) must be a multiple of train.microbatches \(4\)"):
        load_config(None, ["train.batch_size=6", "train.microbatches=4"])
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(str(tmp_path / "missing.yaml"))


def test_overrides_apply_with_types():
    cfg = load_config(
        None,
        [
            "mesh.tensor=-1",
            "train.steps=7",
            "data.rates={gsm8k_sft: 1, synthetic: 3}",
            "optimizer.learning_rate=2e-5",
            "output_dir=123",
        ],
    )
    assert cfg.mesh.tensor == -1 and cfg.train.steps == 7 and cfg.data.rates == {"gsm8k_sft": 1.0, "synthetic": 3.0}
    assert cfg.optimizer.learning_rate == 2e-5 and cfg.output_dir == "123"


def test_a_section_given_in_part_keeps_its_fields_own_defaults():
    from mathjax_train.config import EvaluateStageConfig, from_dict

    stage = from_dict(
        EvaluateStageConfig,
        {"checkpoints": ["c"], "sampled": {"num_samples": 16}, "eval": {"generate": {"batch_size": 8}}},
    )
    assert (stage.sampled.num_samples, stage.sampled.temperature) == (16, 0.7)  # the field's factory, not the class
    assert (stage.eval.generate.batch_size, stage.eval.generate.max_new_tokens) == (8, 512)
    # a mapping-valued field is replaced whole, not merged with its default ({procedural: 1.0})
    assert load_config(None, ["rl.prompts={a.jsonl: 1.0}"]).rl.prompts == {"a.jsonl": 1.0}


def test_base_files_compose_in_order_relative_to_the_file(tmp_path):
    (tmp_path / "bases").mkdir()
    (tmp_path / "bases" / "model.yaml").write_text("model: {hidden_size: 64, num_layers: 2}\ntrain: {steps: 5}\n")
    (tmp_path / "bases" / "recipe.yaml").write_text("base: model.yaml\ntrain: {steps: 7, batch_size: 4}\n")
    (tmp_path / "topology.yaml").write_text("mesh: {fsdp: 2}\ntrain: {batch_size: 8}\n")
    run = tmp_path / "run.yaml"
    run.write_text("base: [bases/recipe.yaml, topology.yaml]\noutput_dir: out\nmodel: {num_layers: 3}\n")
    from mathjax_train.config import read_config_file

    data = read_config_file(run)
    # recipe on top of its own base (steps 7), topology on top of both (batch 8), the file on top (3 layers)
    assert data["model"] == {"hidden_size": 64, "num_layers": 3}
    assert data["train"] == {"steps": 7, "batch_size": 8} and data["mesh"] == {"fsdp": 2}
    assert "base" not in data and data["output_dir"] == "out"


def test_base_errors_name_the_file(tmp_path):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("base: b.yaml\n")
    b.write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match=r"base: a.yaml includes itself"):
        load_config(str(a))
    a.write_text("base: [missing.yaml]\n")
    with pytest.raises(ConfigError, match=rf"{a}: base {tmp_path / 'missing.yaml'}: config file not found"):
        load_config(str(a))
    a.write_text("base: {model: x}\n")
    with pytest.raises(ConfigError, match=rf"{a}: base: expected a file or a list of files"):
        load_config(str(a))
    a.write_text("base: b.yaml\n")
    b.write_text("train: {stepz: 1}\n")  # a mistake inside a base is reported against the composed file
    with pytest.raises(ConfigError, match=rf"{a}: config.train: unknown key 'stepz'"):
        load_config(str(a))
