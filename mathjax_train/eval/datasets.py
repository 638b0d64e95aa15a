"""Evaluation problems: GSM8K / MATH / MATH500 from the manual directory, or any JSONL file.

Every source becomes a list of `data.problems.Problem` (its loaders and ids); here only what
evaluation adds: empty gold answers are errors, and few-shot exemplars come from a train split.
"""

from __future__ import annotations

import os

from mathjax_train.config import InputError, is_remote
from mathjax_train.data import problems
from mathjax_train.data.problems import NAMED, Problem, gsm8k_final_answer
from mathjax_train.data.templates import remove_calculator_annotations, strip_final_answer

__all__ = [
    "NAMED",
    "Problem",
    "dataset_path",
    "default_fallback",
    "exemplar_solution",
    "load_exemplars",
    "load_problems",
]


def default_fallback(dataset: str) -> str | None:
    """Answer-extraction fallback per dataset: GSM8K answers are plain numbers, often unmarked."""
    return "last_number" if dataset == "gsm8k" else None


def dataset_path(dataset: str, split: str = "test", data_dir=None):
    """The file behind a named dataset/split (manual directory), or `dataset` itself as a path."""
    if dataset in NAMED:
        return problems.named_file(dataset, split, data_dir)
    if not os.path.exists(dataset) and not is_remote(dataset):
        raise FileNotFoundError(f"--dataset {dataset!r} is neither one of {list(NAMED)} nor an existing file")
    return dataset


def _nonempty(path, found: list[Problem], skipped: dict | None) -> list[Problem]:
    """`found` without empty gold answers: an error, or (with `skipped`) left out and counted."""
    kept = [p for p in found if not (isinstance(p.answer, str) and not p.answer.strip())]
    if len(kept) < len(found):
        if skipped is None:
            bad = next(p for p in found if p not in kept)
            raise InputError(f"{path}: record {bad.index + 1} ({bad.id!r}): field 'answer' is empty")
        skipped["empty_answer"] = skipped.get("empty_answer", 0) + len(found) - len(kept)
    return kept


def load_problems(dataset: str, split: str = "test", data_dir=None, limit: int = 0) -> list[Problem]:
    """Problems of a named dataset split or a JSONL file; `limit` > 0 keeps the first `limit`."""
    path = dataset_path(dataset, split, data_dir)
    found = (
        _nonempty(path, problems.load_named(dataset, split, data_dir), None)
        if dataset in NAMED
        else problems.read_jsonl(path)
    )
    return found[:limit] if limit > 0 else found


def load_exemplars(dataset: str, exemplars: str = "", data_dir=None, skipped: dict | None = None) -> list[Problem]:
    """The pool few-shot exemplars come from: `exemplars` (a JSONL file with solutions), else the
    *train* split of a named dataset (never a test split). Rows with an empty answer are left
    out and counted in `skipped`."""
    skipped = skipped if skipped is not None else {}
    if exemplars:
        return problems.read_jsonl(exemplars, require_solution=True, skipped=skipped)
    if dataset in NAMED:
        source = "math" if dataset == "math500" else dataset
        return _nonempty(
            problems.named_file(source, "train", data_dir), problems.load_named(source, "train", data_dir), skipped
        )
    raise InputError("--shots with --dataset FILE needs --exemplars FILE (JSONL with question, answer, solution)")


def exemplar_solution(p: Problem) -> str:
    """A worked solution as a few-shot exemplar shows it: a GSM8K-style one (ending in `#### x`)
    without its <<calculator>> annotations and with the cleaned answer; any other as written."""
    solution = p.solution or ""
    if gsm8k_final_answer(solution) is None:
        return solution
    body = remove_calculator_annotations(strip_final_answer(solution))
    return f"{body}\n#### {p.answer}" if body else f"#### {p.answer}"
