"""Training questions (with their reference solution and gold answer) for synthesis jobs.

Sources: the GSM8K / MATH train split from the manual data directory, seeded procedural problems,
or a JSONL file in the synthetic SFT format. Test splits are refused: synthetic training data
must never come from evaluation questions.
"""
from __future__ import annotations

from dataclasses import dataclass

from etils import epath

from mathjax_train.config import InputError
from mathjax_train.data import manual_dir

NAMED = ("gsm8k", "math", "procedural")


@dataclass(frozen=True)
class Question:
    """One question; `index` is its position in the full (unsharded) list and orders the output."""

    index: int
    id: str
    question: str
    solution: str  # the reference solution, kept as a training path as is
    answer: str  # gold final answer for grading
    level: int = 0
    source: str = ""


def _gsm8k(data_dir: str | None, split: str) -> list[Question]:
    from mathjax_train.data.tfds_builders import gsm8k_examples  # TF import: only when needed

    path = manual_dir.split_file("gsm8k", split, data_dir or None)
    return [Question(i, ex["id"], ex["question"], ex["answer"], ex["final_answer"], 0, "gsm8k")
            for i, (_, ex) in enumerate(gsm8k_examples(path, split))]


def _math(data_dir: str | None, split: str) -> list[Question]:
    from mathjax_train.data.tfds_builders import math_examples

    path = manual_dir.split_file("math", split, data_dir or None)
    # two MATH train rows have an empty \boxed{}; they are kept here and skipped (counted) by the jobs
    return [Question(i, ex["unique_id"], ex["problem"], ex["solution"], ex["answer"], ex["level"],
                     f"math/{ex['subject']}") for i, (_, ex) in enumerate(math_examples(path, split))]


def _procedural(count: int, seed: int) -> list[Question]:
    from mathjax_train.data.procedural import iterate

    return [Question(i, ex["id"], ex["question"], ex["solution"], ex["answer"], ex["level"], ex["source"])
            for i, ex in enumerate(iterate(seed=seed, split="train", stop=count))]


def _jsonl(path: str) -> list[Question]:
    from mathjax_train.data.jsonl_source import JsonlFormatError, read_jsonl_numbered, read_sft_jsonl

    rows = list(read_sft_jsonl(path))
    lines = [n for n, _ in read_jsonl_numbered(path)]
    seen: dict[str, int] = {}
    out = []
    for i, (line, row) in enumerate(zip(lines, rows)):
        qid = row.get("id", f"{epath.Path(path).name}:{line}")
        if not isinstance(qid, (str, int)) or isinstance(qid, bool):
            raise JsonlFormatError(path, line, "expected a string or integer id", "id")
        qid = str(qid)
        if qid in seen:
            raise JsonlFormatError(path, line, f"duplicate id {qid!r} (first on line {seen[qid]})", "id")
        seen[qid] = line
        out.append(Question(i, qid, row["question"], row["solution"], row["answer"], row["level"],
                            row["source"] or "jsonl"))
    return out


def load_questions(dataset: str, split: str = "train", *, data_dir: str | None = None, limit: int = 0,
                   procedural_count: int = 100, procedural_seed: int = 0) -> list[Question]:
    """Questions of `dataset` (gsm8k | math | procedural | a JSONL path), the first `limit` if > 0."""
    if dataset in ("gsm8k", "math"):
        if split != "train":
            raise InputError(f"split {split!r}: synthetic training data is made from the train split only")
        questions = _gsm8k(data_dir, split) if dataset == "gsm8k" else _math(data_dir, split)
    elif dataset == "procedural":
        questions = _procedural(limit or procedural_count, procedural_seed)
    elif dataset.endswith(".jsonl") or epath.Path(dataset).exists():
        if not epath.Path(dataset).exists():
            raise FileNotFoundError(f"{dataset}: no such question file")
        questions = _jsonl(dataset)
    else:
        raise InputError(f"unknown dataset {dataset!r}; use one of {list(NAMED)} or a JSONL file path")
    return questions[:limit] if limit > 0 else questions
