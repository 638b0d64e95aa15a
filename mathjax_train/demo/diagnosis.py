"""Why RFT helped or hurt in the demo, per family of the procedural generator: each model's greedy held-out
accuracy, the sampled paths with a right final answer, how many of those reach it through a wrong step,
and how many paths the selection kept.

A path's steps are checked against its problem's worked solutions, every method the generator knows
(data/procedural/steps.py): a path whose numbers no single method writes, or whose equalities of numbers
are false, got its final answer right by a wrong step.
"""

from __future__ import annotations

import json
from typing import Callable

from etils import epath

from mathjax_train.data.procedural.steps import step_checker
from mathjax_train.synth.rft_output import question_record


def family(source: str) -> str:
    """procedural/math_style/linear_equation -> linear_equation."""
    return source.rsplit("/", 1)[-1]


def _rows(path: str) -> list[dict]:
    return [json.loads(line) for line in epath.Path(path).read_text().splitlines() if line.strip()]


def by_family(heldout: str, greedy: dict[str, dict[str, bool]], sampled: str, selected: str) -> dict:
    """{family: {"heldout", "accuracy": {model: greedy accuracy}, "right_answer", "right_answer_wrong_step",
    "kept"}}, from the held-out problems file, each model's per-problem first-answer correctness, the rft
    stage's rows (its sampled paths have the right final answer and are distinct) and the selected rows."""
    out: dict[str, dict] = {}

    def entry(f: str) -> dict:
        return out.setdefault(
            f, {"heldout": 0, "accuracy": {}, "right_answer": 0, "right_answer_wrong_step": 0, "kept": 0}
        )

    ids_of: dict[str, list[str]] = {}
    for r in _rows(heldout):
        ids_of.setdefault(family(r["source"]), []).append(r["id"])
    for f, ids in ids_of.items():
        e = entry(f)
        e["heldout"] = len(ids)
        for model, correct in greedy.items():
            graded = [correct[pid] for pid in ids if pid in correct]
            if graded:
                e["accuracy"][model] = round(sum(graded) / len(graded), 4)
    checks: dict[str, Callable[[str], bool]] = {}  # one per question: its worked methods regenerated once
    for row in _rows(sampled):
        if row.get("origin") != "sampled":
            continue
        qid = row["question_id"]
        if qid not in checks:
            checks[qid] = step_checker(question_record(row))
        e = entry(family(row["source"]))
        e["right_answer"] += 1
        e["right_answer_wrong_step"] += not checks[qid](row["solution"])
    for row in _rows(selected):
        if row.get("origin") == "sampled":
            entry(family(row["source"]))["kept"] += 1
    return dict(sorted(out.items()))


def markdown(families: dict, labels: dict[str, str]) -> list[str]:
    """The report's section: one row per family; `labels` maps model keys to column names, in order."""
    right = sum(e["right_answer"] for e in families.values())
    wrong = sum(e["right_answer_wrong_step"] for e in families.values())
    kept = sum(e["kept"] for e in families.values())
    lines = [
        "## Per family: held-out accuracy and the sampled paths",
        "| family | held-out problems | "
        + " | ".join(labels.values())
        + " | paths with the right answer | of them through a wrong step | kept for retraining |",
        "|---|---|" + "---|" * len(labels) + "---|---|---|",
    ]
    for f, e in families.items():
        accs = [f"{e['accuracy'][k] * 100:.1f}%" if k in e["accuracy"] else "-" for k in labels]
        lines.append(
            f"| {f} | {e['heldout']} | "
            + " | ".join(accs)
            + f" | {e['right_answer']} | {e['right_answer_wrong_step']} | {e['kept']} |"
        )
    share = wrong / right if right else 0.0
    lines += [
        "",
        f"{wrong} of the {right} distinct sampled paths with the right final answer ({share * 100:.0f}%) write a "
        "number in their steps that none of their problem's worked methods writes, or a false equality of numbers: "
        "they reached the answer through "
        f"a wrong step. The selection kept {kept} paths for retraining.",
        "",
    ]
    return lines
