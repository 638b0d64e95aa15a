"""`train.epochs`: the step count of a run that passes over a JSONL training set a given number of times."""

from __future__ import annotations

import dataclasses
import math

from etils import epath

from mathjax_train.config import Config, ConfigError


def jsonl_rows(paths: list[str]) -> int:
    """Non-empty lines over the files: the rows the `synthetic` task reads."""
    return sum(1 for p in paths for line in epath.Path(p).read_text().splitlines() if line.strip())


def with_epoch_steps(cfg: Config) -> Config:
    """`cfg` with train.steps = ceil(train.epochs * rows / train.batch_size) when train.epochs > 0, else `cfg`.
    Only a mixture of known size qualifies: `synthetic`, its rows the data.jsonl files' rows."""
    if not cfg.train.epochs:
        return cfg
    if cfg.data.mixture != "synthetic" or not cfg.data.jsonl:
        raise ConfigError(
            f"train.epochs: needs data.mixture synthetic with data.jsonl files (a training set of known size), "
            f"got mixture {cfg.data.mixture!r}; set train.steps instead"
        )
    steps = max(1, math.ceil(cfg.train.epochs * jsonl_rows(cfg.data.jsonl) / cfg.train.batch_size))
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=steps))
