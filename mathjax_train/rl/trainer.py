"""The RL loop (`mathjax-train rl`): collocated sampler and learner on one set of parameter arrays.

Per step: collect B groups of G completions on the engine (rewards from the grader), turn rewards
into group advantages, measure how far the engine's log-probabilities lie from the learner's with the
same parameters (rl/mismatch.py; corrected when configured), and run rl.updates_per_batch passes of
rl.minibatches optimizer updates on the clipped surrogate. The learner is sharded by the run's mesh over every
device of every host (as SFT is); each host samples its share of the prompts on its own engine, and the updated
parameters reach the engines on the devices (rl/reshard.py; one device: the engine reads the learner's arrays). Checkpoints (train/checkpointing.py) hold the parameters, optimizer state, RNG, the prompt
stream's position and the run's totals, so a stopped or killed run resumes to the same later metrics
as an uninterrupted one. Each save writes its checkpoint once; a held-out/validation evaluation due at
that step runs after it on the saved step and is stored beside it (OUTPUT_DIR/heldout/step_N, the
harness's own resumable results), so a run resuming at that step reads it back (or completes it).
Run set-up, checkpoints, metrics and SIGTERM handling are shared with SFT (train/run_loop.py).
"""

from __future__ import annotations

import copy
import json
import math
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from mathjax_train.config import Config, ConfigError, ModelConfig
from mathjax_train.data.templates import get_template
from mathjax_train.data.vocab import load_tokenizer
from mathjax_train.infer.exact import ExactRows
from mathjax_train.infer.loading import LoadedModel
from mathjax_train.model import checkpoint as model_ckpt
from mathjax_train.infer.placement import engine_placement
from mathjax_train.parallel.distributed import maybe_initialize
from mathjax_train.parallel.host_data import whole_batch
from mathjax_train.parallel.host_gather import barrier
from mathjax_train.parallel.mesh import make_mesh
from mathjax_train.parallel.rules import axis_rules, batch_sharding
from mathjax_train.rl.batch import build_batch, split_rows
from mathjax_train.rl.best import improves, save_best
from mathjax_train.rl.heldout import heldout_accuracy
from mathjax_train.rl.learner import EXACT_KEY, MINIBATCH_KEYS, learner_devices, make_reference_logprobs, make_update
from mathjax_train.rl.loss import group_advantages
from mathjax_train.rl.mismatch import correct_batch, mismatch_metrics
from mathjax_train.rl.prompts import PromptStream
from mathjax_train.rl.report import progress_line, run_summary
from mathjax_train.rl.reshard import Resharder
from mathjax_train.rl.rollout import Sampler, collect
from mathjax_train.train.optimizer import make_optimizer
from mathjax_train.train.state import init_state, state_layout
from mathjax_train.train.run_loop import PREEMPTED_EXIT_CODE, RunLoop, resolve_model_config, write_run_files

SUMMARY_FILE = "rl_summary.json"
TIMING_KEYS = (
    "sample_seconds",
    "learn_seconds",
    "sampled_tokens_per_second",
    "step_seconds",
    "mismatch_seconds",
    "reshard_seconds",
)

__all__ = ["PREEMPTED_EXIT_CODE", "SUMMARY_FILE", "TIMING_KEYS", "run_rl"]


def _log(msg: str) -> None:
    print(f"[rl] {msg}", file=sys.stderr, flush=True)


def updates_per_step(cfg: Config) -> int:
    return cfg.rl.updates_per_batch * cfg.rl.minibatches


def _check(cfg: Config) -> None:
    if not cfg.init_from:
        raise ConfigError("init_from: rl starts from a checkpoint (e.g. the demo's train dir); set init_from=DIR")
    if cfg.rl.max_new_tokens >= cfg.train.seq_len:
        raise ConfigError(
            f"rl.max_new_tokens ({cfg.rl.max_new_tokens}) must be below train.seq_len "
            f"({cfg.train.seq_len}), which holds prompt + completion"
        )
    if cfg.lora.enabled:
        raise ConfigError("lora.rank: rl trains all parameters for now; set lora.rank=0")
    if cfg.train.epochs:
        raise ConfigError(
            "train.epochs: an rl run counts steps of rollouts, not passes over a data set; set train.steps"
        )


def _check_mesh(cfg: Config, mesh) -> None:
    """The learner's mesh against what rl needs of it: one device in exact mode, minibatches that split evenly."""
    if cfg.rl.exact_logprobs and mesh.size > 1:
        raise ConfigError(f"rl.exact_logprobs: the learner must run on one device (mesh of {mesh.size}) in exact mode")
    rows = cfg.rl.prompts_per_step * cfg.rl.group_size // cfg.rl.minibatches
    spec = batch_sharding(mesh, axis_rules(cfg.mesh.rules)).spec[0]
    ways = math.prod(mesh.shape[a] for a in ((spec,) if isinstance(spec, str) else spec or ()))
    if rows % ways:
        raise ConfigError(
            f"rl: a minibatch of {rows} rows (prompts_per_step x group_size / minibatches) does not split evenly "
            f"over the mesh's batch axes ({dict(mesh.shape)}); change rl.minibatches or mesh.*"
        )


def _step_metrics(rollout, batch: dict, learn: list[dict]) -> dict:
    scores = rollout.scores  # the policy's, over everything sampled (dynamic sampling keeps a biased subset)
    kept = [s.reward for g in rollout.groups for s in g.scores]
    lengths = [c.num_tokens for g in rollout.groups for c in g.completions]
    row = {
        "reward_mean": float(np.mean([s.reward for s in scores])),
        "pass_rate": float(np.mean([s.correct for s in scores])),
        "answer_rate": float(np.mean([s.has_answer for s in scores])),
        "truncated_rate": float(np.mean([s.truncated for s in scores])),
        "trained_reward_mean": float(np.mean(kept)) if kept else 0.0,
        "response_length": float(np.mean(lengths)) if lengths else 0.0,
        "groups": len(rollout.groups),
        "groups_sampled": rollout.sampled,
        "groups_dropped": rollout.dropped,
        "sampled_tokens": rollout.sampled_tokens,
        "tool_calls": sum(c.tool_calls for g in rollout.groups for c in g.completions),
    }
    # a minibatch with no trained token (padding rows of a short dynamic-sampling batch) updates nothing
    # and its zeros would drag the means down (a ratio_mean of 0.5 with one empty minibatch of two)
    applied = [m for m in learn if float(m["trained_tokens"]) > 0]
    means = ("loss", "grad_norm", "clip_fraction", "ratio_mean", "entropy", "kl")
    extremes = (("ratio_min", min), ("ratio_max", max))  # over every update's trained tokens
    for key, pick in [(k, np.mean) for k in means] + list(extremes):
        vals = [float(m[key]) for m in applied if key in m]
        if vals:
            row[key] = float(pick(vals))
    row["trained_tokens"] = int(batch["loss_mask"].sum())
    return row


@dataclass
class _Rl:
    """One RL run's pieces (built by `_setup`): the learner's update and state, the reference, the engine,
    the prompt stream, and `run`, the totals each checkpoint stores beside the state."""

    cfg: Config
    model_cfg: ModelConfig
    mesh: Any
    loop: RunLoop
    update: Callable
    schedule: Callable
    logp_fn: Callable  # the policy's log-probabilities before an update, and the reference's
    reference: Any  # frozen initial parameters (rl.kl_coef > 0), sharded like the policy; else None
    stream: PromptStream
    sampler: Sampler
    resharder: Resharder  # the learner's parameters -> this host's engine
    batch_sharding: Any  # the learner's (rows, length) layout
    template: Any
    exact: ExactRows | None  # rl.exact_logprobs: the learner scores with the engine's program
    state: dict
    run: dict  # prompts (stream position), sampled_tokens, seconds, heldout, validation, best

    @property
    def out(self) -> epath.Path:
        return epath.Path(self.cfg.output_dir)


def run_rl(cfg: Config, *, max_steps_this_run: int | None = None, log=_log) -> dict:
    """Run (or resume) RL as configured; returns the summary (also written to OUTPUT_DIR/rl_summary.json
    when the run finishes). `status`: finished | stopped (max_steps_this_run) | preempted (SIGTERM)."""
    maybe_initialize(cfg.distributed)
    _check(cfg)
    t_run = time.time()
    r = _setup(cfg, log)
    loop = r.loop
    status, step = "finished", loop.start
    try:
        _evaluate_at_start(r)
        writer = loop.begin(max_steps_this_run)
        with loop:
            while step < loop.end:
                step += 1
                row = _rl_step(r, step)
                preempted = loop.preempted(step)
                eval_due = _eval_due(cfg, step)
                if loop.save_due(step, preempted) or eval_due:
                    _save(r, wait=eval_due or preempted)  # the evaluation reads the saved step: complete it first
                if eval_due:
                    row.update(_evaluate(r, step, str(loop.step_dir(step))))
                writer.write(row)
                if loop.is_main:
                    progress_line(row, loop)
                if preempted:
                    status = "preempted"
                    loop.stopped_by_preemption(step)
                    break
            else:
                status = "finished" if step >= loop.total else "stopped"
    finally:
        loop.close()
        r.sampler.close()
    return _finish(r, step, status, time.time() - t_run)


def _setup(cfg: Config, log) -> _Rl:
    """Mesh, optimizer and jitted update; the state restored from the latest checkpoint or initialised from
    `init_from` (OUTPUT_DIR's run files written); the reference; the engine over the state's parameters."""
    rl = cfg.rl
    model_cfg = resolve_model_config(cfg)
    devices = learner_devices(cfg)
    mesh = make_mesh(cfg.mesh, devices)
    _check_mesh(cfg, mesh)
    rules = axis_rules(cfg.mesh.rules)
    tx, schedule = make_optimizer(cfg.optimizer, cfg.train.steps * updates_per_step(cfg))
    layout = state_layout(model_cfg, tx, mesh, rules)
    update = make_update(
        model_cfg, rl, tx, layout, mesh, rules, batch_sharding(mesh, rules), constant_len=rl.max_new_tokens
    )
    out = epath.Path(cfg.output_dir)
    is_main = jax.process_index() == 0
    loop = RunLoop(cfg, log=log, is_main=is_main)
    stream = PromptStream(cfg)
    load_init = lambda: model_ckpt.load_params(cfg.init_from, model_cfg, layout.param_shardings)  # noqa: E731
    reference = load_init() if rl.kl_coef > 0 else None  # frozen, sharded like the policy
    restored = loop.restore(layout.abstract)
    if restored is not None:
        state, run = restored
        stream.set_state(run["prompts"])
    else:
        params = jax.tree_util.tree_map(jnp.copy, reference) if reference is not None else load_init()
        state = init_state(model_cfg, tx, layout, cfg.train.seed, params)  # donates nothing of `reference`
        if is_main:
            write_run_files(cfg, model_cfg)
        run = {"prompts": stream.get_state(), "sampled_tokens": 0, "seconds": 0.0, "heldout": {}}
    run.setdefault("validation", {})
    run.setdefault("best", None)
    barrier("rl:run files")  # every host reads the tokenizer process 0 wrote
    tokenizer = load_tokenizer(out / model_ckpt.TOKENIZER_DIR)
    template = get_template(
        cfg.data.template, tokenizer_config=out / model_ckpt.TOKENIZER_DIR if cfg.data.template == "chat" else None
    )
    resharder = Resharder(model_cfg, layout.param_shardings, engine_placement(rl.engine.tensor, model_cfg), devices)
    sampler = Sampler(LoadedModel(model_cfg, resharder(state["params"]), tokenizer), cfg)
    return _Rl(
        cfg=cfg,
        model_cfg=model_cfg,
        mesh=mesh,
        loop=loop,
        update=update,
        schedule=schedule,
        logp_fn=make_reference_logprobs(model_cfg, rules, mesh),
        reference=reference,
        stream=stream,
        sampler=sampler,
        resharder=resharder,
        batch_sharding=batch_sharding(mesh, rules),
        template=template,
        exact=sampler.engine.exact,
        state=state,
        run=run,
    )


def _rl_step(r: _Rl, step: int) -> dict:
    """Step `step`: sample B groups of G, score them, measure (and correct) the sampler/learner mismatch, run the
    updates, hand the new parameters to the engine; returns the step's metrics row."""
    cfg, rl, exact = r.cfg, r.cfg.rl, r.exact
    t_step = time.time()
    rollout = collect(r.stream, r.sampler, r.template, cfg)
    t_sampled = time.time()
    adv, comps, prompts, drop = [], [], [], []
    for g in rollout.groups:
        adv += [float(a) for a in np.asarray(group_advantages([g.rewards], rl.normalize_std))[0]]
        for c, s in zip(g.completions, g.scores):
            comps.append(_fit(c, len(g.prompt_ids), cfg.train.seq_len))
            prompts.append(g.prompt_ids)
            drop.append(rl.overlong == "filter" and s.truncated)
    batch = build_batch(prompts, comps, adv, cfg.train.seq_len, rl.prompts_per_step * rl.group_size, drop)
    # a minibatch at a time: the step's B x G rows of full logits would not fit
    parts = split_rows(batch, rl.minibatches)
    if exact is not None:  # each row alone, as the engine sampled it: bit for bit its numbers
        batch["learner_logp"] = batch[EXACT_KEY] = exact.target_logprobs(r.state["params"], batch)
    else:
        batch["learner_logp"] = np.concatenate([_logp(r, r.state["params"], p) for p in parts])
    mismatch = mismatch_metrics(batch["learner_logp"], batch["old_logp"], batch["loss_mask"])
    mismatch.update(correct_batch(batch, rl))
    t_measured = time.time()
    if r.reference is not None:
        batch["ref_logp"] = np.concatenate([_logp(r, r.reference, p) for p in parts])
    else:
        batch["ref_logp"] = np.zeros_like(batch["old_logp"])
    keys = MINIBATCH_KEYS + ((EXACT_KEY,) if exact is not None else ())
    learn = []
    parts = split_rows({k: batch[k] for k in keys}, rl.minibatches)
    state = r.state
    for epoch in range(rl.updates_per_batch):
        for j, mb in enumerate(parts):
            last = epoch == rl.updates_per_batch - 1 and j == len(parts) - 1
            if exact is not None and (epoch or j):  # the parameters moved: score at the new ones
                mb = dict(mb, **{EXACT_KEY: exact.target_logprobs(state["params"], mb)})
            with jax.set_mesh(r.mesh):  # the learner's programs trace in its mesh; the engine's in their own
                state, m = r.update(state, whole_batch(mb, r.batch_sharding), jnp.int32(last))
            learn.append(jax.device_get(m))
    r.state = state
    r.sampler.drop_params()
    r.sampler.set_params(r.resharder(state["params"]))
    jax.block_until_ready(state["step"])
    t_done = time.time()
    run = r.run
    run["sampled_tokens"] += rollout.sampled_tokens
    run["prompts"] = r.stream.get_state()
    run["seconds"] += t_done - t_step
    return {
        "step": step,
        **_step_metrics(rollout, batch, learn),
        **mismatch,
        "lr": float(r.schedule(step * updates_per_step(cfg) - 1)),
        "nonfinite_updates": sum(not bool(m["finite"]) for m in learn),
        "sampled_tokens_total": run["sampled_tokens"],
        "sample_seconds": t_sampled - t_step,
        "learn_seconds": t_done - t_sampled,
        "step_seconds": t_done - t_step,
        "mismatch_seconds": t_measured - t_sampled,
        "reshard_seconds": r.resharder.last_seconds,
        "sampled_tokens_per_second": rollout.sampled_tokens / max(t_sampled - t_step, 1e-9),
    }


def _logp(r: _Rl, params, rows: dict) -> np.ndarray:
    """The learner's log-probabilities of `rows`' targets under `params` (the policy's, or the reference's)."""
    with jax.set_mesh(r.mesh):
        return np.asarray(r.logp_fn(params, whole_batch(rows, r.batch_sharding)))


def _eval_due(cfg: Config, step: int) -> bool:
    """Held-out and validation are scored every rl.eval_every_steps and after the last step (and before the first)."""
    rl = cfg.rl
    every = bool(rl.eval_every_steps) and step % rl.eval_every_steps == 0
    return bool(rl.heldout or rl.validation) and (every or step == cfg.train.steps)


def _save(r: _Rl, *, wait: bool) -> None:
    """The step's one checkpoint: state, and the run's totals as they stand (a copy: an async save must not
    see later changes)."""
    r.loop.ckpt.save(r.state, copy.deepcopy(r.run), wait=wait)


def _evaluate_at_start(r: _Rl) -> None:
    """A fresh run scores `init_from` as step 0. A resumed run completes the evaluation of the step it resumes
    at: it ran after that step's checkpoint was written, its results stored beside the checkpoint by the
    harness (OUTPUT_DIR/heldout/step_N, read back, or finished when the run stopped during it)."""
    start = r.loop.start
    if start == 0:
        _evaluate(r, 0, r.cfg.init_from)
    elif _eval_due(r.cfg, start):
        _evaluate(r, start, str(r.loop.step_dir(start)))


def _evaluate(r: _Rl, step: int, checkpoint: str) -> dict:
    """Score held-out and validation at `step` (once per step; `checkpoint` holds the sampler's parameters) and
    keep the step as OUTPUT_DIR/best when validation improves; returns the accuracies for the metrics row."""
    rl, run, out = r.cfg.rl, r.run, r.out
    accuracies = {}
    for name, dataset, limit in (
        ("heldout", rl.heldout, rl.heldout_limit),
        ("validation", rl.validation, rl.validation_limit),
    ):
        if dataset and str(step) not in run[name]:
            res = heldout_accuracy(r.cfg, r.sampler, checkpoint, out / name / f"step_{step}", dataset, limit)
            run[name][str(step)] = res
            r.loop.log(f"step {step}: {name} accuracy {res['accuracy']:.3f} ({res['correct']}/{res['problems']})")
        if str(step) in run[name]:
            accuracies[f"{name}_accuracy"] = run[name][str(step)]["accuracy"]
    score = run["validation"].get(str(step))
    if score is not None and improves(run["best"], score["accuracy"]):
        run["best"] = {"step": step, "validation_accuracy": score["accuracy"]}
        best_dir = save_best(out, r.state["params"], r.model_cfg, run["best"])
        r.loop.log(f"step {step}: best on validation so far, kept as {best_dir}")
    return accuracies


def _finish(r: _Rl, step: int, status: str, seconds_this_run: float) -> dict:
    """The run's summary; a finished run also plots its reward curve and writes OUTPUT_DIR/rl_summary.json."""
    summary = run_summary(r.cfg, r.run, step, status, seconds_this_run)
    if status == "finished" and r.loop.is_main:
        from mathjax_train.rl.plot import plot_reward_curve

        summary["plot"] = plot_reward_curve(r.out, summary)
        (r.out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
    return summary


def _fit(c, prompt_len: int, seq_len: int):
    """A tool-integrated completion can outgrow the row: train on the prefix that fits."""
    room = seq_len + 1 - prompt_len
    if c.num_tokens <= room:
        return c
    from dataclasses import replace

    return replace(c, token_ids=c.token_ids[:room], logprobs=c.logprobs[:room])
