"""The evaluation report: `report.json` (metrics, tables, graded samples), `summary.md`, and
`accuracy_vs_k.png` (pass@k and maj@k against k, drawn with matplotlib's Agg backend)."""

from __future__ import annotations

import json
from collections import Counter
from typing import Sequence

from etils import epath

from mathjax_train.eval import metrics

REPORT_FILE = "report.json"
SUMMARY_FILE = "summary.md"
PLOT_FILE = "accuracy_vs_k.png"


def build_report(rows: Sequence[dict], num_samples: int, meta: dict) -> dict:
    """Metrics over `rows` (graded rows in problem order) plus `meta` (settings, counts, timing)."""
    ks = metrics.ks_for(num_samples)
    overall = metrics.aggregate(rows, ks)
    answers = [a for r in rows for a in r["answers"]]
    return {
        **meta,
        "num_problems": len(rows),
        "num_samples": num_samples,
        "ks": ks,
        "accuracy": overall["accuracy"],
        "pass@k": overall["pass@k"],
        "maj@k": overall["maj@k"],
        "by_level": metrics.breakdown(rows, "level", ks),
        "by_subject": metrics.breakdown(rows, "subject", ks),
        "no_answer_extracted": sum(a is None for a in answers),
        "finish_reasons": dict(Counter(f for r in rows for f in r.get("finish_reasons", []))),
        "samples": list(rows),
    }


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _table(title: str, groups: dict, ks: list[int]) -> list[str]:
    k = ks[-1]
    lines = [
        f"## {title}",
        "",
        f"| {title.split()[-1]} | n | accuracy | pass@{k} | maj@{k} |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, g in groups.items():
        lines.append(
            f"| {name} | {g['n']} | {_pct(g['accuracy'])} | {_pct(g['pass@k'][str(k)])} | {_pct(g['maj@k'][str(k)])} |"
        )
    return lines + [""]


def markdown(report: dict) -> str:
    ks = report["ks"]
    s = report["settings"]
    lines = [
        f"# Evaluation: {s['dataset']} ({s['split']})",
        "",
        f"checkpoint `{s['checkpoint']}`, template `{s['template']}`, {s['shots']}-shot, "
        f"{report['num_samples']} sample(s) per problem at temperature {s['temperature']}, "
        f"top-p {s['top_p']}, seed {s['seed']}, tools `{s['tools']}`.",
        "",
        f"- problems: {report['num_problems']} (skipped: "
        f"{', '.join(f'{k} {v}' for k, v in report['skipped'].items()) or 'none'})",
        f"- accuracy (first sample): **{_pct(report['accuracy'])}%**",
        f"- samples with no extractable answer: {report['no_answer_extracted']}",
        f"- finish reasons: {report['finish_reasons']}",
        "",
        "| k | " + " | ".join(str(k) for k in ks) + " |",
        "|---|" + "---:|" * len(ks),
        "| pass@k | " + " | ".join(_pct(report["pass@k"][str(k)]) for k in ks) + " |",
        "| maj@k | " + " | ".join(_pct(report["maj@k"][str(k)]) for k in ks) + " |",
        "",
    ]
    if report["by_level"]:
        lines += _table("By level", report["by_level"], ks)
    if report["by_subject"]:
        lines += _table("By subject", report["by_subject"], ks)
    return "\n".join(lines)


def plot(report: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = report["ks"]
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=100)
    for name, marker in (("pass@k", "o"), ("maj@k", "s")):
        ax.plot(ks, [100 * report[name][str(k)] for k in ks], marker=marker, label=name)
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_xlabel("k (samples per problem)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"{report['settings']['dataset']}: {report['num_problems']} problems")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with epath.Path(path).open("wb") as f:
        fig.savefig(f, format="png")
    plt.close(fig)


def write(report: dict, out_dir) -> dict[str, str]:
    """Write the three files; returns their paths."""
    d = epath.Path(out_dir)
    paths = {"report": d / REPORT_FILE, "summary": d / SUMMARY_FILE, "plot": d / PLOT_FILE}
    paths["report"].write_text(json.dumps(report, indent=1, ensure_ascii=False))
    paths["summary"].write_text(markdown(report))
    plot(report, paths["plot"])
    return {k: str(v) for k, v in paths.items()}
