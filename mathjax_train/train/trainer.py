"""The training loop: mesh, sharded state, per-host data, jitted steps, checkpoints, metrics.

Re-running the same command resumes from the latest checkpoint (state, optimizer, RNG, data
position). SIGTERM (preemption) saves a checkpoint at the next step boundary and exits; a
non-finite loss or gradient stops the run naming the step, and the last good checkpoint stays
the latest because the guarded step never applies such an update.
"""

from __future__ import annotations

import json
import queue
import threading
import time

import jax

from mathjax_train.config import Config
from mathjax_train.data.sources import make_train_iterator
from mathjax_train.model import checkpoint as model_ckpt
from mathjax_train.parallel.distributed import maybe_initialize
from mathjax_train.parallel.host_data import global_batch, host_rows
from mathjax_train.parallel.preflight import run_preflight
from mathjax_train.train.flops import peak_flops_per_device, train_flops_per_token
from mathjax_train.train.metrics import print_line
from mathjax_train.train.epochs import with_epoch_steps
from mathjax_train.train.run_loop import PREEMPTED_EXIT_CODE, RunLoop, resolve_model_config, write_run_files
from mathjax_train.train.setup import build_step
from mathjax_train.train.step import MOE_KEYS

__all__ = ["PREEMPTED_EXIT_CODE", "TrainingDiverged", "resolve_model_config", "train"]


class TrainingDiverged(RuntimeError):
    """The loss or gradient norm was not finite; the update was not applied."""


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


def train(cfg: Config, *, max_steps_this_run: int | None = None, log=print_line) -> dict:
    """Run (or resume) training as configured. Returns a summary dict with `status`:
    `finished`, `preempted` or `stopped` (max_steps_this_run reached)."""
    maybe_initialize(cfg.distributed)
    cfg = with_epoch_steps(cfg)
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
    loop = RunLoop(cfg, log=log, is_main=is_main)
    ckpt = loop.ckpt
    restored = loop.restore(layout.abstract)
    if restored is not None:
        state, data_state = restored
        if setup.lora is not None:  # checkpoints hold the adapters; the frozen base comes from init_from again
            state["base"] = setup.load_base(cfg.init_from)
        data.set_state(data_state)
    else:
        params = None
        if setup.lora is not None:
            params = setup.load_base(cfg.init_from)
        elif cfg.init_from:
            params = model_ckpt.load_params(cfg.init_from, model_cfg, layout.param_shardings)
        state = setup.init_state(cfg.train.seed, params)
        if is_main:
            write_run_files(cfg, model_cfg)
    start = loop.start
    if start >= total:
        if ckpt.latest_step() is None:  # train.steps 0: the initialised model, saved restorable
            ckpt.save(state, data.get_state(), wait=True)
        ckpt.close()
        return {"status": "finished", "step": start, "resumed_from": start, "last_metrics": None}

    step_fn = setup.step
    writer = loop.begin(max_steps_this_run)
    end = loop.end
    flops_per_token = train_flops_per_token(model_cfg, cfg.train.seq_len)
    peak = peak_flops_per_device(configured_tflops=cfg.train.peak_tflops_per_device, dtype=model_cfg.dtype)
    peak_total = peak * jax.device_count()
    status, step, data_state = "finished", start, data.get_state()
    prefetch = _Prefetcher(data)
    window_t, window_tokens = time.time(), 0.0
    row = None  # the last metrics row; every process computes it, process 0 writes it
    try:
        with loop, jax.set_mesh(mesh):
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
                    row.update({k: float(m[k]) for k in MOE_KEYS if k in m})  # router losses, with experts
                    writer.write(row)
                    writer.progress(step, total, row, loop.started, start)
                    window_t, window_tokens = now, 0.0
                preempted = loop.preempted(step)
                if loop.save_due(step, preempted):
                    ckpt.save(state, data_state, wait=preempted)
                if preempted:
                    status = "preempted"
                    loop.stopped_by_preemption(step)
                    break
            else:
                status = "finished" if step >= total else "stopped"
                if step == start and ckpt.latest_step() != step:
                    ckpt.save(state, data_state)  # a 0-step run leaves the initial state restorable
    finally:
        prefetch.close()
        loop.close()
    return {"status": status, "step": step, "resumed_from": start, "data_state": data_state, "last_metrics": row}
