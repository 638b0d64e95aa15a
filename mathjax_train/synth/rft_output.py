"""The `rft` output file: JSONL rows grouped by question (path_index 0..paths_total-1, contiguous),
read back with a torn or unfinished last question detected, appended chunk by chunk (locally or on
gs://), summarised, and per-host shards merged in question order."""
from __future__ import annotations

import json
import time
from collections import Counter

from etils import epath

from mathjax_train.config import InputError
from mathjax_train.data.jsonl_source import JsonlFormatError


def shard_path(output: str, index: int, count: int) -> str:
    return output if count == 1 else f"{output}.shard-{index}-of-{count}"



def read_rows(path) -> tuple[list[dict], int, bool]:
    """Rows of an RFT output file, the byte length of its complete questions, and whether the
    end had to be cut (a torn line or an unfinished question from an interrupted run)."""
    data = epath.Path(path).read_bytes()
    rows: list[dict] = []
    good_end, group_start, group_rows = 0, 0, 0
    offset, lineno = 0, 0
    while offset < len(data):
        lineno += 1
        nl = data.find(b"\n", offset)
        if nl < 0:  # torn last line
            return rows[:len(rows) - group_rows], group_start if group_rows else good_end, True
        line = data[offset:nl]
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise JsonlFormatError(path, lineno, f"not an RFT output row: {e}") from None
        for name in ("question_id", "question_index", "path_index", "paths_total"):
            if name not in row:
                raise JsonlFormatError(path, lineno, "missing field (is this an rft output file?)", name)
        if row["path_index"] == 0:
            if group_rows:
                raise JsonlFormatError(path, lineno, f"question {rows[-1]['question_id']!r} has "
                                       f"{group_rows} of {rows[-1]['paths_total']} rows", "path_index")
            group_start = offset
        elif not rows or row["question_id"] != rows[-1]["question_id"] or row["path_index"] != group_rows:
            raise JsonlFormatError(path, lineno, "rows of a question must be contiguous and in order", "path_index")
        rows.append(row)
        group_rows += 1
        offset = nl + 1
        if group_rows == row["paths_total"]:
            group_rows, good_end = 0, offset
    if group_rows:  # the last question stopped part-way
        return rows[:len(rows) - group_rows], group_start, True
    return rows, good_end, False


def repair(path) -> list[dict]:
    """Rows of the complete questions in `path`; an incomplete tail is removed from the file."""
    p = epath.Path(path)
    if not p.exists():
        return []
    rows, end, cut = read_rows(p)
    if cut:
        p.write_bytes(p.read_bytes()[:end])
    return rows


class RowSink:
    """Appends each chunk's rows to the output. Local files: one write + flush per chunk. Object
    stores (gs://) cannot append, so the object is rewritten whole at most every `flush_every_s`
    and on close; a preempted run then redoes at most that much work."""

    def __init__(self, path: str, *, remote: bool | None = None, flush_every_s: float = 60.0):
        self.path = epath.Path(path)
        self.remote = "://" in str(path) if remote is None else remote
        self.flush_every_s = flush_every_s
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.remote:
            self._data = bytearray(self.path.read_bytes() if self.path.exists() else b"")
            self._dirty, self._last = False, time.monotonic()
        else:
            self._f = self.path.open("a")

    def write(self, text: str) -> None:
        if not self.remote:
            self._f.write(text)  # a question's rows land in one write
            self._f.flush()
            return
        self._data += text.encode()
        self._dirty = True
        if time.monotonic() - self._last >= self.flush_every_s:
            self.flush()

    def flush(self) -> None:
        if self.remote and self._dirty:
            self.path.write_bytes(bytes(self._data))
            self._dirty, self._last = False, time.monotonic()

    def close(self) -> None:
        if self.remote:
            self.flush()
        else:
            self._f.close()

    def __enter__(self) -> "RowSink":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def output_stats(rows: list[dict]) -> dict:
    """Distinct paths per question (incl. the reference solution) and sampled ones kept."""
    per_q: dict[str, list[dict]] = {}
    for r in rows:
        per_q.setdefault(r["question_id"], []).append(r)
    total = [len(v) for v in per_q.values()]
    sampled = [sum(r["origin"] == "sampled" for r in v) for v in per_q.values()]

    def summary(xs):
        return {"mean": round(sum(xs) / len(xs), 3), "min": min(xs), "max": max(xs)} if xs else None

    by_ckpt = Counter(r["checkpoint"] for r in rows if r["origin"] == "sampled")
    return {"questions": len(per_q), "rows": len(rows), "paths_per_question": summary(total),
            "sampled_paths_per_question": summary(sampled),
            "sampled_paths_histogram": {str(n): c for n, c in sorted(Counter(sampled).items())},
            "sampled_paths_by_checkpoint": dict(by_ckpt)}


def merge_shards(output: str, num_shards: int) -> dict:
    """Join OUTPUT.shard-i-of-n (all complete) into OUTPUT, in question order."""
    if num_shards < 2:
        raise InputError(f"--num-shards must be >= 2 to merge, got {num_shards}")
    paths = [shard_path(output, i, num_shards) for i in range(num_shards)]
    missing = [p for p in paths if not epath.Path(p + ".done").exists()]
    if missing:
        raise FileNotFoundError(f"shard(s) not finished (no .done marker): {', '.join(missing)}; run rft for them")
    settings = [json.loads(epath.Path(p + ".settings.json").read_text()) for p in paths]
    for i, s in enumerate(settings):
        diff = [k for k in s if k != "shard_index" and s[k] != settings[0].get(k)]
        if diff:
            raise InputError(f"{paths[i]}: settings {diff} differ from shard 0's")
    groups: dict[int, list[dict]] = {}
    for i, p in enumerate(paths):
        rows, _, cut = read_rows(p)
        if cut:
            raise InputError(f"{p}: ends with an unfinished question although marked done")
        for r in rows:
            if r["question_index"] % num_shards != i:
                raise InputError(f"{p}: question {r['question_id']!r} (index {r['question_index']}) "
                                 f"belongs to shard {r['question_index'] % num_shards}")
            if r["path_index"] == 0 and r["question_index"] in groups:
                raise InputError(f"{p}: question index {r['question_index']} appears twice")
            groups.setdefault(r["question_index"], []).append(r)
    merged = [r for qi in sorted(groups) for r in groups[qi]]
    tmp = epath.Path(output + ".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in merged))
    tmp.rename(output)
    return {"output": output, "shards": num_shards, **output_stats(merged)}
