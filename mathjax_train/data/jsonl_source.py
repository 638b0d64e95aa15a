"""Strict JSONL reading for every data file the package consumes (local paths or ``gs://``).

Each record must be one JSON object on one line. Problems raise JsonlFormatError naming
``path:line`` (and the field); blank lines are allowed but counted in ReadStats, so nothing
is skipped silently. Files are opened through etils.epath (tf.io.gfile for gs:// when TF is
installed), never with builtin ``open``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any, Iterable, Iterator, Mapping, Union

from etils import epath

from mathjax_train.errors import InputError, JsonlFormatError

PathLike = Union[str, os.PathLike]
# field name -> accepted type(s); a plain iterable of names means "present, any type".
Required = Union[Iterable[str], Mapping[str, Union[type, tuple]]]

SFT_REQUIRED = ("question", "solution", "answer")
SFT_OPTIONAL = ("source", "level")


@dataclasses.dataclass
class ReadStats:
    """Counts for one or more reads: records yielded and blank lines passed over."""

    records: int = 0
    blank_lines: int = 0


def _type_name(t: type | tuple) -> str:
    return " or ".join(x.__name__ for x in t) if isinstance(t, tuple) else t.__name__


def _check_type(value: Any, expected: type | tuple) -> bool:
    types = expected if isinstance(expected, tuple) else (expected,)
    if isinstance(value, bool) and bool not in types:  # bool is an int subclass; don't let it pass
        return False
    return isinstance(value, types)


def read_jsonl(path: PathLike, required: Required = (), *, stats: ReadStats | None = None) -> Iterator[dict]:
    """Yield one dict per non-blank line of ``path``, checking ``required`` fields (and types)."""
    for _, record in read_jsonl_numbered(path, required, stats=stats):
        yield record


def required_checks(required: Required) -> dict[str, type | tuple | None]:
    """``required`` as field -> expected type(s), None meaning any type."""
    return dict(required) if isinstance(required, Mapping) else {f: None for f in required}


def parse_record(path: PathLike, lineno: int, text: str, checks: Mapping[str, type | tuple | None]) -> dict:
    """One non-blank line -> its JSON object, with the fields in ``checks`` present and typed;
    anything else raises JsonlFormatError naming ``path:lineno`` (and the field)."""
    try:
        record = json.loads(text)
    except json.JSONDecodeError as e:
        raise JsonlFormatError(path, lineno, f"invalid JSON: {e.msg} (column {e.colno})") from None
    if not isinstance(record, dict):
        raise JsonlFormatError(path, lineno, f"expected a JSON object, got {type(record).__name__}")
    for field, expected in checks.items():
        if field not in record:
            raise JsonlFormatError(path, lineno, "missing required field", field)
        if expected is not None and not _check_type(record[field], expected):
            raise JsonlFormatError(
                path,
                lineno,
                f"expected {_type_name(expected)}, got {type(record[field]).__name__} {record[field]!r:.60}",
                field,
            )
    return record


def decode_line(path: PathLike, lineno: int, raw: bytes) -> str:
    """A line's bytes as UTF-8 text, or JsonlFormatError naming ``path:lineno``."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise JsonlFormatError(path, lineno, f"not valid UTF-8: {e}") from None


def read_jsonl_numbered(
    path: PathLike, required: Required = (), *, stats: ReadStats | None = None
) -> Iterator[tuple[int, dict]]:
    """Like read_jsonl, but yields ``(line_number, record)`` so callers can report positions."""
    checks = required_checks(required)
    stats = stats if stats is not None else ReadStats()
    with epath.Path(path).open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            text = decode_line(path, lineno, raw)
            if not text.strip():
                stats.blank_lines += 1
                continue
            record = parse_record(path, lineno, text, checks)
            stats.records += 1
            yield lineno, record


def write_jsonl(path: PathLike, rows: Iterable[Mapping[str, Any]]) -> int:
    """Write ``rows`` as JSONL (UTF-8, one object a line); returns the number written."""
    p = epath.Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with p.open("w") as f:
        for row in rows:
            f.write(json.dumps(dict(row), ensure_ascii=False) + "\n")
            n += 1
    return n


_LEVEL_RE = re.compile(r"^\s*(?:level\s*)?(\d+|\?)\s*$", re.IGNORECASE)


def normalize_level(value: Any) -> int:
    """MATH-style level to int: ``3``, ``"3"`` and ``"Level 3"`` -> 3; ``"Level ?"`` -> 0 (unknown).

    Raises ValueError for anything else (bools, floats, other strings, negatives).
    """
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise InputError(f"level must be >= 0, got {value}")
        return value
    if isinstance(value, str):
        m = _LEVEL_RE.match(value)
        if m:
            return 0 if m.group(1) == "?" else int(m.group(1))
    raise InputError(f"unrecognised level {value!r} (expected an int or 'Level N' / 'Level ?')")


def _answer_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return None


def read_sft_jsonl(path: PathLike, *, stats: ReadStats | None = None) -> Iterator[dict]:
    """Read a synthetic SFT file: ``question``, ``solution``, ``answer`` (+ optional ``source``,
    ``level``); every other field (provenance) is passed through unchanged.

    Normalised output: answer is a str (numbers are stringified), source defaults to "",
    level to 0 (unknown). Empty question/solution/answer are errors, not skips.
    """
    req = {"question": str, "solution": str, "answer": (str, int, float)}
    for lineno, rec in read_jsonl_numbered(path, req, stats=stats):
        for field in ("question", "solution"):
            if not rec[field].strip():
                raise JsonlFormatError(path, lineno, "must be a non-empty string", field)
        answer = _answer_text(rec["answer"])
        if answer is None or not answer.strip():
            raise JsonlFormatError(path, lineno, "must be a non-empty string or number", "answer")
        out = dict(rec)
        out["answer"] = answer
        source = rec.get("source", "")
        if not isinstance(source, str):
            raise JsonlFormatError(path, lineno, f"expected str, got {type(source).__name__}", "source")
        out["source"] = source
        try:
            out["level"] = normalize_level(rec["level"]) if rec.get("level") is not None else 0
        except ValueError as e:
            raise JsonlFormatError(path, lineno, str(e), "level") from None
        yield out
