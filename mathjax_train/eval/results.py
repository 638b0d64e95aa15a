"""The run directory: `run.json` (the settings) and `samples.jsonl` (one graded row per problem,
appended and flushed as each finishes), so an interrupted run resumes where it stopped.

On restart the settings must match (else results from two runs would mix), finished rows are read
back, and a last line cut off mid-write is discarded and counted. Any other bad line is an error
naming path:line.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from etils import epath

from mathjax_train.config import InputError
from mathjax_train.data.jsonl_source import JsonlFormatError, decode_line, parse_record, required_checks

RUN_FILE = "run.json"
SAMPLES_FILE = "samples.jsonl"
ROW_FIELDS = ("id", "index", "prompt_sha1", "completions", "answers", "correct", "clusters")


@dataclass
class Resumed:
    rows: dict[str, dict] = field(default_factory=dict)
    partial_lines: int = 0  # a final line cut off by an interruption, discarded


def check_settings(out_dir: epath.Path, settings: dict) -> None:
    """Write run.json, or check that the one there has the same settings."""
    path = out_dir / RUN_FILE
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise InputError(f"{path}:{e.lineno}: not valid JSON ({e.msg}); delete the output directory") from None
        old_settings = old.get("settings", {}) if isinstance(old, dict) else {}
        diff = sorted(k for k in set(old_settings) | set(settings) if old_settings.get(k) != settings.get(k))
        if diff:
            k = diff[0]
            raise InputError(f"{path}: this output directory holds a run with other settings ({k}: "
                             f"{old_settings.get(k)!r} there, {settings.get(k)!r} now; {len(diff)} differ); "
                             "use another --output-dir or delete this one")
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"settings": settings}, indent=1))


def read_rows(out_dir: epath.Path) -> Resumed:
    """Finished rows by id. A truncated final line is dropped from the file and counted."""
    path = out_dir / SAMPLES_FILE
    found = Resumed()
    if not path.exists():
        return found
    data = path.read_bytes()
    lines = data.split(b"\n")
    keep = len(data)
    if lines and lines[-1].strip():  # the last line has no newline: written only in part?
        try:
            json.loads(lines[-1])
            keep = len(data)  # complete JSON, only the newline is missing
        except json.JSONDecodeError:
            found.partial_lines = 1
            keep = len(data) - len(lines[-1])
            lines = lines[:-1]
    checks = required_checks(ROW_FIELDS)
    for lineno, raw in enumerate(lines, start=1):
        text = decode_line(path, lineno, raw)
        if not text.strip():
            continue
        row = parse_record(path, lineno, text, checks)
        if row["id"] in found.rows:
            raise JsonlFormatError(path, lineno, f"duplicate row for problem {row['id']!r}", "id")
        found.rows[row["id"]] = row
    if keep != len(data):
        with path.open("wb") as f:
            f.write(data[:keep])
    elif data and not data.endswith(b"\n"):
        with path.open("ab") as f:
            f.write(b"\n")
    return found


class RowWriter:
    """Appends one JSON row per line and flushes it, so a crash loses at most the row in flight."""

    def __init__(self, out_dir: epath.Path):
        self.f = (out_dir / SAMPLES_FILE).open("a")

    def write(self, row: dict) -> None:
        self.f.write(json.dumps(row, ensure_ascii=False) + "\n")
        self.f.flush()

    def close(self) -> None:
        self.f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
