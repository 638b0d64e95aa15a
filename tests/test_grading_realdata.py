"""Grading against the real GSM8K and MATH test sets (skipped when the data directory is absent)."""

import json
import time

import pytest

from mathjax_train.grading import extract_answer, is_equivalent, stats
from real_data import DATA, require_data

pytestmark = pytest.mark.realdata

PER_PAIR_BUDGET_S = 5.0


def _rows(rel: str) -> list[dict]:
    path = DATA / rel
    require_data()
    assert path.is_file(), f"{path} missing from the data directory"
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise AssertionError(f"{path}:{lineno}: bad JSON ({exc})") from exc
    return rows


def test_every_gsm8k_solution_grades_against_its_gold():
    rows = _rows("gsm8k/test.jsonl")
    assert len(rows) == 1319
    failures = []
    for i, row in enumerate(rows):
        assert "####" in row["answer"], f"gsm8k/test.jsonl:{i + 1}: field answer has no ####"
        gold = row["answer"].rsplit("####", 1)[1].strip()
        pred = extract_answer(row["answer"])
        if not is_equivalent(gold, pred):
            failures.append((i + 1, gold, pred))
    assert failures == []


def _complete_answers() -> dict[str, str]:
    """unique_id -> MARIO's complete answer, for the MATH problems whose `answer` field keeps only the
    last of several boxed answers (`-2, 1` where the field says `1`)."""
    by_id = {row["unique_id"]: row for row in _rows("math/test.jsonl")}
    out = {}
    for ann in _rows("extra/mario_math_test_annotation.jsonl"):
        gold = ann["answer"]
        if isinstance(gold, str) and gold.startswith('["'):  # a JSON list stored as a string
            gold = json.loads(gold)
        if isinstance(gold, list):
            gold = ", ".join(gold)  # the annotated list is the complete answer, not alternatives
        if gold.strip() != by_id[ann["unique_id"]]["answer"].strip():
            out[ann["unique_id"]] = gold
    return out


def test_math_solutions_grade_against_their_answers_within_budget():
    """Every reference solution against its gold: the `answer` field, or for the multi-answer problems
    (where the field keeps the last box only) MARIO's complete answer, since the default `boxed`
    policy reads boxes joined by "and" as one answer."""
    rows = _rows("math/test.jsonl")
    assert len(rows) == 5000
    complete = _complete_answers()
    failures, worst = [], (0.0, None)
    t_all = time.monotonic()
    for row in rows:
        gold = [row["answer"], complete[row["unique_id"]]] if row["unique_id"] in complete else row["answer"]
        t0 = time.monotonic()
        ok = is_equivalent(gold, extract_answer(row["solution"]), timeout_s=PER_PAIR_BUDGET_S)
        dt = time.monotonic() - t0
        worst = max(worst, (dt, row["unique_id"]), key=lambda w: w[0])
        if not ok:
            failures.append(row["unique_id"])
    print(
        f"\nMATH: {5000 - len(failures)}/5000 equivalent in {time.monotonic() - t_all:.1f}s; "
        f"max per pair {worst[0] * 1000:.1f} ms ({worst[1]}); failures {failures[:20]}"
    )
    assert len(failures) <= 5, failures  # >= 99.9%
    # the per-pair budget plus one worker start-up at most
    assert worst[0] < PER_PAIR_BUDGET_S + 20


def test_math_predictions_that_differ_from_gold_are_rejected():
    """The identity check above cannot fail by accepting everything: shifted golds must mostly fail."""
    rows = _rows("math/test.jsonl")[:500]
    accepted = sum(
        is_equivalent(a["answer"], extract_answer(b["solution"]))
        for a, b in zip(rows, rows[1:])
        if a["answer"].strip() != b["answer"].strip()
    )
    assert accepted < 25, accepted


def test_multi_answer_problems_pass_with_the_all_boxes_policy():
    by_id = {row["unique_id"]: row for row in _rows("math/test.jsonl")}
    complete = _complete_answers()
    multi = [(uid, gold, extract_answer(by_id[uid]["solution"], boxed="all")) for uid, gold in complete.items()]
    assert 10 <= len(multi) <= 16, len(multi)
    failures = [m for m in multi if not is_equivalent(m[1], m[2])]
    assert failures == []
    # where the solution spreads the answers over several boxes, the last box alone must not match
    last = {u: extract_answer(by_id[u]["solution"], boxed="last") for u, _, _ in multi}
    spread = [(u, g) for u, g, every in multi if every != last[u]]
    assert len(spread) >= 10
    assert [u for u, g in spread if is_equivalent(g, last[u])] == []
    # the default policy joins the boxes that "and" or commas join: those problems pass with it too
    joined = [(u, g) for u, g, _ in multi if extract_answer(by_id[u]["solution"]) != last[u]]
    assert len(joined) >= 5, joined
    assert [u for u, g in joined if not is_equivalent(g, extract_answer(by_id[u]["solution"]))] == []


def test_nothing_timed_out_or_errored():
    snapshot = stats()
    assert snapshot["errors"] == 0, snapshot
