"""Locate the manual-download directory holding the GSM8K and MATH benchmark files.

The benchmarks are never downloaded by this package: a person copies them into a directory
(local or ``gs://``) and points us at it, by argument or with the ``MATHJAX_DATA_DIR`` env var.
"""

from __future__ import annotations

import os
from typing import Iterable, Mapping

from etils import epath

from mathjax_train.errors import InputError

ENV_VAR = "MATHJAX_DATA_DIR"

# dataset name -> split -> path relative to the manual directory.
LAYOUT: Mapping[str, Mapping[str, str]] = {
    "gsm8k": {"train": "gsm8k/train.jsonl", "test": "gsm8k/test.jsonl"},
    "math": {
        "train": "math/train.jsonl",
        "test": "math/test.jsonl",
        "math500": "math/math500.jsonl",
    },
}

_SOURCES = {
    "gsm8k/train.jsonl": "openai/grade-school-math grade_school_math/data/train.jsonl (fields question, answer)",
    "gsm8k/test.jsonl": "openai/grade-school-math grade_school_math/data/test.jsonl (fields question, answer)",
    "math/train.jsonl": "Hendrycks MATH train, one JSON object a line "
    "(fields problem, solution, answer, level, type, subject, unique_id)",
    "math/test.jsonl": "Hendrycks MATH test, same fields as math/train.jsonl",
    "math/math500.jsonl": "openai/prm800k prm800k/math_splits/test.jsonl "
    "(fields problem, solution, answer, subject, level, unique_id)",
}


class ManualDataError(FileNotFoundError):
    """The manual data directory is unset or lacks files; the message says what to put where."""


def instructions(root: str | None = None, wanted: Iterable[str] | None = None) -> str:
    """Human-readable instructions: which files go where, and how to point us at them."""
    wanted = list(wanted) if wanted is not None else list(_SOURCES)
    where = root or "<DIR>"
    lines = [f"Place these files under {where} (local path or gs://):"]
    for rel in wanted:
        lines.append(f"  {where.rstrip('/')}/{rel}  <- {_SOURCES.get(rel, rel)}")
    lines.append(
        f"Then pass the directory explicitly (data_dir / manual_dir argument) or set "
        f"{ENV_VAR}, e.g. `export {ENV_VAR}=/path/to/data` or `export {ENV_VAR}=gs://bucket/data`."
    )
    return "\n".join(lines)


def resolve_root(manual_dir: str | os.PathLike | None = None) -> epath.Path:
    """Return the manual directory: the explicit argument if given, else ``$MATHJAX_DATA_DIR``."""
    chosen = manual_dir if manual_dir not in (None, "") else os.environ.get(ENV_VAR) or None
    if chosen is None:
        raise ManualDataError(f"No manual data directory: pass one explicitly or set {ENV_VAR}.\n" + instructions())
    return epath.Path(chosen)


def relative_paths(dataset: str, splits: Iterable[str] | None = None) -> dict[str, str]:
    """Split -> relative path for ``dataset`` ("gsm8k" or "math"); unknown names raise ValueError."""
    if dataset not in LAYOUT:
        raise InputError(f"unknown dataset {dataset!r}; known: {sorted(LAYOUT)}")
    table = LAYOUT[dataset]
    splits = list(splits) if splits is not None else list(table)
    unknown = [s for s in splits if s not in table]
    if unknown:
        raise InputError(f"unknown split(s) {unknown} for {dataset!r}; known: {sorted(table)}")
    return {s: table[s] for s in splits}


def dataset_files(
    dataset: str,
    manual_dir: str | os.PathLike | None = None,
    splits: Iterable[str] | None = None,
) -> dict[str, epath.Path]:
    """Split -> existing file path for ``dataset``; raises ManualDataError naming every missing file."""
    root = resolve_root(manual_dir)
    rels = relative_paths(dataset, splits)
    paths = {split: root / rel for split, rel in rels.items()}
    missing = [rels[s] for s, p in paths.items() if not p.exists()]
    if missing:
        raise ManualDataError(
            f"Missing {len(missing)} file(s) for {dataset!r} in manual directory {root}: "
            f"{', '.join(missing)}.\n" + instructions(str(root), missing)
        )
    return paths


def split_file(dataset: str, split: str, manual_dir: str | os.PathLike | None = None) -> epath.Path:
    """The one existing file for ``dataset``/``split`` (see dataset_files)."""
    return dataset_files(dataset, manual_dir, [split])[split]
