"""Every file in configs/ loads and validates; config errors name the file and field."""
from pathlib import Path

import pytest

from mathjax_train.config import ConfigError, load_config
from mathjax_train.pipeline.spec import is_pipeline_file, load_pipeline

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def test_there_are_configs():
    assert any(p.name == "smoke.yaml" for p in CONFIGS)


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
    cfg = load_config(None, ["mesh.tensor=-1", "train.steps=7", "data.rates={gsm8k_sft: 1, synthetic: 3}",
                             "optimizer.learning_rate=2e-5", "output_dir=123"])
    assert cfg.mesh.tensor == -1 and cfg.train.steps == 7 and cfg.data.rates == {"gsm8k_sft": 1.0, "synthetic": 3.0}
    assert cfg.optimizer.learning_rate == 2e-5 and cfg.output_dir == "123"
