"""What an RL run reports (rl/trainer.py): the progress line of each step, and the summary of the run: held-out
accuracy before and after with intervals, the paired per-problem change, validation and the step kept as best."""

from __future__ import annotations

import sys

from etils import epath

from mathjax_train.config import Config
from mathjax_train.eval.metrics import binomial_interval, paired_by_problem
from mathjax_train.eval.results import first_correct
from mathjax_train.rl.best import BEST_DIR
from mathjax_train.train.metrics import format_duration
from mathjax_train.train.run_loop import RunLoop


def progress_line(row: dict, loop: RunLoop) -> None:
    """The step's line on stderr: reward, pass rate, length, clipping, mismatch, sampling rate, evaluations, ETA."""
    eta = loop.eta(row["step"])
    held = "".join(
        f" | {label} {row[key]:.3f}"
        for label, key in (("held-out", "heldout_accuracy"), ("validation", "validation_accuracy"))
        if key in row
    )
    mismatch = (
        f" | logp mismatch max {row['mismatch_max_abs']:.1e} kl {row['mismatch_kl_k3']:.1e}"
        if "mismatch_max_abs" in row
        else ""
    )
    print(
        f"rl step {row['step']}/{loop.total} | reward {row['reward_mean']:.3f} | pass {row['pass_rate']:.3f} | "
        f"len {row['response_length']:.0f} | clip {row.get('clip_fraction', 0):.3f}{mismatch} | "
        f"{row['sampled_tokens_per_second']:.0f} sampled tok/s{held} | ETA {format_duration(eta)}",
        file=sys.stderr,
        flush=True,
    )


def run_summary(cfg: Config, run: dict, step: int, status: str, seconds_this_run: float) -> dict:
    held = run["heldout"]
    before = held.get("0")
    after = held.get(str(step)) if step else before
    out = {
        "status": status,
        "steps": step,
        "sampled_tokens": run["sampled_tokens"],
        "seconds": round(run["seconds"], 1),
        "seconds_this_run": round(seconds_this_run, 1),
        "heldout_accuracy_before": before["accuracy"] if before else None,
        "heldout_accuracy_after": after["accuracy"] if after else None,
        "heldout_problems": before["problems"] if before else 0,
        "heldout": held,
        "output_dir": cfg.output_dir,
    }
    if before and after:
        out["heldout_interval_before"] = binomial_interval(before["correct"], before["problems"])
        out["heldout_interval_after"] = binomial_interval(after["correct"], after["problems"])
        if "samples" in before and "samples" in after:
            out["heldout_difference"] = _paired(before, after)
    if run.get("validation"):
        out["validation"] = run["validation"]
    best = run.get("best")
    if best is not None:
        chosen = held.get(str(best["step"]))
        out["best"] = dict(best, dir=str(epath.Path(cfg.output_dir) / BEST_DIR))
        if chosen is not None:
            out["best"]["heldout_accuracy"] = chosen["accuracy"]
            out["best"]["heldout_interval"] = binomial_interval(chosen["correct"], chosen["problems"])
            if before and "samples" in before and "samples" in chosen:
                out["best"]["heldout_difference"] = _paired(before, chosen)
    return out


def _paired(before: dict, after: dict) -> dict:
    """The paired per-problem change on the same problems: the noise of a before/after difference,
    not the two Wilson intervals side by side (which overlap for a real +-2 point change on 1000)."""
    return paired_by_problem(first_correct(before["samples"]), first_correct(after["samples"]))
