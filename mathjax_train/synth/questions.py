"""Training questions (with their reference solution and gold answer) for synthesis jobs.

Sources: the GSM8K / MATH train split from the manual data directory, seeded procedural problems,
or a JSONL file with solutions (data/problems.py reads them all, with its ids). Test splits are
refused: synthetic training data must never come from evaluation questions.
"""

from __future__ import annotations

import dataclasses

from etils import epath

from mathjax_train.data import problems
from mathjax_train.data.problems import Problem
from mathjax_train.errors import InputError

NAMED = ("gsm8k", "math", "procedural")


def load_questions(
    dataset: str,
    split: str = "train",
    *,
    data_dir: str | None = None,
    limit: int = 0,
    procedural_count: int = 100,
    procedural_seed: int = 0,
) -> list[Problem]:
    """Questions of `dataset` (gsm8k | math | procedural | a JSONL path), the first `limit` if > 0.
    Every question has a solution; a MATH one may have an empty answer (the jobs skip and count it)."""
    if dataset in ("gsm8k", "math"):
        if split != "train":
            raise InputError(f"split {split!r}: synthetic training data is made from the train split only")
        questions = problems.load_named(dataset, split, data_dir)
    elif dataset == "procedural":
        questions = problems.load_procedural(limit or procedural_count, procedural_seed)
    elif dataset.endswith(".jsonl") or epath.Path(dataset).exists():
        if not epath.Path(dataset).exists():
            raise FileNotFoundError(f"{dataset}: no such question file")
        questions = [
            dataclasses.replace(p, source=p.source or "jsonl")
            for p in problems.read_jsonl(dataset, require_solution=True, answer_lists=False)
        ]
    else:
        raise InputError(f"unknown dataset {dataset!r}; use one of {list(NAMED)} or a JSONL file path")
    return questions[:limit] if limit > 0 else questions
