"""What the SFT loop (train/trainer.py) and the RL loop (rl/trainer.py) share around their steps.

The model config a run trains, the files that make OUTPUT_DIR loadable, and `RunLoop`: the checkpointer
under OUTPUT_DIR and where this run starts and stops, the metrics writer, SIGTERM as a flag checked at
step boundaries, the save cadence, and the `resumed` / `preempted` records.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import threading
import time
from typing import Any, Callable

import jax
from etils import epath

from mathjax_train.config import Config, ConfigError, ModelConfig, to_dict
from mathjax_train.data.sources import TOY_SOURCES
from mathjax_train.model import checkpoint as model_ckpt
from mathjax_train.train.checkpointing import TrainCheckpointer
from mathjax_train.train.metrics import MetricsWriter, eta_seconds

PREEMPTED_EXIT_CODE = 143  # 128 + SIGTERM: the job did not finish, re-run the command to resume
RUNTIME_FIELDS = ("dtype", "param_dtype", "scan_layers", "remat_policy", "attention_kernel")


def resolve_model_config(cfg: Config) -> ModelConfig:
    """The model config: from `init_from`'s checkpoint (architecture) with the run's runtime fields
    (dtype, param_dtype, scan_layers, remat_policy, attention_kernel), or `model` as given, its
    vocab_size taken from data.tokenizer when unset (0)."""
    if not cfg.init_from:
        if cfg.model.vocab_size:
            return cfg.model
        if cfg.data.mixture in TOY_SOURCES:
            raise ConfigError(
                f"model.vocab_size: set it for data.mixture={cfg.data.mixture} (unset, it is taken "
                "from the tokenizer, and this toy task has none)"
            )
        from mathjax_train.data.seqio_vocab import tokenizer_dir
        from mathjax_train.data.vocab import load_tokenizer

        vocab_size = load_tokenizer(tokenizer_dir(cfg.data.tokenizer, "")).vocab_size
        return dataclasses.replace(cfg.model, vocab_size=vocab_size)
    stored = model_ckpt.load_model_config(cfg.init_from)
    if stored.scan_layers != cfg.model.scan_layers:
        raise ConfigError(
            f"init_from: {cfg.init_from} stores layers with scan_layers={stored.scan_layers}, "
            f"but model.scan_layers={cfg.model.scan_layers}; set model.scan_layers to match "
            "or re-import (import-hf --no-scan stores unscanned layers)"
        )
    merged = dataclasses.replace(stored, **{k: getattr(cfg.model, k) for k in RUNTIME_FIELDS})
    merged.validate("model")
    return merged


def write_run_files(cfg: Config, model_cfg: ModelConfig) -> None:
    """OUTPUT_DIR/model_config.json, tokenizer/, config.yaml and (LoRA) adapter.json: what makes each
    step loadable."""
    out = epath.Path(cfg.output_dir)
    model_ckpt.save_model_config(out, model_cfg)
    if cfg.lora.enabled:
        from mathjax_train.model.lora import save_adapter_meta

        save_adapter_meta(out, cfg.init_from, cfg.lora)
    (out / "config.json").write_text(json.dumps(to_dict(cfg), indent=2))
    src = None
    if cfg.data.tokenizer:
        src = epath.Path(cfg.data.tokenizer)
    elif cfg.init_from:
        src = model_ckpt.resolve(cfg.init_from).tokenizer_dir
    if src is not None and src.exists():
        from mathjax_train.convert.import_hf import copy_tokenizer_files

        copy_tokenizer_files(src, out / model_ckpt.TOKENIZER_DIR)


class SigtermFlag:
    """SIGTERM sets `.set` instead of killing the process (main thread only), so a loop can save first."""

    def __init__(self):
        self.set = False
        self.previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame):
        self.set = True

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
            self.previous = None


class RunLoop:
    """One run's checkpoints, metrics and stopping rules. `restore()` (resume) and `begin()` (metrics writer,
    last step of this run) come before the steps, `with loop:` catches SIGTERM during them (`preempted()`),
    and `close()` (in a `finally`) waits for a pending save and closes the checkpointer and the writer."""

    def __init__(self, cfg: Config, *, log: Callable[[str], None], is_main: bool = True):
        self.cfg, self.log, self.is_main = cfg, log, is_main
        self.total = cfg.train.steps
        self.ckpt = TrainCheckpointer(cfg.output_dir, cfg.checkpoint)
        self.start = self.end = 0
        self.writer: MetricsWriter | None = None
        self.sigterm = SigtermFlag()
        self.started = time.time()

    def restore(self, abstract_state: dict) -> tuple[dict, Any] | None:
        """The latest checkpoint's (state, data state), logged as `resumed`; None when there is none."""
        step = self.ckpt.latest_step()
        if step is None:
            return None
        state, meta = self.ckpt.restore(step, abstract_state)
        self.start = step
        self.log(json.dumps({"event": "resumed", "step": step, "checkpoint": str(self.step_dir(step))}))
        return state, meta["data_state"]

    def begin(self, max_steps_this_run: int | None) -> MetricsWriter:
        """Fix the step this run stops at and open the metrics writer (rows after the start are dropped)."""
        self.end = self.total if max_steps_this_run is None else min(self.total, self.start + max_steps_this_run)
        self.writer = MetricsWriter(self.cfg.output_dir, resume_step=self.start, enabled=self.is_main)
        self.started = time.time()
        return self.writer

    def step_dir(self, step: int) -> epath.Path:
        return self.ckpt.directory / str(step)

    def preempted(self, step: int) -> bool:
        """SIGTERM arrived (one host), or every host agrees a preemption notice did (several)."""
        return self.sigterm.set if jax.process_count() == 1 else self.ckpt.reached_preemption(step)

    def save_due(self, step: int, preempted: bool) -> bool:
        """Every checkpoint.every_steps, at the last step of the run (and of this run), and at a preemption."""
        return step % self.cfg.checkpoint.every_steps == 0 or step == self.total or step == self.end or preempted

    def stopped_by_preemption(self, step: int) -> None:
        self.log(json.dumps({"event": "preempted", "step": step, "checkpoint_saved": True}))

    def eta(self, step: int) -> float:
        return eta_seconds(self.started, step - self.start, self.total - step)

    def close(self) -> None:
        self.ckpt.wait()
        self.ckpt.close()
        if self.writer is not None:
            self.writer.close()

    def __enter__(self) -> RunLoop:
        self.sigterm.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.sigterm.__exit__(*exc)
