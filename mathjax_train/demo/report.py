"""RUN_DIR/report.md for the demo: what each claim showed, how much of it is noise, and the plots
it links (accuracy per stage, pass@k and maj@k against first-answer accuracy; the scaling stage's fit), and
the per-family breakdown of held-out accuracy and kept paths (demo/diagnosis.py)."""

from __future__ import annotations

import os

from etils import epath

from mathjax_train.config import is_remote
from mathjax_train.demo import diagnosis


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _interval(lo_hi: list[float]) -> str:
    return f"[{pct(lo_hi[0])}, {pct(lo_hi[1])}]"


def side_of_zero(interval: list[float]) -> str:
    """Where a paired difference's 95% interval lies: "above" or "below" zero, or "zero" (it includes it)."""
    return "above" if interval[0] > 0 else "below" if interval[1] < 0 else "zero"


def plot_stages(summary: dict, path: str) -> None:
    """Greedy accuracy of each model the loop made, with 95% intervals where the summary has them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fit, iv = summary["scaling_fit"], summary["intervals"]
    bars: list[tuple[str, float, str | None, str]] = [("untrained", summary["accuracy_before"], "before", "#999")]
    bars += [
        (f"SFT {s:g}", a, "sft" if i == len(fit["sizes"]) - 1 else None, "#4c72b0")
        for i, (s, a) in enumerate(zip(fit["sizes"], fit["accuracies"]))
    ]
    bars.append(("SFT + RFT", summary["accuracy_rft"], "rft", "#dd8452"))
    if "accuracy_continued_sft" in summary:
        bars.append(("SFT continued\n(control)", summary["accuracy_continued_sft"], "continued_sft", "#55a868"))
    fig, ax = plt.subplots(figsize=(8, 3.6))
    ax.bar([b[0] for b in bars], [b[1] for b in bars], color=[b[3] for b in bars])
    for x, (_, value, key, _) in enumerate(bars):
        if key:
            lo, hi = iv[key]
            ax.errorbar(x, value, yerr=[[value - lo], [hi - value]], color="k", capsize=4)
    ax.set_ylabel(f"greedy accuracy ({summary['heldout_problems']} held-out)")
    ax.set_title("Accuracy per stage")
    ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_pass_at_k(summary: dict, path: str) -> None:
    """pass@k and maj@k of the SFT model against k, first-answer accuracies as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for metric, style in (("pass_at_k", "-o"), ("maj_at_k", "--s")):
        curve = summary[metric]
        ks = sorted(curve, key=int)
        ax.plot(
            [int(k) for k in ks],
            [curve[k] for k in ks],
            style,
            color="#4c72b0",
            label=f"SFT {metric.replace('_at_', '@')}",
            markersize=4,
        )
    for key, name, color in (
        ("accuracy_sft", "SFT", "#4c72b0"),
        ("accuracy_rft", "SFT + RFT", "#dd8452"),
        ("accuracy_continued_sft", "SFT continued", "#55a868"),
    ):
        if key in summary:
            ax.axhline(summary[key], color=color, linestyle=":", linewidth=1.2, label=f"{name} first answer (greedy)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("k (samples per problem)")
    ax.set_ylabel("accuracy")
    ax.set_title("pass@k vs first answer")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _control(summary: dict) -> str:
    """What the control says about the RFT gain: the kept paths, or only the extra steps."""
    if "rft_minus_continued_sft" not in summary:
        return (
            "The retrained model also took more optimizer steps than the SFT model (as in the RFT paper, where "
            "the augmented set is trained for the same number of epochs); without a control stage (`continued`) "
            "this run does not separate the two."
        )
    c = summary["rft_minus_continued_sft"]
    verdict = {
        "above": "so the kept paths, not only the extra steps, made the difference.",
        "below": "an interval below zero: the same steps on the seed set alone did better, so in this run the "
        "kept paths cost accuracy rather than adding it.",
        "zero": "an interval that includes zero: in this run the extra steps, not the kept paths, explain the gain.",
    }[side_of_zero(c["interval"])]
    return (
        f"Control: the SFT model continued on the seed set alone for the same steps reached "
        f"{pct(summary['accuracy_continued_sft'])}; RFT minus control {c['difference'] * 100:+.1f} points, 95% "
        f"interval [{c['interval'][0] * 100:+.1f}, {c['interval'][1] * 100:+.1f}] ({c['gained']} newly solved, "
        f"{c['lost']} lost), {verdict}"
    )


def _per_family(summary: dict) -> list[str]:
    if "by_family" not in summary:
        return []
    names = {"sft": "SFT", "retrain": "SFT + RFT", "continued": "control"}
    seen = {k for e in summary["by_family"].values() for k in e["accuracy"]}
    return diagnosis.markdown(summary["by_family"], {k: v for k, v in names.items() if k in seen})


def markdown(summary: dict, manifest: dict, links: dict[str, str]) -> str:
    iv, d, fit, rft = summary["intervals"], summary["rft_minus_sft"], summary["scaling_fit"], summary["rft"]
    n = summary["heldout_problems"]
    kmax = max(summary["pass_at_k"], key=int)
    lines = [
        "# The loop in miniature",
        "",
        f"Every figure is greedy or sampled accuracy on the same {n} held-out procedural problems (never trained "
        "on). Intervals are 95%: Wilson for one accuracy, the paired per-problem difference for two models. "
        f"Pipeline: `{manifest.get('pipeline')}`; per-stage configs, input/output hashes and code version: "
        "`manifest.json`.",
        "",
        "| model | greedy accuracy | 95% interval |",
        "|---|---|---|",
        f"| untrained | {pct(summary['accuracy_before'])} | {_interval(iv['before'])} |",
        f"| SFT ({fit['sizes'][-1]:g} seed problems) | {pct(summary['accuracy_sft'])} | {_interval(iv['sft'])} |",
        f"| SFT + RFT (retrained on seed + kept paths) | {pct(summary['accuracy_rft'])} | {_interval(iv['rft'])} |",
        *(
            [
                f"| SFT continued on the seed set alone, same steps (control) | "
                f"{pct(summary['accuracy_continued_sft'])} | {_interval(iv['continued_sft'])} |"
            ]
            if "accuracy_continued_sft" in summary
            else []
        ),
        "",
        f"![accuracy per stage]({links['stages']})",
        "",
        "## RFT: sample, verify, keep distinct paths, retrain",
        f"The SFT model sampled {rft['samples']} paths on {rft['questions']} training questions that are not in the "
        f"seed set; {rft['verified_distinct_kept']} had the right final answer and were distinct"
        + (
            f" ({rft['sampler_rejected']['bad_arithmetic']} more had it, but with false arithmetic written in their "
            "steps, and were turned down first). "
            if rft.get("sampler_rejected", {}).get("bad_arithmetic")
            else ". "
        )
        + (
            f"{rft['rejected'].get('wrong_step', 0)} of those reached it through a wrong step (a number that none "
            "of their problem's worked methods writes, or a false equality) and were turned down. "
            if "wrong_step" in rft["rejected"]
            else ""
        )
        + f"Kept for retraining: {rft['kept_for_retraining']} paths on {rft['questions_with_a_kept_path']} questions "
        f"({rft['paths_per_question_with_one']} per question that has one). Those questions' reference solutions are "
        "never trained on.",
        f"RFT minus SFT: {d['difference'] * 100:+.1f} points, 95% interval "
        f"[{d['interval'][0] * 100:+.1f}, {d['interval'][1] * 100:+.1f}] (paired over {d['problems']} problems: "
        f"{d['gained']} newly solved, {d['lost']} lost). "
        + {
            "above": "The interval is above zero: the gain is larger than the evaluation noise.",
            "below": "The interval is below zero: RFT lost accuracy, beyond the evaluation noise.",
            "zero": "The interval includes zero: this run does not show a gain beyond the evaluation noise.",
        }[side_of_zero(d["interval"])],
        _control(summary),
        "",
        *_per_family(summary),
        "## pass@k vs first answer (Xwin-Math)",
        f"SFT: first answer {pct(summary['accuracy_sft'])}, pass@{kmax} {pct(summary['pass_at_k'][kmax])}, "
        f"maj@{kmax} {pct(summary['maj_at_k'][kmax])}: the model can solve far more problems than its first "
        "answer shows.",
        "",
        f"![pass@k]({links['pass_at_k']})",
        "",
        "## Data scaling (RFT paper, Skywork-Math)",
        "The same SFT (same epochs) on the first N seed problems: "
        + ", ".join(f"{s:g}: {pct(a)}" for s, a in zip(fit["sizes"], fit["accuracies"]))
        + f". Fit accuracy = a + b ln N: slope {fit['slope']:.4f} "
        f"({fit['gain_per_doubling'] * 100:+.1f} points per doubling), R² {fit['r2']:.3f}. Each point has the "
        f"noise of {n} problems (±{(iv['sft'][1] - iv['sft'][0]) * 50:.1f} points at the largest size).",
        "",
        f"![scaling fit]({links['scaling']})",
        "",
        "## Export",
        f"`{summary['hf_reload']['hf_dir']}`: reloaded with transformers, max logit difference "
        f"{summary['hf_reload']['max_abs_logit_diff']:.2g}, greedy tokens identical on "
        f"{summary['hf_reload']['greedy_identical']} prompts.",
        "",
        "## Time",
        "| stage | seconds |",
        "|---|---|",
        *[f"| {name} | {s:.0f} |" for name, s in summary["stage_seconds"].items() if s is not None],
        f"| whole demo (this invocation) | {summary['seconds']:.0f} |",
        "",
    ]
    return "\n".join(lines)


def write_report(summary: dict, manifest: dict, run_dir: str) -> str:
    """Write report.md and its plots into `run_dir`; returns the report's path."""
    out = epath.Path(run_dir)
    plots = {"stages": "accuracy_per_stage.png", "pass_at_k": "pass_at_k.png"}
    plot_stages(summary, str(out / plots["stages"]))
    plot_pass_at_k(summary, str(out / plots["pass_at_k"]))
    scaling_png = manifest["stages"]["sft"]["dir"] + "/scaling.png"
    plots["scaling"] = scaling_png if is_remote(run_dir) else os.path.relpath(scaling_png, str(out))
    path = out / "report.md"
    path.write_text(markdown(summary, manifest, plots))
    return str(path)
