"""train.epochs: steps from the JSONL training set's rows (train/epochs.py)."""

import pytest

from mathjax_train.config import Config, ConfigError, load_config
from mathjax_train.train.epochs import with_epoch_steps


def config(tmp_path, rows: int, **train) -> Config:
    f = tmp_path / "rows.jsonl"
    f.write_text('{"question": "q", "answer": "1"}\n' * rows + "\n")  # a blank line is not a row
    return load_config(
        None,
        [
            "data.mixture=synthetic",
            f"data.jsonl=[{f}]",
            "train.batch_size=16",
            *(f"train.{k}={v}" for k, v in train.items()),
        ],
    )


def test_epochs_set_steps_from_the_rows_rounding_up(tmp_path):
    assert with_epoch_steps(config(tmp_path, 100, epochs=3, steps=7)).train.steps == 19  # ceil(300 / 16)
    assert with_epoch_steps(config(tmp_path, 100, epochs=0.5)).train.steps == 4
    assert with_epoch_steps(config(tmp_path, 100, steps=7)).train.steps == 7  # epochs 0: steps as given


def test_epochs_need_a_training_set_of_known_size(tmp_path):
    with pytest.raises(ConfigError, match="train.epochs: needs data.mixture synthetic"):
        with_epoch_steps(load_config(None, ["data.mixture=procedural", "train.epochs=2"]))
    with pytest.raises(ConfigError, match="train.epochs must be >= 0"):
        load_config(None, ["train.epochs=-1"])
