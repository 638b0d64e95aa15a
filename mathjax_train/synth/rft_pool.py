"""Pool rft outputs: per question, the sampled paths of every file are verified and deduplicated
again together (synth/rft.py `select`, the reference solution seeding the deduplication), so paths
that two models or two runs both found count once, as in the RFT paper's pooled "RFT U13B" data."""

from __future__ import annotations

import json

from etils import epath

from mathjax_train.data.procedural.steps import step_checker
from mathjax_train.errors import InputError
from mathjax_train.synth.rft import select
from mathjax_train.synth.rft_output import output_stats, question_record, read_rows


def pool_files(
    inputs: list[str],
    output: str,
    max_paths_per_question: int = 0,
    include_references: bool = True,
    check_steps: bool = False,
) -> dict:
    """Write the pooled rows (reference first, then the kept samples with their provenance) to
    `output`, questions in first-seen order; returns the output stats and what selection dropped.
    `include_references=False` leaves the references out (not written, not deduplicated against):
    for questions whose solutions must not be trained on, only their answers verify the samples.
    `check_steps` (procedural questions only) also turns down paths whose steps follow none of the
    generator's worked methods (data/procedural/steps.py)."""
    questions: dict[str, dict] = {}
    for path in inputs:
        rows, cut = read_rows(path)
        if cut:
            raise InputError(f"{path}: ends with an unfinished question; finish its rft run first")
        for r in rows:
            q = questions.setdefault(r["question_id"], {"original": None, "sampled": []})
            if r["origin"] == "original":
                q["original"] = q["original"] or r
            else:
                q["sampled"].append(r)
    lines: list[str] = []
    rejected: dict[str, int] = {}
    for qid, q in questions.items():
        original = q["original"]
        if original is None:
            raise InputError(f"question {qid!r}: no reference row (origin original) in {', '.join(inputs)}")
        seen = [original["solution"]] if include_references else []
        steps_ok = step_checker(question_record(original)) if check_steps else None
        sel = select(original["answer"], [r["solution"] for r in q["sampled"]], already_kept=seen, steps_ok=steps_ok)
        for reason, n in sel.rejected.items():
            rejected[reason] = rejected.get(reason, 0) + n
        kept = [q["sampled"][i] for i in sel.kept_indices]
        if max_paths_per_question:
            rejected["over_max_paths"] = rejected.get("over_max_paths", 0) + max(0, len(kept) - max_paths_per_question)
            kept = kept[:max_paths_per_question]
        first = 1 if include_references else 0
        total = first + len(kept)
        group = [dict(original, paths_total=total)] if include_references else []
        group += [dict(r, id=f"{qid}#rft{n}", path_index=n, paths_total=total) for n, r in enumerate(kept, start=first)]
        lines += [json.dumps(r, ensure_ascii=False) + "\n" for r in group]
    out = epath.Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = epath.Path(output + ".tmp")
    tmp.write_text("".join(lines))
    tmp.replace(out)
    rows = [json.loads(x) for x in lines]
    return {"output": output, "inputs": len(inputs), "rejected": rejected, **output_stats(rows)}
