"""The run directory: `run.json` (the settings) and `samples.jsonl` (one graded row per problem,
appended as each finishes), so an interrupted run resumes where it stopped.

On restart the settings must match (else results from two runs would mix), finished rows are read
back, and a last line cut off mid-write is discarded and counted (data/run_dir.py). Any other bad
line is an error naming path:line.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from etils import epath

from mathjax_train.data import run_dir
from mathjax_train.data.jsonl_source import JsonlFormatError

RUN_FILE = "run.json"
SAMPLES_FILE = "samples.jsonl"
ROW_FIELDS = ("id", "index", "prompt_sha1", "completions", "answers", "correct", "clusters")


@dataclass
class Resumed:
    rows: dict[str, dict] = field(default_factory=dict)
    partial_lines: int = 0  # a final line cut off by an interruption, discarded


def check_settings(out_dir: epath.Path, settings: dict) -> None:
    """Write run.json, or check that the one there has the same settings."""
    run_dir.check_settings(
        out_dir / RUN_FILE, settings, output=f"the output directory {out_dir}", flag="--output-dir", under="settings"
    )


def read_rows(out_dir: epath.Path) -> Resumed:
    """Finished rows by id. A truncated final line is dropped from the file and counted."""
    path = out_dir / SAMPLES_FILE
    scan = run_dir.read_jsonl_repairing(path, ROW_FIELDS)
    found = Resumed(partial_lines=int(scan.torn))
    for lineno, row in zip(scan.lines, scan.rows):
        if row["id"] in found.rows:
            raise JsonlFormatError(path, lineno, f"duplicate row for problem {row['id']!r}", "id")
        found.rows[row["id"]] = row
    return found


def row_writer(out_dir: epath.Path) -> run_dir.JsonlAppender:
    """Appends one JSON row per line (`write_row`) as each problem finishes."""
    return run_dir.JsonlAppender(out_dir / SAMPLES_FILE)
