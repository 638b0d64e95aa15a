"""Shared helpers for trainer tests: a tiny config and subprocess runs of the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from mathjax_train.config import load_config

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "configs" / "smoke.yaml"


def tiny_config(tmp_path, *overrides):
    """The smoke config (toy copy task), fp32, writing under tmp_path."""
    return load_config(str(SMOKE), [f"output_dir={tmp_path}", "model.dtype=float32", *overrides])


def cli_env() -> dict:
    env = dict(os.environ)
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    return env


def train_cmd(config, *args) -> list[str]:
    return [sys.executable, "-m", "mathjax_train.cli", "train", "--config", str(config), *args]


def run_train(config, *args, check=True) -> subprocess.CompletedProcess:
    proc = subprocess.run(train_cmd(config, *args), capture_output=True, text=True, env=cli_env(), cwd=REPO)
    if check and proc.returncode != 0:
        raise AssertionError(f"train exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc


def read_metrics(output_dir) -> list[dict]:
    return [json.loads(line) for line in (Path(output_dir) / "metrics.jsonl").read_text().splitlines()]
