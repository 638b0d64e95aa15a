"""Why RFT helped or hurt in the demo, per family of the procedural generator: each model's greedy held-out
accuracy, the paths RFT kept, and how many of those reach the right final answer through a wrong step.

In this miniature every problem of a family has one worked solution, written from one template, so a
correct path computes exactly the numbers of its problem's worked solution. A kept path whose steps hold
a number the worked solution does not have got its final answer right by a wrong step (the generator
writes no second method that could explain it).
"""

from __future__ import annotations

import json
import re

from etils import epath

NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def family(source: str) -> str:
    """procedural/math_style/linear_equation -> linear_equation."""
    return source.rsplit("/", 1)[-1]


def off_solution_numbers(path: str, worked_solution: str) -> set[str]:
    """Numbers in the steps of `path` (its last line, the final answer, aside) that `worked_solution` lacks."""
    steps = path.rsplit("\n", 1)[0] if "\n" in path.strip() else ""
    return set(NUMBER.findall(steps)) - set(NUMBER.findall(worked_solution))


def _rows(path: str) -> list[dict]:
    return [json.loads(line) for line in epath.Path(path).read_text().splitlines() if line.strip()]


def by_family(heldout: str, greedy: dict[str, dict[str, bool]], questions: str, selected: str) -> dict:
    """{family: {"heldout", "accuracy": {model: greedy accuracy}, "kept", "kept_with_a_wrong_step"}}, from the
    held-out problems file, each model's per-problem first-answer correctness, the RFT questions (with their
    worked solutions) and the selected paths."""
    fam_of = {r["id"]: family(r["source"]) for r in _rows(heldout)}
    out: dict[str, dict] = {}

    def entry(f: str) -> dict:
        return out.setdefault(f, {"heldout": 0, "accuracy": {}, "kept": 0, "kept_with_a_wrong_step": 0})

    ids_of: dict[str, list[str]] = {}
    for pid, f in fam_of.items():
        ids_of.setdefault(f, []).append(pid)
    for f, ids in ids_of.items():
        e = entry(f)
        e["heldout"] = len(ids)
        for model, correct in greedy.items():
            graded = [correct[pid] for pid in ids if pid in correct]
            if graded:
                e["accuracy"][model] = round(sum(graded) / len(graded), 4)
    worked = {r["id"]: r for r in _rows(questions)}
    for row in _rows(selected):
        if row.get("origin") != "sampled":
            continue
        q = worked[row["question_id"]]
        e = entry(family(q["source"]))
        e["kept"] += 1
        e["kept_with_a_wrong_step"] += bool(off_solution_numbers(row["solution"], q["solution"]))
    return dict(sorted(out.items()))


def markdown(families: dict, labels: dict[str, str]) -> list[str]:
    """The report's section: one row per family; `labels` maps model keys to column names, in order."""
    kept = sum(e["kept"] for e in families.values())
    wrong = sum(e["kept_with_a_wrong_step"] for e in families.values())
    lines = [
        "## Per family: held-out accuracy and the kept paths",
        "| family | held-out problems | " + " | ".join(labels.values()) + " | kept paths | kept with a wrong step |",
        "|---|---|" + "---|" * len(labels) + "---|---|",
    ]
    for f, e in families.items():
        accs = [f"{e['accuracy'][k] * 100:.1f}%" if k in e["accuracy"] else "-" for k in labels]
        lines.append(
            f"| {f} | {e['heldout']} | " + " | ".join(accs) + f" | {e['kept']} | {e['kept_with_a_wrong_step']} |"
        )
    share = wrong / kept if kept else 0.0
    lines += [
        "",
        f"{wrong} of the {kept} kept paths ({share * 100:.0f}%) have a number in their steps that their problem's "
        "worked solution does not have. Every problem of a family is solved from one template here, so such a path "
        "reached the right final answer through a wrong step; verifying the final answer alone keeps it, and "
        "retraining on it teaches that step.",
        "",
    ]
    return lines
