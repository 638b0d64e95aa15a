"""Path selection for rejection-sampling fine-tuning (RFT, Yuan et al. 2023).

A sampled reasoning path is kept only if its final answer is equivalent to the gold answer, every
calculator annotation ``<<lhs=rhs>>`` in it is arithmetically right, and so is every equation it writes
out in prose (``5 * 24 = 120``, as a model trained without calculator markup writes). Kept paths are
then deduplicated by what they compute: the list of equations with whitespace removed (GSM8K style,
annotated or in prose), the list of code blocks (tool-integrated paths), or else the normalized solution
text up to its final answer (MATH style). Among paths that compute the same thing, the one farthest by
edit distance from the paths already kept wins, so the kept set is as varied in wording as it can be.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Sequence

import editdistance

from mathjax_train.grading import extract_answer, is_equivalent
from mathjax_train.grading.calculator import (
    annotations as calculator_annotations,
    first_bad_annotation,
    first_bad_written_equation,
    written_equations,
)

REJECT_REASONS = ("empty", "no_answer", "wrong_answer", "bad_annotation", "bad_arithmetic", "duplicate")
WRONG_STEP = "wrong_step"  # the reason `select` gives when a step check (`steps_ok`) turns a verified path down

_LATEX_SPACING = re.compile(r"\\(?:[,;:! ]|q?quad\b|left\b|right\b|displaystyle\b)")
_WS = re.compile(r"\s+")
_CODE_BLOCK = re.compile(r"```python[ \t]*\n(.*?)```", re.DOTALL)  # the tools/tir.py format
# the final answer at the end of a normalized text: `#### x`, or `\boxed{x}` with or without "The answer is"
_NORMALIZED_FINAL = re.compile(r"(?:####.*|(?:theansweris:?)?\\boxed\{.*\}\.?)$")


def normalize_text(text: str) -> str:
    """Solution text with case, whitespace, ``$`` and LaTeX spacing/sizing commands removed."""
    t = _LATEX_SPACING.sub("", text.lower())
    t = t.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("$", "")
    return _WS.sub("", t)


def path_key(text: str) -> tuple:
    """What a path computes: its equations (annotated, else written out in prose), else its code blocks, else
    its normalized text without the final answer (which every verified path shares; `#### x` and
    `The answer is $\\boxed{x}$` read alike)."""
    eqs = calculator_annotations(text)
    if eqs:
        return ("equations",) + tuple(_WS.sub("", e) for e in eqs)
    code = _CODE_BLOCK.findall(text)
    if code:
        return ("code",) + tuple(_WS.sub("", c) for c in code)
    written = written_equations(text)
    if written:  # GSM8K style without calculator markup: the same equations as an annotated path
        return ("equations",) + tuple(written)
    return ("text", _NORMALIZED_FINAL.sub("", normalize_text(text)))


def rejection_reason(gold_answer: str, completion: str) -> str | None:
    """None if the path verifies, else one of REJECT_REASONS (never raises)."""
    if not completion.strip():
        return "empty"
    pred = extract_answer(completion)
    if pred is None:
        return "no_answer"
    if not is_equivalent(gold_answer, pred):
        return "wrong_answer"
    if first_bad_annotation(completion) is not None:
        return "bad_annotation"
    if first_bad_written_equation(completion) is not None:
        return "bad_arithmetic"
    return None


@dataclass
class Selection:
    """Kept completions (in order of first appearance of what they compute) and why others went."""

    kept: list[str]
    kept_indices: list[int]
    rejected: Counter = field(default_factory=Counter)


def _farthest(candidates: list[int], completions: Sequence[str], kept: list[str]) -> int:
    """The candidate whose edit distance to its nearest kept path is largest (ties: earliest)."""
    if not kept or len(candidates) == 1:
        return candidates[0]
    best, best_d = candidates[0], -1
    seen: dict[str, int] = {}
    for i in candidates:
        text = completions[i]
        if text not in seen:
            seen[text] = min(editdistance.eval(text, k) for k in kept)
        if seen[text] > best_d:
            best, best_d = i, seen[text]
    return best


def select(
    gold_answer: str,
    completions: Sequence[str],
    *,
    already_kept: Sequence[str] = (),
    steps_ok: Callable[[str], bool] | None = None,
) -> Selection:
    """Verify, then deduplicate `completions`; `already_kept` (e.g. the original solution) seeds
    the deduplication: paths computing the same as one of them count as duplicates. With `steps_ok`
    (e.g. data/procedural/steps.py), a path with the right answer must also pass it, else WRONG_STEP."""
    rejected: Counter = Counter()
    groups: dict[tuple, list[int]] = {}
    for i, text in enumerate(completions):
        reason = rejection_reason(gold_answer, text)
        if reason is None and steps_ok is not None and not steps_ok(text):
            reason = WRONG_STEP
        if reason is not None:
            rejected[reason] += 1
            continue
        groups.setdefault(path_key(text), []).append(i)
    seen_keys = {path_key(t) for t in already_kept}
    kept_texts = list(already_kept)
    kept: list[int] = []
    for key, members in groups.items():
        if key in seen_keys:
            rejected["duplicate"] += len(members)
            continue
        choice = _farthest(members, completions, kept_texts)
        rejected["duplicate"] += len(members) - 1
        kept.append(choice)
        kept_texts.append(completions[choice])
    return Selection([completions[i] for i in kept], kept, rejected)


def select_paths(gold_answer: str, completions: Sequence[str]) -> list[str]:
    """The distinct, verified completions that rejection sampling keeps (see `select`)."""
    return select(gold_answer, completions).kept
