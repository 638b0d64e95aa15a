"""The training loop: mesh, sharded state, per-host data, jitted steps, checkpoints, metrics.

Re-running the same command resumes from the latest checkpoint (state, optimizer, RNG, data
position). SIGTERM (preemption) saves a checkpoint at the next step boundary and exits; a
non-finite loss or gradient stops the run naming the step, and the last good checkpoint stays
the latest because the guarded step never applies such an update.
"""

from __future__ import annotations

import dataclasses
import json
import queue
import signal
import threading
import time

import jax
from etils import epath

from mathjax_train.config import Config, ConfigError, ModelConfig, to_dict
from mathjax_train.data.sources import TOY_SOURCES, make_train_iterator
from mathjax_train.model import checkpoint as model_ckpt
from mathjax_train.parallel.distributed import maybe_initialize
from mathjax_train.parallel.host_data import global_batch, host_rows
from mathjax_train.parallel.preflight import run_preflight
from mathjax_train.train.checkpointing import TrainCheckpointer
from mathjax_train.train.flops import peak_flops_per_device, train_flops_per_token
from mathjax_train.train.metrics import MetricsWriter, print_line
from mathjax_train.train.setup import build_step

PREEMPTED_EXIT_CODE = 143  # 128 + SIGTERM: the job did not finish, re-run the command to resume
RUNTIME_FIELDS = ("dtype", "param_dtype", "scan_layers", "remat_policy", "attention_kernel")


class TrainingDiverged(RuntimeError):
    """The loss or gradient norm was not finite; the update was not applied."""


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


class _Prefetcher:
    """Loads the next host batches in a thread; each item carries the iterator state after it."""

    def __init__(self, iterator, depth: int = 2):
        self.iterator = iterator
        self.queue: queue.Queue[tuple] = queue.Queue(maxsize=depth)  # (batch, state after it, error)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.stop = False
        self.thread.start()

    def _run(self):
        while not self.stop:
            try:
                item = (next(self.iterator), self.iterator.get_state(), None)
            except BaseException as e:  # surfaced in the training thread
                item = (None, None, e)
            self.queue.put(item)
            if item[2] is not None:
                return

    def next(self):
        batch, state, err = self.queue.get()
        if err is not None:
            raise err
        return batch, state

    def close(self):
        self.stop = True
        try:
            while True:
                self.queue.get_nowait()
        except queue.Empty:
            pass


class SigtermFlag:
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


def train(cfg: Config, *, max_steps_this_run: int | None = None, log=print_line) -> dict:
    """Run (or resume) training as configured. Returns a summary dict with `status`:
    `finished`, `preempted` or `stopped` (max_steps_this_run reached)."""
    maybe_initialize(cfg.distributed)
    model_cfg = resolve_model_config(cfg)
    setup = build_step(cfg, model_cfg)
    mesh, bsharding, layout = setup.mesh, setup.batch_sharding, setup.layout
    is_main = jax.process_index() == 0
    preflight = run_preflight(cfg, mesh, bsharding)  # every host: same code/config, counts fit the mesh
    if is_main:
        log(json.dumps(preflight))
    total = cfg.train.steps

    rows = host_rows(cfg.train.batch_size)
    data = make_train_iterator(cfg, rows=rows, shard_index=jax.process_index(), num_shards=jax.process_count())
    ckpt = TrainCheckpointer(cfg.output_dir, cfg.checkpoint)
    start = ckpt.latest_step()
    if start is not None:
        state, meta = ckpt.restore(start, layout.abstract)
        if setup.lora is not None:  # checkpoints hold the adapters; the frozen base comes from init_from again
            state["base"] = setup.load_base(cfg.init_from)
        data.set_state(meta["data_state"])
        log(json.dumps({"event": "resumed", "step": start, "checkpoint": str(ckpt.directory / str(start))}))
    else:
        start = 0
        params = None
        if setup.lora is not None:
            params = setup.load_base(cfg.init_from)
        elif cfg.init_from:
            params = model_ckpt.load_params(cfg.init_from, model_cfg, layout.param_shardings)
        state = setup.init_state(cfg.train.seed, params)
        if is_main:
            write_run_files(cfg, model_cfg)
    if start >= total:
        if ckpt.latest_step() is None:  # train.steps 0: the initialised model, saved restorable
            ckpt.save(state, data.get_state(), wait=True)
        ckpt.close()
        return {"status": "finished", "step": start, "resumed_from": start, "last_metrics": None}

    step_fn = setup.step
    writer = MetricsWriter(cfg.output_dir, resume_step=start, enabled=is_main)
    flops_per_token = train_flops_per_token(model_cfg, cfg.train.seq_len)
    peak = peak_flops_per_device(configured_tflops=cfg.train.peak_tflops_per_device, dtype=model_cfg.dtype)
    peak_total = peak * jax.device_count()
    status, step, data_state = "finished", start, data.get_state()
    prefetch = _Prefetcher(data)
    started, window_t, window_tokens = time.time(), time.time(), 0.0
    row = None  # the last metrics row; every process computes it, process 0 writes it
    end = total if max_steps_this_run is None else min(total, start + max_steps_this_run)
    try:
        with jax.set_mesh(mesh), SigtermFlag() as sigterm:
            while step < end:
                local, data_state = prefetch.next()
                state, m = step_fn(state, global_batch(local, bsharding))
                m = jax.device_get(m)
                step += 1
                if not m["finite"]:
                    raise TrainingDiverged(
                        f"step {step}: loss={float(m['loss'])}, grad_norm={float(m['grad_norm'])} is not finite; "
                        f"the update was not applied and the latest checkpoint "
                        f"(step {ckpt.latest_step()}) is the last good one"
                    )
                window_tokens += float(m["tokens"])
                if step % cfg.train.log_every_steps == 0 or step == end:
                    jax.block_until_ready(state["step"])
                    now = time.time()
                    tps = window_tokens / max(now - window_t, 1e-9)
                    row = {
                        "step": step,
                        "loss": float(m["loss"]),
                        "accuracy": float(m["accuracy"]),
                        "grad_norm": float(m["grad_norm"]),
                        "lr": float(m["lr"]),
                        "z_loss": float(m["z_loss"]),
                        "target_tokens": float(m["target_tokens"]),
                        "tokens_per_second": tps,
                        "mfu": tps * flops_per_token / peak_total,
                    }
                    writer.write(row)
                    writer.progress(step, total, row, started, start)
                    window_t, window_tokens = now, 0.0
                preempted = sigterm.set if jax.process_count() == 1 else ckpt.reached_preemption(step)
                if step % cfg.checkpoint.every_steps == 0 or step == total or preempted or step == end:
                    ckpt.save(state, data_state, wait=preempted)
                if preempted:
                    status = "preempted"
                    log(json.dumps({"event": "preempted", "step": step, "checkpoint_saved": True}))
                    break
            else:
                status = "finished" if step >= total else "stopped"
                if step == start and ckpt.latest_step() != step:
                    ckpt.save(state, data_state)  # a 0-step run leaves the initial state restorable
    finally:
        prefetch.close()
        ckpt.wait()
        ckpt.close()
        writer.close()
    return {"status": status, "step": step, "resumed_from": start, "data_state": data_state, "last_metrics": row}
