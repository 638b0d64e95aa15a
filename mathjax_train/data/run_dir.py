"""What every resumable command needs from its output: the "same settings as the run already there?"
check, append-only JSONL (local files and object stores alike), and reading such a file back with a
last line torn by an interruption detected and cut, so that a re-run continues where the last stopped.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from etils import epath

from mathjax_train.config import is_remote
from mathjax_train.data.jsonl_source import PathLike, Required, decode_line, parse_record, required_checks
from mathjax_train.errors import InputError, SettingsMismatchError


# ----------------------------------------------------------------------------- settings
def diff_settings(recorded: Mapping, now: Mapping, keys: Iterable[str] | None = None) -> dict[str, tuple[Any, Any]]:
    """key -> (recorded, now) for the keys (default: both mappings', sorted) whose values differ; an
    absent key reads as None."""
    names = sorted(set(recorded) | set(now)) if keys is None else list(keys)
    return {k: (recorded.get(k), now.get(k)) for k in names if recorded.get(k) != now.get(k)}


def check_settings(
    path: PathLike,
    settings: Mapping,
    *,
    output: str,
    flag: str,
    under: str | None = None,
    keys: Iterable[str] | None = None,
) -> None:
    """First run: record `settings` in the JSON file `path` (as {under: settings} when `under` is given).
    Re-run: raise SettingsMismatchError naming every key (of `keys`, default all) that differs from the
    recorded settings, since `output` would mix results made two ways. `flag` names the option to change."""
    p = epath.Path(path)
    if not p.exists():
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps({under: dict(settings)} if under else dict(settings), indent=1))
        return
    fresh = f"use another {flag}, or delete {output} (and {p.name}) to start over"
    try:
        recorded = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise InputError(f"{p}:{e.lineno}: not valid JSON ({e.msg}); {fresh}") from None
    if under and isinstance(recorded, dict):
        recorded = recorded.get(under)
    if not isinstance(recorded, dict):
        raise InputError(f"{p}: not a settings record (a JSON object{f' under {under!r}' if under else ''}); {fresh}")
    diff = diff_settings(recorded, settings, keys)
    if diff:
        raise SettingsMismatchError(
            str(p),
            f"{output} holds results made with other settings",
            diff,
            f"{fresh}, or rerun with the recorded settings to resume",
        )


# ----------------------------------------------------------------------------- reading back
@dataclass
class JsonlScan:
    """The complete rows of an append-only JSONL file, each with its 1-based line number and the byte
    offset just past its line; `torn`: the file ended in a line cut off mid-write (not among the rows)."""

    path: epath.Path
    data: bytes
    rows: list[dict] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)
    torn: bool = False


def _whole(raw: bytes) -> bool:
    """A last line without its newline is whole when it parses (the write stopped just before the newline)."""
    try:
        json.loads(raw)
        return True
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False


def scan_jsonl(path: PathLike, required: Required = ()) -> JsonlScan:
    """Read an append-only JSONL file (which must exist). Only its last line may be incomplete: that one
    is reported as `torn`; any other bad line raises JsonlFormatError naming path:line (and the field)."""
    p = epath.Path(path)
    scan = JsonlScan(p, p.read_bytes())
    data, checks = scan.data, required_checks(required)
    offset, lineno = 0, 0
    while offset < len(data):
        lineno += 1
        nl = data.find(b"\n", offset)
        end = len(data) if nl < 0 else nl + 1
        raw = data[offset:end]
        if nl < 0 and raw.strip() and not _whole(raw):
            scan.torn = True
            break
        text = decode_line(p, lineno, raw)
        if text.strip():
            scan.rows.append(parse_record(p, lineno, text, checks))
            scan.lines.append(lineno)
            scan.ends.append(end)
        offset = end
    return scan


def keep_rows(scan: JsonlScan, count: int) -> bool:
    """Cut the scanned file back to its first `count` rows (a torn line, or rows of an unfinished unit of
    work, go), ending in a newline so the next append starts a line; whether the file changed."""
    data = scan.data
    if count == len(scan.rows) and not scan.torn:
        keep = len(data)
    else:
        keep = scan.ends[count - 1] if count else 0
    fixed = data[:keep]
    if fixed.strip() and not fixed.endswith(b"\n"):
        fixed += b"\n"
    if fixed == data:
        return False
    scan.path.write_bytes(fixed)
    return True


def read_jsonl_repairing(path: PathLike, required: Required = ()) -> JsonlScan:
    """The rows of an append-only JSONL file (none if it does not exist); a torn last line is cut off
    the file (`torn` says so) and a missing final newline is added, ready for appending."""
    p = epath.Path(path)
    if not p.exists():
        return JsonlScan(p, b"")
    scan = scan_jsonl(p, required)
    keep_rows(scan, len(scan.rows))
    return scan


# ----------------------------------------------------------------------------- appending
class JsonlAppender:
    """Appends JSONL text to a file. Local files: one write and flush per call, so a crash loses at most
    the write in flight. Object stores (gs://) cannot append, so the object is rewritten whole, at most
    every `flush_every_s` seconds (0: after every write) and on close; a preempted run redoes that much."""

    def __init__(self, path: PathLike, *, flush_every_s: float = 60.0, remote: bool | None = None):
        self.path = epath.Path(path)
        self.remote = is_remote(path) if remote is None else remote
        self.flush_every_s = flush_every_s
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.remote:
            self._data = bytearray(self.path.read_bytes() if self.path.exists() else b"")
            self._dirty, self._last = False, time.monotonic()
        else:
            self._f = self.path.open("a")

    def write(self, text: str) -> None:
        """Append `text` (whole lines; a unit of work's rows in one call land together)."""
        if not self.remote:
            self._f.write(text)
            self._f.flush()
            return
        self._data += text.encode()
        self._dirty = True
        if time.monotonic() - self._last >= self.flush_every_s:
            self.flush()

    def write_row(self, row: Mapping) -> None:
        self.write(json.dumps(dict(row), ensure_ascii=False) + "\n")

    def flush(self) -> None:
        if self.remote and self._dirty:
            self.path.write_bytes(bytes(self._data))
            self._dirty, self._last = False, time.monotonic()

    def close(self) -> None:
        if self.remote:
            self.flush()
        else:
            self._f.close()

    def __enter__(self) -> "JsonlAppender":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
