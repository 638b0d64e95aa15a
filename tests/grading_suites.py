"""The public graders' test cases (tests/data/grading_suites/*.jsonl) and how our grader is run on them.

A case is either two answers (`call: answers`: NeMo-Skills' math_equal, hendrycks' is_equiv) or two
texts that each need their answer extracted (`call: texts`: Math-Verify's and lighteval's parse()).
For texts we extract both sides with `extract_answer`; a gold text in which nothing is marked is
its own answer. For the prediction, the suite's "expr" extraction target (plain numbers in text)
maps to our `fallback="last_number"`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from mathjax_train.grading import extract_answer, is_equivalent

DATA = Path(__file__).resolve().parent / "data" / "grading_suites"
SUITES = {
    "math_verify": "huggingface/Math-Verify",
    "lighteval": "huggingface/lighteval",
    "nemo_skills": "NVIDIA/NeMo-Skills",
    "hendrycks_math": "hendrycks/math",
}


def load(name: str) -> list[dict]:
    with open(DATA / f"{name}.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def as_text(value) -> str | None:
    """Suite values may be numbers (NeMo-Skills passes 5, 0.5, 5 / 2); None stays None."""
    return None if value is None else str(value)


def fallback_for(case: dict) -> str | None:
    return "last_number" if "expr" in case["options"].get("match_types", []) else None


def answers_of(case: dict) -> tuple[str | None, str | None]:
    """(gold answer, predicted answer) as our grader sees them."""
    gold, pred = as_text(case["gold"]), as_text(case["pred"])
    if case["call"] == "answers":
        return gold, pred
    return extract_answer(gold) or gold, extract_answer(pred, fallback=fallback_for(case))


def our_verdict(case: dict) -> bool:
    gold, pred = answers_of(case)
    return gold is not None and pred is not None and is_equivalent(gold, pred)


DOC = Path(__file__).resolve().parents[1] / "docs" / "grader.md"
_ROW_RE = re.compile(r"^\|\s*`([^`]+)`[^|]*\|([^|]*)\|([^|]*)\|(.*)\|\s*$")


def disagreements() -> dict[str, dict]:
    """The deliberate disagreements docs/grader.md lists: case id -> {ours: bool, reason: str}.
    The table there is the one list; a row reads `| `id` ... | suite's verdict | ours | why |`."""
    out = {}
    in_table = False
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if line.startswith("<!-- disagreements -->"):
            in_table = True
        elif in_table and not line.startswith("|") and out:
            break
        elif in_table:
            m = _ROW_RE.match(line)
            if m:
                ours = m.group(3).strip().lower()
                assert ours in ("equal", "different"), line
                out[m.group(1)] = {"ours": ours == "equal", "reason": m.group(4).strip()}
    return out
