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


def _by_id(scan: run_dir.JsonlScan) -> dict[str, dict]:
    rows: dict[str, dict] = {}
    for lineno, row in zip(scan.lines, scan.rows):
        if row["id"] in rows:
            raise JsonlFormatError(scan.path, lineno, f"duplicate row for problem {row['id']!r}", "id")
        rows[row["id"]] = row
    return rows


def read_rows(out_dir: epath.Path) -> Resumed:
    """Finished rows by id, to resume a run. A truncated final line is dropped from the file and counted."""
    scan = run_dir.read_jsonl_repairing(out_dir / SAMPLES_FILE, ROW_FIELDS)
    return Resumed(_by_id(scan), partial_lines=int(scan.torn))


def finished_rows(samples_file) -> dict[str, dict]:
    """The rows of a finished run's samples file by id, read without changing the file (a reader of
    results, not a resumed run): a torn last line means the run did not finish, and is an error."""
    scan = run_dir.scan_jsonl(samples_file, ROW_FIELDS)
    if scan.torn:
        raise JsonlFormatError(scan.path, len(scan.lines) + 1, "cut off mid-write: the evaluation did not finish")
    return _by_id(scan)


def first_correct(samples_file) -> dict[str, bool]:
    """Problem id -> whether its first completion was graded correct (greedy accuracy per problem, for
    paired comparisons of two models on the same problems)."""
    return {i: bool(row["correct"][0]) for i, row in finished_rows(samples_file).items()}


def row_writer(out_dir: epath.Path) -> run_dir.JsonlAppender:
    """Appends one JSON row per line (`write_row`) as each problem finishes."""
    return run_dir.JsonlAppender(out_dir / SAMPLES_FILE)
