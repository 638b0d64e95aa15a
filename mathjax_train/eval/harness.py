"""`evaluate`: prompts from the shared templates (zero- or few-shot), decoding through infer,
grading with `grading`, one result row per problem written as it finishes, then the report.

Re-running the same command in the same output directory resumes: finished rows are read back
and not generated again; per-sample seeds depend on the problem's index only, so a resumed run
produces the same samples as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from typing import Callable, Sequence

from etils import epath
from tqdm import tqdm

from mathjax_train.config import EvalConfig, InputError, is_remote
from mathjax_train.data.problems import ID_SCHEME
from mathjax_train.data.templates import get_template, pick_exemplars
from mathjax_train.eval import datasets, metrics, report, results
from mathjax_train.eval.completions import CompleteFn, Completion
from mathjax_train.grading import extract_answer, is_equivalent, stats
from mathjax_train.infer.params import SamplingParams, sample_seed
from mathjax_train.parallel.host_shard import done_path, mark_done, owns, resolve_shard, shard_path, unfinished

# Few-shot prompts invite the model to write the next "Question:" / instruction itself: stop there.
DEFAULT_STOP = ("\n\nQuestion:", "### Instruction", "\n\nBelow is an instruction")
SourceFactory = Callable[[EvalConfig, Sequence[str]], CompleteFn]


@dataclass
class EvalResult:
    report: dict
    paths: dict[str, str]
    generated: int  # problems decoded by this run
    resumed: int  # problems read back from an earlier, interrupted run
    shard: tuple[int, int] | None = None  # (index, count) of this host's shard on a pod
    joined: bool = False  # on a pod: this host joined every shard into the output directory


def output_dir(cfg: EvalConfig) -> epath.Path:
    if cfg.output_dir:
        return epath.Path(cfg.output_dir)
    name = cfg.dataset if cfg.dataset in datasets.NAMED else os.path.splitext(os.path.basename(cfg.dataset))[0]
    return epath.Path("runs") / "eval" / name


def answer_fallback(cfg: EvalConfig) -> str | None:
    if cfg.answer_fallback == "auto":
        return datasets.default_fallback(cfg.dataset)
    return None if cfg.answer_fallback == "none" else cfg.answer_fallback


def sampling_params(cfg: EvalConfig) -> SamplingParams:
    g = cfg.generate
    stop = tuple(dict.fromkeys(DEFAULT_STOP + tuple(g.stop)))
    return SamplingParams(
        max_tokens=g.max_new_tokens, temperature=g.temperature, top_p=g.top_p, top_k=g.top_k, stop=stop
    )


def tokenizer_dir(cfg: EvalConfig) -> epath.Path:
    from mathjax_train.model.checkpoint import resolve

    return resolve(cfg.checkpoint).tokenizer_dir


def checkpoint_step(cfg: EvalConfig) -> int | None:
    """The training step a checkpoint directory resolves to (None for an import-hf directory)."""
    from mathjax_train.model.checkpoint import resolve

    return resolve(cfg.checkpoint).step


def build_prompts(cfg: EvalConfig, problems: Sequence[datasets.Problem]):
    """(prompts, exemplars used, problems kept, skip counts). A problem whose question is one of
    the exemplars is skipped (and counted): it would see its own solution in the prompt."""
    template = get_template(cfg.template, tokenizer_config=tokenizer_dir(cfg) if cfg.template == "chat" else None)
    shots: list[datasets.Problem] = []
    pool_skips: dict = {}
    if cfg.shots:
        pool = datasets.load_exemplars(cfg.dataset, cfg.exemplars, cfg.data_dir or None, pool_skips)
        shots = pick_exemplars(pool, cfg.shots, seed=cfg.generate.seed)
    seen = {e.question.strip() for e in shots}
    kept = [p for p in problems if p.question.strip() not in seen]
    ex = [{"question": e.question, "solution": datasets.exemplar_solution(e)} for e in shots]
    prompts = [template.few_shot(ex, p.question) if ex else template.format_prompt(p.question) for p in kept]
    skipped = {"exemplar_overlap": len(problems) - len(kept)}
    skipped.update({f"exemplar_pool_{k}": v for k, v in pool_skips.items()})
    return prompts, shots, kept, skipped


def run_settings(cfg: EvalConfig, dataset_file, shots: Sequence[datasets.Problem], step: int | None) -> dict:
    """What must not change between an interrupted run and its resumption."""
    g = cfg.generate
    return {
        "checkpoint": cfg.checkpoint if is_remote(cfg.checkpoint) else os.path.abspath(cfg.checkpoint),
        "checkpoint_step": step,
        "dataset": cfg.dataset,
        "split": cfg.split,
        "dataset_file": str(dataset_file),
        "problem_ids": ID_SCHEME,
        "template": cfg.template,
        "shots": cfg.shots,
        "exemplar_ids": [e.id for e in shots],
        "max_new_tokens": g.max_new_tokens,
        "temperature": g.temperature,
        "top_p": g.top_p,
        "top_k": g.top_k,
        "num_samples": g.num_samples,
        "seed": g.seed,
        "stop": list(sampling_params(cfg).stop),
        "tools": cfg.tools,
        "answer_fallback": answer_fallback(cfg),
        "dtype": cfg.dtype,
        "grading_timeout_s": cfg.grading_timeout_s,
    }


def default_source(cfg: EvalConfig, all_prompts: Sequence[str]) -> CompleteFn:
    """Load the checkpoint and decode plainly, or with the Python tool when `cfg.tools == "python"`."""
    from mathjax_train.eval import completions
    from mathjax_train.infer.loading import load_for_inference

    g = cfg.generate
    model = load_for_inference(cfg.checkpoint, dtype=cfg.dtype or "auto", tensor=g.tensor)
    sp = sampling_params(cfg)
    special = cfg.template != "chat"
    if cfg.tools == "python":
        return completions.tool_source(model, sp, engine_config=g.engine(), add_special_tokens=special)
    return completions.plain_source(model, sp, all_prompts, engine_config=g.engine(), add_special_tokens=special)


def grade(
    problem: datasets.Problem,
    index: int,
    prompt: str,
    samples: Sequence[Completion],
    fallback: str | None,
    timeout_s: float,
) -> dict:
    """One result row: the completions, their extracted answers, verdicts and answer clusters."""
    answers = [extract_answer(s.text, fallback=fallback) for s in samples]
    correct = [a is not None and is_equivalent(problem.answer, a, timeout_s=timeout_s) for a in answers]
    return {
        "id": problem.id,
        "index": index,
        "question": problem.question,
        "gold": problem.answer,
        "level": problem.level,
        "subject": problem.subject,
        "prompt_sha1": hashlib.sha1(prompt.encode()).hexdigest(),
        "completions": [s.text for s in samples],
        "answers": answers,
        "correct": correct,
        "clusters": metrics.cluster_ids(answers),
        "finish_reasons": [s.finish_reason for s in samples],
        "num_tokens": [s.num_tokens for s in samples],
        "tool_calls": [s.tool_calls for s in samples],
    }


def evaluate(
    cfg: EvalConfig,
    *,
    make_source: SourceFactory = default_source,
    on_row: Callable[[dict], None] | None = None,
    progress: bool = True,
    join: bool = True,
) -> EvalResult:
    """Run (or resume) one evaluation and write report.json, summary.md and accuracy_vs_k.png. On a pod
    (num_shards > 1) this host evaluates the problems i % n == index in OUTPUT_DIR.shard-i-of-n (a run
    directory of its own, resumed on its own; parallel/host_shard.py), and the host that completes the last
    shard joins them into OUTPUT_DIR as one host would have written it (re-running a finished shard joins
    them again). `join=False`: this host only completes its shard (a caller that joins in step on every host)."""
    cfg.validate()
    t0 = time.time()
    shard, count = resolve_shard(cfg.shard_index, cfg.num_shards)
    step = checkpoint_step(cfg)  # fails early, naming the file, when the checkpoint is not one
    dataset_file = datasets.dataset_path(cfg.dataset, cfg.split, cfg.data_dir or None)
    problems = datasets.load_problems(cfg.dataset, cfg.split, cfg.data_dir or None, cfg.limit)
    if not problems:
        raise InputError(f"{dataset_file}: no problems to evaluate")
    prompts, shots, kept, skipped = build_prompts(cfg, problems)
    index = {p.id: i for i, p in enumerate(problems)}
    root = output_dir(cfg)
    settings = run_settings(cfg, dataset_file, shots, step)
    out = root if count == 1 else epath.Path(shard_path(str(root), shard, count))
    if count > 1:
        settings = dict(settings, shard_index=shard, num_shards=count)
    results.check_settings(out, settings)
    resumed = results.read_rows(out)
    sha = [hashlib.sha1(p.encode()).hexdigest() for p in prompts]
    mine = [i for i, p in enumerate(kept) if owns(index[p.id], shard, count)]
    for i in mine:
        p = kept[i]
        row = resumed.rows.get(p.id)
        if row is not None and row["prompt_sha1"] != sha[i]:
            raise InputError(
                f"{out / results.SAMPLES_FILE}: the row for problem {p.id!r} was made from another "
                "prompt (the dataset changed?); use another --output-dir"
            )
    todo = [i for i in mine if kept[i].id not in resumed.rows]
    n = cfg.generate.num_samples
    fallback = answer_fallback(cfg)
    new_tokens, done_now, correct_now = 0, 0, 0
    if todo:
        complete = make_source(cfg, prompts)
        work = [(i, j) for i in todo for j in range(n)]
        pending: dict[int, dict[int, Completion]] = {}
        bs = 4 * (cfg.generate.batch_size or 64)  # samples handed to the engine at once; rows are written after each
        with (
            results.row_writer(out) as writer,
            tqdm(
                total=len(work), desc=f"evaluate {cfg.dataset}", unit="sample", file=sys.stderr, disable=not progress
            ) as bar,
            contextlib.closing(complete) if hasattr(complete, "close") else contextlib.nullcontext(),
        ):
            for b in range(0, len(work), bs):
                chunk = work[b : b + bs]
                outs = complete(
                    [prompts[i] for i, _ in chunk],
                    [sample_seed(cfg.generate.seed, index[kept[i].id], j) for i, j in chunk],
                )
                for (i, j), c in zip(chunk, outs):
                    pending.setdefault(i, {})[j] = c
                    new_tokens += c.num_tokens
                for i in sorted(k for k, v in pending.items() if len(v) == n):
                    samples = pending.pop(i)
                    row = grade(
                        kept[i],
                        index[kept[i].id],
                        prompts[i],
                        [samples[j] for j in range(n)],
                        fallback,
                        cfg.grading_timeout_s,
                    )
                    writer.write_row(row)
                    resumed.rows[row["id"]] = row
                    done_now += 1
                    correct_now += bool(row["correct"][0])
                    if on_row is not None:
                        on_row(row)
                bar.update(len(chunk))
                bar.set_postfix(
                    acc=f"{correct_now / max(done_now, 1):.3f}", tok_s=f"{new_tokens / (time.time() - t0):.1f}"
                )
    rows = [resumed.rows[kept[i].id] for i in mine]
    seconds = time.time() - t0
    meta = {
        "settings": {**settings, "limit": cfg.limit},
        "skipped": skipped,
        "run": {
            "generated_problems": done_now,
            "resumed_problems": len(mine) - done_now,
            "partial_lines_discarded": resumed.partial_lines,
            "rows_not_in_this_run": len(set(resumed.rows) - {kept[i].id for i in mine}),
            "new_tokens": new_tokens,
            "seconds": round(seconds, 2),
            "tokens_per_second": round(new_tokens / max(seconds, 1e-9), 2),
            "grading": stats(),
        },
    }
    rep = report.build_report(rows, n, meta)
    paths = report.write(rep, out)
    result = EvalResult(rep, paths, done_now, len(mine) - done_now)
    if count == 1:
        return result
    mark_done(str(out), {"problems": len(mine), "run": meta["run"]})
    result.shard = (shard, count)
    if not join:
        return result
    joined = join_shards(
        root, count, kept, n, dict(meta, settings={**run_settings(cfg, dataset_file, shots, step), "limit": cfg.limit})
    )
    if joined is not None:
        result.report, result.paths, result.joined = joined[0], joined[1], True
    return result


def join_shards(root: epath.Path, count: int, kept: Sequence[datasets.Problem], n: int, meta: dict):
    """(report, paths) of the whole evaluation in `root` from its `count` complete shard directories (their
    rows in problem order, samples.jsonl and run.json as one host writes them); None while one is unfinished."""
    if unfinished(str(root), count):
        return None
    rows: dict[str, dict] = {}
    runs = []
    for i in range(count):
        d = shard_path(str(root), i, count)
        rows.update(results.finished_rows(epath.Path(d) / results.SAMPLES_FILE))
        runs.append(json.loads(epath.Path(done_path(d)).read_text())["run"])
    missing = [p.id for p in kept if p.id not in rows]
    if missing:
        raise InputError(
            f"{root}: the shards marked done hold no row for problem {missing[0]!r} ({len(missing)} missing)"
        )
    results.check_settings(root, {k: v for k, v in meta["settings"].items() if k != "limit"})
    ordered = [rows[p.id] for p in kept]
    (root / results.SAMPLES_FILE).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ordered))
    tokens, seconds = sum(r["new_tokens"] for r in runs), max(r["seconds"] for r in runs)
    run = {
        "generated_problems": sum(r["generated_problems"] for r in runs),
        "resumed_problems": sum(r["resumed_problems"] for r in runs),
        "new_tokens": tokens,
        "seconds": seconds,
        "tokens_per_second": round(tokens / max(seconds, 1e-9), 2),
        "shards": runs,
    }
    rep = report.build_report(ordered, n, dict(meta, run=run))
    return rep, report.write(rep, root)
