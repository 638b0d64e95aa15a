"""The `rft` output file: JSONL rows grouped by question (path_index 0..paths_total-1, contiguous),
read back with a torn or unfinished last question detected and cut (data/run_dir.py appends and
repairs), summarised, and per-host shards merged in question order."""

from __future__ import annotations

import json
from collections import Counter

from etils import epath

from mathjax_train.data import run_dir
from mathjax_train.data.jsonl_source import JsonlFormatError
from mathjax_train.errors import InputError
from mathjax_train.parallel.host_shard import settings_path, shard_path, unfinished


RFT_FIELDS = ("question_id", "question_index", "path_index", "paths_total")


def _scan(path) -> tuple[run_dir.JsonlScan, int]:
    """The file's rows and how many of them belong to complete questions."""
    try:
        scan = run_dir.scan_jsonl(path, RFT_FIELDS)
    except JsonlFormatError as e:
        raise JsonlFormatError(e.path, e.line, f"{e.problem} (is this an rft output file?)", e.field) from None
    rows, done, group = scan.rows, 0, 0
    for i, (row, lineno) in enumerate(zip(rows, scan.lines)):
        if row["path_index"] == 0:
            if group:
                raise JsonlFormatError(
                    path,
                    lineno,
                    f"question {rows[i - 1]['question_id']!r} has {group} of {rows[i - 1]['paths_total']} rows",
                    "path_index",
                )
        elif not group or row["question_id"] != rows[i - 1]["question_id"] or row["path_index"] != group:
            raise JsonlFormatError(path, lineno, "rows of a question must be contiguous and in order", "path_index")
        group += 1
        if group == row["paths_total"]:
            group, done = 0, i + 1
    return scan, done


def read_rows(path) -> tuple[list[dict], bool]:
    """Rows of the complete questions of an RFT output file, and whether its end had to be cut (a
    torn line or an unfinished question from an interrupted run)."""
    scan, done = _scan(path)
    return scan.rows[:done], scan.torn or done < len(scan.rows)


def repair(path) -> list[dict]:
    """Rows of the complete questions in `path`; an incomplete tail is removed from the file."""
    if not epath.Path(path).exists():
        return []
    scan, done = _scan(path)
    run_dir.keep_rows(scan, done)
    return scan.rows[:done]


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
    return {
        "questions": len(per_q),
        "rows": len(rows),
        "paths_per_question": summary(total),
        "sampled_paths_per_question": summary(sampled),
        "sampled_paths_histogram": {str(n): c for n, c in sorted(Counter(sampled).items())},
        "sampled_paths_by_checkpoint": dict(by_ckpt),
    }


def merge_shards(output: str, num_shards: int) -> dict:
    """Join OUTPUT.shard-i-of-n (all complete) into OUTPUT, in question order."""
    if num_shards < 2:
        raise InputError(f"--num-shards must be >= 2 to merge, got {num_shards}")
    paths = [shard_path(output, i, num_shards) for i in range(num_shards)]
    missing = unfinished(output, num_shards)
    if missing:
        raise FileNotFoundError(f"shard(s) not finished (no .done marker): {', '.join(missing)}; run rft for them")
    settings = [json.loads(epath.Path(settings_path(p)).read_text()) for p in paths]
    for i, s in enumerate(settings):
        diff = run_dir.diff_settings(settings[0], s, [k for k in s if k != "shard_index"])
        if diff:
            raise run_dir.SettingsMismatchError(
                settings_path(paths[i]),
                "this shard was made with other settings than shard 0",
                diff,
                "rerun it with shard 0's settings",
                sides=("shard 0", "this shard"),
            )
    groups: dict[int, list[dict]] = {}
    for i, p in enumerate(paths):
        rows, cut = read_rows(p)
        if cut:
            raise InputError(f"{p}: ends with an unfinished question although marked done")
        for r in rows:
            if r["question_index"] % num_shards != i:
                raise InputError(
                    f"{p}: question {r['question_id']!r} (index {r['question_index']}) "
                    f"belongs to shard {r['question_index'] % num_shards}"
                )
            if r["path_index"] == 0 and r["question_index"] in groups:
                raise InputError(f"{p}: question index {r['question_index']} appears twice")
            groups.setdefault(r["question_index"], []).append(r)
    merged = [r for qi in sorted(groups) for r in groups[qi]]
    tmp = epath.Path(output + ".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in merged))
    tmp.rename(output)
    return {"output": output, "shards": num_shards, **output_stats(merged)}


def question_record(row: dict) -> dict:
    """The problem an rft row was sampled for: its question's id, text, level and source (the sampled
    rows' `rft/` prefix removed), as the problems file had them."""
    return {
        "id": row["question_id"],
        "question": row["question"],
        "level": row["level"],
        "source": str(row["source"]).removeprefix("rft/"),
    }
