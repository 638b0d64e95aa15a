"""`mathjax-train demo --study`: the RFT paper's protocol in miniature over several seeds
(configs/pipeline_study.yaml), summarized per seed and over seeds, with a line for each paper claim.

Per seed the three models (SFT at convergence, RFT from k = 16 samples, RFT from k = 4) are graded on the same
held-out problems, so each comparison is paired per problem; over seeds, the mean difference has a t-interval
from the seeds' spread (eval/metrics.py `seed_interval`), beside the paired interval pooled over every seed's
problems (which counts only the evaluation set's noise).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from etils import epath

from mathjax_train.demo.report import pct, side_of_zero

STUDY_PIPELINE = Path(__file__).resolve().parents[2] / "configs" / "pipeline_study.yaml"
STUDY_SUMMARY = "study_summary.json"
STUDY_REPORT = "study_report.md"
ARMS = {"sft": "SFT at convergence (the control)", "rft16": "RFT, k = 16", "rft4": "RFT, k = 4"}
COMPARISONS = (("rft16", "sft"), ("rft4", "sft"), ("rft16", "rft4"))
_SEED = re.compile(r"^evaluate_s(\d+)$")


def _paths(st: dict, k: int, seed: int) -> dict:
    """What sampling at k found for one seed: right-answer distinct paths, those turned down for a wrong step,
    and the paths kept for retraining (the select stage's rows less its references)."""
    sample, select = st[f"sample{k}_s{seed}"]["metrics"], st[f"select{k}_s{seed}"]["metrics"]
    return {
        "samples": sample["samples"],
        "right_answer_distinct": sample["kept_samples"],
        "wrong_step": select["rejected"].get("wrong_step", 0),
        "kept": select["rows"] - select["questions"],
        "questions": select["questions"],
    }


def summarize_study(manifest: dict) -> dict:
    """Per seed (each seed whose evaluation is done, so a study still running can be read): each arm's greedy
    accuracy, the paired comparisons and the paths found; over seeds (two or more): each comparison's mean
    with its seed interval and the pooled paired interval."""
    from mathjax_train.eval.metrics import paired_by_problem, seed_interval
    from mathjax_train.eval.results import first_correct

    st = manifest["stages"]
    seeds = sorted(int(m.group(1)) for name in st if (m := _SEED.match(name)) and st[name].get("status") == "done")
    per_seed: list[dict] = []
    pooled: dict[tuple[str, str], tuple[dict[str, bool], dict[str, bool]]] = {c: ({}, {}) for c in COMPARISONS}
    for s in seeds:
        ev = st[f"evaluate_s{s}"]
        correct = {arm: first_correct(ev["outputs"][f"{arm}_s{s}.greedy"]["path"]) for arm in ARMS}
        row: dict = {
            "seed": s,
            "accuracy": {arm: ev["metrics"][f"{arm}_s{s}"]["greedy"]["accuracy"] for arm in ARMS},
            "paths": {f"k{k}": _paths(st, k, s) for k in (16, 4)},
        }
        for a, b in COMPARISONS:
            row[f"{a}_minus_{b}"] = paired_by_problem(correct[b], correct[a])
            for arm, into in ((b, pooled[(a, b)][0]), (a, pooled[(a, b)][1])):
                into.update({f"{s}/{pid}": ok for pid, ok in correct[arm].items()})
        per_seed.append(row)
    over = {}
    if len(seeds) >= 2:
        for a, b in COMPARISONS:
            key = f"{a}_minus_{b}"
            over[key] = {
                "seeds": seed_interval([r[key]["difference"] for r in per_seed]),
                "pooled_paired": paired_by_problem(*pooled[(a, b)]),
            }
        over["accuracy"] = {arm: seed_interval([r["accuracy"][arm] for r in per_seed]) for arm in ARMS}
    problems = per_seed[0]["rft16_minus_sft"]["problems"] if per_seed else 0
    return {"seeds": seeds, "per_seed": per_seed, "over_seeds": over, "heldout_problems": problems}


def _pts(d: float) -> str:
    return f"{d * 100:+.1f}"


def _iv(iv: list[float]) -> str:
    return f"[{iv[0] * 100:+.1f}, {iv[1] * 100:+.1f}]"


def verdict(iv: list[float]) -> str:
    """shown (above zero), reversed (below zero) or not shown (includes zero), by a 95% interval."""
    return {"above": "shown", "below": "reversed", "zero": "not shown"}[side_of_zero(iv)]


def markdown(summary: dict, seconds: float | None = None) -> str:
    """The study's report: the protocol, per-seed figures, the over-seed intervals and one line per claim."""
    per, over = summary["per_seed"], summary["over_seeds"]
    lines = [
        "# The RFT protocol in miniature",
        "",
        f"Protocol fixed before the run: `{STUDY_PIPELINE.relative_to(STUDY_PIPELINE.parents[1])}`. Seeds: "
        f"{', '.join(map(str, summary['seeds']))}; held-out problems: {summary['heldout_problems']} (the same for "
        "every model). Brackets are 95% intervals: per seed, paired over the problems; over seeds, a t-interval from "
        "the seeds' spread, and the paired interval pooled over every seed's problems.",
        "",
        "## Per seed",
        "| seed | " + " | ".join(ARMS.values()) + " | RFT k=16 minus SFT | RFT k=4 minus SFT | k=16 minus k=4 "
        "| paths kept, k=4 / k=16 | turned down for a wrong step, k=4 / k=16 |",
        "|---|" + "---|" * (len(ARMS) + 5),
    ]
    for r in per:
        p4, p16 = r["paths"]["k4"], r["paths"]["k16"]
        diffs = [r[f"{a}_minus_{b}"] for a, b in COMPARISONS]
        lines.append(
            f"| {r['seed']} | "
            + " | ".join(pct(r["accuracy"][a]) for a in ARMS)
            + " | "
            + " | ".join(f"{_pts(d['difference'])} {_iv(d['interval'])}" for d in diffs)
            + f" | {p4['kept']} / {p16['kept']} | {p4['wrong_step']} / {p16['wrong_step']} |"
        )
    if not over:
        lines += ["", f"Over seeds and the claims: after two or more seeds finish ({len(per)} so far)."]
    if over:
        lines += [
            "",
            "## Over seeds",
            "| comparison | mean difference | seed interval | pooled paired interval |",
            "|---|---|---|---|",
        ]
        for a, b in COMPARISONS:
            o = over[f"{a}_minus_{b}"]
            lines.append(
                f"| {ARMS[a]} minus {ARMS[b]} | {_pts(o['seeds']['mean'])} | {_iv(o['seeds']['interval'])} | "
                f"{_iv(o['pooled_paired']['interval'])} |"
            )
        gain, more = over["rft16_minus_sft"]["seeds"]["interval"], over["rft16_minus_rft4"]["seeds"]["interval"]
        kept = {k: sum(r["paths"][k]["kept"] for r in per) for k in ("k4", "k16")}
        lines += [
            "",
            "## The papers' claims in this miniature",
            f"- RFT beats SFT at convergence (RFT paper): **{verdict(gain)}** over seeds, k = 16: "
            f"{_pts(over['rft16_minus_sft']['seeds']['mean'])} {_iv(gain)}.",
            f"- More distinct paths, more gain (RFT paper, k = 4 vs 16): k = 16 kept {kept['k16']} paths over the seeds "
            f"against {kept['k4']} at k = 4; the accuracy difference is **{verdict(more)}**: "
            f"{_pts(over['rft16_minus_rft4']['seeds']['mean'])} {_iv(more)}.",
            "- Weaker models gain more, and pooling two models' paths (RFT-U): not run in this study (it trains one "
            "model size).",
            "- Two-stage SFT helps the hard levels (Skywork-Math): not run in this study (its families are level 1 "
            "only).",
            "- Tool-integrated solutions beat text on hard arithmetic (MARIO): not run in this study (no tool-using "
            "arm).",
            "- pass@k far above the first answer (Xwin-Math): shown by `mathjax-train demo` (its report).",
        ]
    if seconds is not None:
        lines += ["", f"Run time: {seconds:.0f} s."]
    return "\n".join(lines) + "\n"


def run_study(output_dir: str = "runs/study", overrides: tuple[str, ...] = (), config: str | None = None) -> dict:
    """Run (or resume) the study pipeline under `output_dir`; writes and returns its summary and report."""
    from mathjax_train.demo.run import run_and_read

    t0 = time.time()
    pipe, manifest = run_and_read(str(config or STUDY_PIPELINE), output_dir, overrides)
    summary = summarize_study(manifest)
    summary["seconds"] = round(time.time() - t0, 1)
    out = epath.Path(pipe.run_dir)
    (out / STUDY_SUMMARY).write_text(json.dumps(summary, indent=2))
    (out / STUDY_REPORT).write_text(markdown(summary, summary["seconds"]))
    summary["report"] = str(out / STUDY_REPORT)
    return summary
