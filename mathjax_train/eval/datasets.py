"""Evaluation problems: GSM8K / MATH / MATH500 from the manual directory, or any JSONL file.

Every source becomes a list of `Problem` (id, question, gold, optional level/subject/solution).
Reading is strict: a missing or mistyped field raises JsonlFormatError naming path:line:field.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

from mathjax_train.config import InputError, is_remote
from mathjax_train.data import manual_dir
from mathjax_train.data.jsonl_source import JsonlFormatError, normalize_level, read_jsonl_numbered
from mathjax_train.data.templates import remove_calculator_annotations, strip_final_answer

NAMED = ("gsm8k", "math", "math500")
_GSM_FINAL = re.compile(r"^####\s*(.+?)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class Problem:
    """One evaluation item. `gold` is a string, or a list of acceptable strings."""

    id: str
    question: str
    gold: Any
    level: int | None = None
    subject: str | None = None
    solution: str | None = None  # a worked solution, used when the problem serves as an exemplar


def default_fallback(dataset: str) -> str | None:
    """Answer-extraction fallback per dataset: GSM8K answers are plain numbers, often unmarked."""
    return "last_number" if dataset == "gsm8k" else None


def _str_field(path, lineno: int, rec: dict, names: tuple[str, ...], required: bool) -> str | None:
    for name in names:
        if name in rec:
            value = rec[name]
            if not isinstance(value, str):
                raise JsonlFormatError(path, lineno, f"expected str, got {type(value).__name__}", name)
            if required and not value.strip():
                raise JsonlFormatError(path, lineno, "must be a non-empty string", name)
            return value
    if required:
        raise JsonlFormatError(path, lineno, "missing required field" + (
            f" (or {' / '.join(repr(n) for n in names[1:])})" if len(names) > 1 else ""), names[0])
    return None


def _gold(path, lineno: int, value: Any) -> tuple[Any, str | None]:
    """(gold, solution) from an `answer` field: a string, number or list of strings; a GSM8K-style
    answer (a worked solution ending in a `#### x` line) yields gold x and the solution.
    An empty string gives gold "" (the caller decides whether that is an error)."""
    if isinstance(value, bool):
        raise JsonlFormatError(path, lineno, "expected a string, number or list of strings, got bool", "answer")
    if isinstance(value, (int, float)):
        return str(value), None
    if isinstance(value, str):
        found = _GSM_FINAL.findall(value)
        if found:
            gold = found[-1].replace(",", "").strip()
            body = remove_calculator_annotations(strip_final_answer(value))
            return gold, f"{body}\n#### {gold}" if body else f"#### {gold}"
        return value, None
    if isinstance(value, list) and value and all(isinstance(v, str) and v.strip() for v in value):
        return list(value), None
    raise JsonlFormatError(path, lineno, f"expected a string, number or non-empty list of strings, "
                                         f"got {type(value).__name__} {value!r:.60}", "answer")


def read_problems(path, *, require_solution: bool = False, skipped: dict | None = None) -> list[Problem]:
    """Problems from a JSONL file: `question` or `problem`, `answer`; optional `solution`, `level`,
    `subject` or `type`, `id` or `unique_id` (default `<file name>:<line>`). Ids must be unique.

    An empty `answer` is an error, unless `skipped` is given: then the row is left out and counted
    there (`skipped["empty_answer"]`; MATH train has two solutions with an empty box)."""
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    name = os.path.basename(os.fspath(path))
    for lineno, rec in read_jsonl_numbered(path):
        question = _str_field(path, lineno, rec, ("question", "problem"), True)
        assert question is not None  # a required field: _str_field raised otherwise
        if "answer" not in rec:
            raise JsonlFormatError(path, lineno, "missing required field", "answer")
        gold, gsm_solution = _gold(path, lineno, rec["answer"])
        if isinstance(gold, str) and not gold.strip():
            if skipped is None:
                raise JsonlFormatError(path, lineno, "must be a non-empty string", "answer")
            skipped["empty_answer"] = skipped.get("empty_answer", 0) + 1
            continue
        solution = _str_field(path, lineno, rec, ("solution",), require_solution and gsm_solution is None)
        solution = solution if solution is not None else gsm_solution
        level = None
        if rec.get("level") is not None:
            try:
                level = normalize_level(rec["level"])
            except ValueError as e:
                raise JsonlFormatError(path, lineno, str(e), "level") from None
        # MATH train/test carry `type` ("Algebra"); MATH500 carries the same name in `subject`
        subject = _str_field(path, lineno, rec, ("type", "subject"), False)
        raw_id = rec.get("unique_id", rec.get("id"))
        if raw_id is None:
            pid = f"{name}:{lineno}"
        elif isinstance(raw_id, (str, int)) and not isinstance(raw_id, bool):
            pid = str(raw_id)
        else:
            raise JsonlFormatError(path, lineno, f"expected str or int, got {type(raw_id).__name__}",
                                   "unique_id" if "unique_id" in rec else "id")
        if pid in seen:
            raise JsonlFormatError(path, lineno, f"duplicate id {pid!r} (first on line {seen[pid]})",
                                   "unique_id" if "unique_id" in rec else "id")
        seen[pid] = lineno
        problems.append(Problem(pid, question, gold, level, subject, solution))
    return problems


def dataset_path(dataset: str, split: str = "test", data_dir=None):
    """The file behind a named dataset/split (manual directory), or `dataset` itself as a path."""
    if dataset == "math500":
        if split not in ("test", "math500"):
            raise InputError(f"math500 is a test set only; --split {split!r} is not available")
        return manual_dir.split_file("math", "math500", data_dir)
    if dataset in ("gsm8k", "math"):
        return manual_dir.split_file(dataset, split, data_dir)
    if not os.path.exists(dataset) and not is_remote(dataset):
        raise FileNotFoundError(f"--dataset {dataset!r} is neither one of {list(NAMED)} nor an existing file")
    return dataset


def load_problems(dataset: str, split: str = "test", data_dir=None, limit: int = 0) -> list[Problem]:
    """Problems of a named dataset split or a JSONL file; `limit` > 0 keeps the first `limit`."""
    problems = read_problems(dataset_path(dataset, split, data_dir))
    return problems[:limit] if limit > 0 else problems


def load_exemplars(dataset: str, exemplars: str = "", data_dir=None,
                   skipped: dict | None = None) -> list[Problem]:
    """The pool few-shot exemplars come from: `exemplars` (a JSONL file with solutions), else the
    *train* split of a named dataset (never a test split). Rows with an empty answer are left
    out and counted in `skipped`."""
    skipped = skipped if skipped is not None else {}
    if exemplars:
        return read_problems(exemplars, require_solution=True, skipped=skipped)
    if dataset in ("gsm8k", "math", "math500"):
        source = "math" if dataset == "math500" else dataset
        return read_problems(manual_dir.split_file(source, "train", data_dir), require_solution=True, skipped=skipped)
    raise InputError("--shots with --dataset FILE needs --exemplars FILE (JSONL with question, answer, solution)")
