"""One record for a math problem, one loader per source, one id scheme, so outputs join on `id`.

Ids: GSM8K `gsm8k/<split>/<record index>`; MATH (and MATH500, its prm800k test subset) the
record's own `unique_id` (`<split>/<subject>/<n>.json`, which MATH500 rows share with MATH test);
procedural `procedural/<split>/<seed>/<index>`; a JSONL file a row's `id`, else its `unique_id`,
else `<file name>:<line>`. Reading is strict: errors name path:line:field.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Iterator

from mathjax_train.data import manual_dir
from mathjax_train.data.jsonl_source import JsonlFormatError, normalize_level, read_jsonl_numbered
from mathjax_train.errors import InputError

NAMED = ("gsm8k", "math", "math500")
# Recorded where outputs are resumed by id (evaluate's run.json), so a run written under the
# earlier ids (GSM8K rows named `test.jsonl:<line>` in evaluate) is refused, not mixed.
ID_SCHEME = "gsm8k/<split>/<index>; math unique_id; file id|unique_id|<name>:<line>"
_GSM_FINAL = re.compile(r"^####\s*(.+?)\s*$", re.MULTILINE)
_GSM_FIELDS = {"question": str, "answer": str}
_MATH_FIELDS = {"problem": str, "solution": str, "answer": str, "level": (str, int), "unique_id": str}
_MATH_OPTIONAL = {"type": str, "subject": str}


@dataclass(frozen=True)
class Problem:
    """One problem. `answer` is the gold final answer: a str, a list of acceptable strs (evaluation
    files may give several), or None where the source has none (augmentation seeds, test questions)."""

    id: str
    question: str
    answer: Any
    solution: str | None = None  # a worked solution as the source wrote it (GSM8K: with <<calc>> and `#### x`)
    level: int | None = None  # MATH 1-5; 0 for MATH's "Level ?"; None when the source has no levels
    subject: str | None = None  # MATH type name ("Algebra")
    source: str = ""  # gsm8k | math/<subject folder> | the procedural template | a file row's `source`
    index: int = 0  # position in the whole source (before any limit): orders outputs, seeds samples


def gsm8k_final_answer(text: str) -> str | None:
    """The answer after the last ``#### `` line of a GSM8K solution, commas removed (None if absent)."""
    found = _GSM_FINAL.findall(text)
    return found[-1].replace(",", "").strip() if found else None


def _check_no_extra(path, lineno: int, record: dict, allowed) -> None:
    extra = sorted(set(record) - set(allowed))
    if extra:
        raise JsonlFormatError(path, lineno, f"unexpected field(s) {extra}; allowed: {sorted(allowed)}", extra[0])


def read_gsm8k(path, split: str) -> Iterator[Problem]:
    """GSM8K rows (exactly `question`, `answer` ending in a `#### x` line) as problems."""
    for index, (lineno, rec) in enumerate(read_jsonl_numbered(path, _GSM_FIELDS)):
        _check_no_extra(path, lineno, rec, _GSM_FIELDS)
        final = gsm8k_final_answer(rec["answer"])
        if not final:
            raise JsonlFormatError(path, lineno, "no '#### <answer>' line", "answer")
        yield Problem(f"gsm8k/{split}/{index}", rec["question"], final, rec["answer"], source="gsm8k", index=index)


def read_math(path) -> Iterator[Problem]:
    """Hendrycks MATH rows (train/test, or the prm800k MATH500 layout) as problems.

    Train/test rows carry `type` ("Algebra") and `subject` ("algebra"); MATH500 rows carry only
    `subject`, holding the type name, so there the folder comes from `unique_id`. An empty `answer`
    (two MATH train solutions box nothing) is kept as "": callers skip and count it.
    """
    allowed = {**_MATH_FIELDS, **_MATH_OPTIONAL}
    for index, (lineno, rec) in enumerate(read_jsonl_numbered(path, _MATH_FIELDS)):
        _check_no_extra(path, lineno, rec, allowed)
        for name, typ in _MATH_OPTIONAL.items():
            if name in rec and not isinstance(rec[name], typ):
                raise JsonlFormatError(path, lineno, f"expected {typ.__name__}", name)
        try:
            level = normalize_level(rec["level"])
        except ValueError as e:
            raise JsonlFormatError(path, lineno, str(e), "level") from None
        if "type" in rec and "subject" in rec:
            mtype, folder = rec["type"], rec["subject"]
        elif "subject" in rec:
            parts = rec["unique_id"].split("/")
            if len(parts) != 3:
                raise JsonlFormatError(path, lineno, "expected '<split>/<subject>/<n>.json'", "unique_id")
            mtype, folder = rec["subject"], parts[1]
        else:
            raise JsonlFormatError(path, lineno, "missing required field (need 'type' or 'subject')", "type")
        yield Problem(
            rec["unique_id"], rec["problem"], rec["answer"], rec["solution"], level, mtype, f"math/{folder}", index
        )


def math_folder(problem: Problem) -> str:
    """The MATH subject folder ("algebra") of a problem read by `read_math`."""
    return problem.source.split("/", 1)[1]


def named_file(dataset: str, split: str, data_dir=None):
    """The manual-directory file of a named dataset split (math500 is a test set only)."""
    if dataset == "math500":
        if split not in ("test", "math500"):
            raise InputError(f"math500 is a test set only; split {split!r} is not available")
        return manual_dir.split_file("math", "math500", data_dir)
    if dataset not in NAMED:
        raise InputError(f"unknown dataset {dataset!r}; known: {list(NAMED)}")
    return manual_dir.split_file(dataset, split, data_dir)


def load_named(dataset: str, split: str, data_dir=None) -> list[Problem]:
    """All problems of gsm8k / math / math500 `split` from the manual directory."""
    path = named_file(dataset, split, data_dir)
    return list(read_gsm8k(path, split) if dataset == "gsm8k" else read_math(path))


def from_procedural(example: dict, index: int) -> Problem:
    """A problem from a `procedural.generate` example."""
    return Problem(
        example["id"],
        example["question"],
        example["answer"],
        example["solution"],
        example["level"],
        source=example["source"],
        index=index,
    )


def load_procedural(count: int, seed: int, split: str = "train") -> list[Problem]:
    """The first `count` seeded procedural problems of `split`."""
    from mathjax_train.data.procedural import iterate

    return [from_procedural(ex, i) for i, ex in enumerate(iterate(seed=seed, split=split, stop=count))]


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
        raise JsonlFormatError(
            path,
            lineno,
            "missing required field" + (f" (or {' / '.join(repr(n) for n in names[1:])})" if len(names) > 1 else ""),
            names[0],
        )
    return None


def _answer(path, lineno: int, value: Any, lists: bool) -> tuple[Any, str | None]:
    """(answer, solution) from an `answer` field: a string, number or (with `lists`) a list of
    strings; a GSM8K-style answer (a worked solution ending in `#### x`) yields x and the text."""
    if isinstance(value, bool):
        raise JsonlFormatError(path, lineno, "expected a string or number, got bool", "answer")
    if isinstance(value, (int, float)):
        return str(value), None
    if isinstance(value, str):
        final = gsm8k_final_answer(value)
        return (final, value) if final else (value, None)
    if lists and isinstance(value, list) and value and all(isinstance(v, str) and v.strip() for v in value):
        return list(value), None
    kinds = "a string, number or non-empty list of strings" if lists else "a string or number"
    raise JsonlFormatError(path, lineno, f"expected {kinds}, got {type(value).__name__} {value!r:.60}", "answer")


def _row_id(path, lineno: int, rec: dict, name: str) -> str:
    for key in ("id", "unique_id"):
        if key in rec:
            value = rec[key]
            if isinstance(value, bool) or not isinstance(value, (str, int)):
                raise JsonlFormatError(path, lineno, f"expected str or int, got {type(value).__name__}", key)
            return str(value)
    return f"{name}:{lineno}"


def read_jsonl(
    path,
    *,
    require_answer: bool = True,
    require_solution: bool = False,
    answer_lists: bool = True,
    skipped: dict | None = None,
) -> list[Problem]:
    """Problems from any JSONL file: `question` or `problem`; `answer` (see `_answer`; optional
    unless `require_answer`); optional `solution`, `level`, `subject` or `type`, `source`, and
    `id` or `unique_id` (ids must be unique). An empty `answer` is None when it is optional, else an
    error, unless `skipped` is given: then the row is left out and counted in `skipped["empty_answer"]`."""
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    name = os.path.basename(os.fspath(path))
    for lineno, rec in read_jsonl_numbered(path):
        question = _str_field(path, lineno, rec, ("question", "problem"), True)
        assert question is not None  # a required field: _str_field raised otherwise
        answer, gsm_solution = None, None
        if "answer" in rec:
            answer, gsm_solution = _answer(path, lineno, rec["answer"], answer_lists)
        elif require_answer:
            raise JsonlFormatError(path, lineno, "missing required field", "answer")
        if isinstance(answer, str) and not answer.strip():
            if not require_answer:
                answer = None  # an optional answer left empty: unknown
            elif skipped is None:
                raise JsonlFormatError(path, lineno, "must be a non-empty string", "answer")
            else:
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
        source = _str_field(path, lineno, rec, ("source",), False) or ""
        pid = _row_id(path, lineno, rec, name)
        if pid in seen:
            raise JsonlFormatError(
                path, lineno, f"duplicate id {pid!r} (first on line {seen[pid]})", "id" if "id" in rec else "unique_id"
            )
        seen[pid] = lineno
        problems.append(Problem(pid, question, answer, solution, level, subject, source, len(problems)))
    return problems
