"""The `rft` job: sample k paths per training question from one or more checkpoints, keep the
verified distinct ones (synth/rft.py) plus the reference solution, and append SFT JSONL rows.

Rows of one question are written together, in one write, as soon as the question is done; a
re-run skips questions already in the output (a torn last question is cut off and redone). Each
host of a pod takes questions i % num_shards == shard_index into OUTPUT.shard-i-of-n;
`rft_output.merge_shards` joins complete shards in question order.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from tqdm import tqdm

from mathjax_train.config import InputError, RftConfig
from mathjax_train.data import run_dir
from mathjax_train.data.templates import ChatTemplate, get_template
from mathjax_train.infer.engine import engine_for_prompts
from mathjax_train.infer.loading import LoadedModel, load_for_inference
from mathjax_train.infer.params import SamplingParams, sample_seed
from mathjax_train.data.problems import Problem
from mathjax_train.synth.questions import load_questions
from mathjax_train.synth.rft import REJECT_REASONS, select
from mathjax_train.parallel import host_shard
from mathjax_train.parallel.host_shard import settings_path, shard_path
from mathjax_train.synth.rft_output import output_stats, repair

if TYPE_CHECKING:
    from mathjax_train.infer.engine import Engine
    from mathjax_train.infer.tool_generate import ToolGenerator

# settings that must match for a re-run to continue an existing output (batch size, dtype and
# data_dir may change between runs without changing what a row means)
RESUME_KEYS = (
    "checkpoints",
    "dataset",
    "split",
    "limit",
    "procedural_seed",
    "template",
    "k",
    "temperature",
    "top_p",
    "max_new_tokens",
    "seed",
    "tools",
    "max_tool_calls",
    "num_shards",
    "shard_index",
    "dedup_with_reference",
)


# ----------------------------------------------------------------------------- sampling
@dataclass
class QuestionSamples:
    texts: list[str] = field(default_factory=list)
    tool_calls: list[int] = field(default_factory=list)
    finish: Counter = field(default_factory=Counter)


def _template(name: str, model: LoadedModel):
    """A prompt template; `chat` uses the chat template the checkpoint's tokenizer was loaded with
    (tokenizer_config.json or chat_template.jinja)."""
    if name != "chat":
        return get_template(name)
    tok = model.tokenizer
    if not tok.chat_template:
        raise InputError(
            "template 'chat': the checkpoint's tokenizer has no chat template "
            "(tokenizer_config.json chat_template or chat_template.jinja)"
        )
    special = {}
    for key in ("bos_token", "eos_token", "unk_token", "pad_token"):
        value = tok.config.get(key)
        value = value.get("content") if isinstance(value, dict) else value  # AddedToken dicts
        if isinstance(value, str):
            special[key] = value
    return ChatTemplate("chat", tok.chat_template, special)


class Sampler:
    """One checkpoint's sampling for the job, on the engine: plain or tool-integrated decoding."""

    def __init__(self, index: int, path: str, cfg: RftConfig):
        self.index, self.path, self.cfg = index, path, cfg
        self.model: LoadedModel = load_for_inference(path, dtype=cfg.dtype or "auto", tensor=cfg.tensor)
        self.template = _template(cfg.template, self.model)
        self.add_special = cfg.template != "chat"  # a chat template writes its own BOS
        self.sp = SamplingParams(max_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p)
        self.tools: ToolGenerator | None = None
        self.engine: Engine | None = None  # sized by prepare() when there are no tools
        if cfg.tools == "python":
            from mathjax_train.infer.tool_generate import ToolGenerator

            self.tools = ToolGenerator(
                self.model,
                max_calls=cfg.max_tool_calls,
                timeout_s=cfg.tool_timeout_s,
                batch_size=cfg.batch_size,
                add_special_tokens=self.add_special,
                engine_config=cfg.engine(),
            )

    def prepare(self, questions: list[Problem]) -> set[int]:
        """Size the engine for these prompts; returns indices of prompts too long to sample."""
        lens = {q.index: len(self.model.tokenizer.encode(self.prompt(q), self.add_special)) for q in questions}
        limit = self.model.cfg.max_position_embeddings
        too_long = {i for i, n in lens.items() if n + self.cfg.max_new_tokens > limit}
        if self.tools is None:
            self.engine = engine_for_prompts(
                self.model, [n for i, n in lens.items() if i not in too_long], self.sp, self.cfg.engine()
            )
        return too_long

    def prompt(self, q: Problem) -> str:
        return self.template.format_prompt(q.question)

    def sample(self, questions: list[Problem]) -> tuple[dict[int, QuestionSamples], int]:
        """k samples for each question (keyed by question index), and the number of tokens sampled."""
        k = self.cfg.k
        seeds = {q.index: [sample_seed(self.cfg.seed, self.index, q.index, j) for j in range(k)] for q in questions}
        if self.tools is not None:
            flat = self.tools.generate(
                [self.prompt(q) for q in questions for _ in range(k)],
                self.sp,
                [s for q in questions for s in seeds[q.index]],
            )
            per_question = [flat[n * k : (n + 1) * k] for n in range(len(questions))]
        else:
            tok = self.model.tokenizer
            engine = self.engine
            assert engine is not None, "prepare() sizes the engine first"
            groups = [
                engine.submit(tok.encode(self.prompt(q), self.add_special), self.sp, seeds[q.index]) for q in questions
            ]  # k samples of a question share one prefill
            engine.run()
            per_question = [[r.result() for r in g] for g in groups]
        out, tokens = {}, 0
        for q, completions in zip(questions, per_question):
            r = out[q.index] = QuestionSamples()
            for c in completions:
                r.texts.append(c.text)
                r.finish[c.finish_reason] += 1
                r.tool_calls.append(c.tool_calls)
                tokens += c.num_tokens
        return out, tokens

    def close(self) -> None:
        if self.tools is not None:
            self.tools.close()


# ----------------------------------------------------------------------------- the job
def _settings(cfg: RftConfig, index: int, count: int) -> dict:
    d = asdict(cfg)
    d.update(shard_index=index, num_shards=count)
    return {k: d[k] for k in RESUME_KEYS}


def _rows_for(q: Problem, kept: list[tuple[str, int, int, int]], cfg: RftConfig) -> list[dict]:
    """The reference solution first, then the kept samples (text, checkpoint, sample, tool calls)."""
    total = 1 + len(kept)
    base = {
        "question": q.question,
        "answer": q.answer,
        "level": q.level or 0,
        "question_id": q.id,
        "question_index": q.index,
        "paths_total": total,
    }
    rows = [
        dict(
            base,
            id=q.id,
            solution=q.solution,
            source=q.source,
            origin="original",
            path_index=0,
            checkpoint=None,
            sample_index=None,
            seed=None,
            temperature=None,
            top_p=None,
            k=cfg.k,
            tools=cfg.tools,
            tool_calls=None,
        )
    ]
    for n, (text, m, j, calls) in enumerate(kept, start=1):
        rows.append(
            dict(
                base,
                id=f"{q.id}#rft{n}",
                solution=text,
                source=f"rft/{q.source}",
                origin="sampled",
                path_index=n,
                checkpoint=cfg.checkpoints[m],
                sample_index=j,
                seed=sample_seed(cfg.seed, m, q.index, j),
                temperature=cfg.temperature,
                top_p=cfg.top_p,
                k=cfg.k,
                tools=cfg.tools,
                tool_calls=calls,
            )
        )
    return rows


def _chunk_size(k: int, slots: int) -> int:
    """Questions per sampling round: enough samples to keep the engine's slots full four times over
    (a round is written when it ends, so rounds are not the whole shard)."""
    return max(1, -(-4 * slots // k))


@dataclass
class Tally:
    """Running counts of a job: samples, tokens, time spent sampling vs selecting, why paths went."""

    samples: int = 0
    kept: int = 0
    tokens: int = 0
    sample_s: float = 0.0
    select_s: float = 0.0
    rejected: Counter = field(default_factory=Counter)
    finish: Counter = field(default_factory=Counter)


def sample_chunk(samplers: list[Sampler], chunk: list[Problem], tally: Tally) -> list[dict]:
    """Every checkpoint's k samples for each question of `chunk` (a list per checkpoint)."""
    t0 = time.perf_counter()
    per_model = []
    for s in samplers:
        res, n_tok = s.sample(chunk)
        per_model.append(res)
        tally.tokens += n_tok
    tally.sample_s += time.perf_counter() - t0
    return per_model


def select_chunk(per_model: list[dict], chunk: list[Problem], cfg: RftConfig, tally: Tally) -> str:
    """Pool each question's samples over checkpoints, select paths, render its rows as JSONL text."""
    t0 = time.perf_counter()
    lines = []
    for q in chunk:
        texts, origin = [], []
        for m, res in enumerate(per_model):
            r = res[q.index]
            tally.finish.update(r.finish)
            texts += [t.strip() for t in r.texts]
            origin += [(m, j, c) for j, c in enumerate(r.tool_calls)]
        sel = select(q.answer, texts, already_kept=[q.solution or ""] if cfg.dedup_with_reference else [])
        tally.rejected.update(sel.rejected)
        tally.samples += len(texts)
        kept = [(texts[i],) + origin[i] for i in sel.kept_indices]
        tally.kept += len(kept)
        lines += [json.dumps(row, ensure_ascii=False) + "\n" for row in _rows_for(q, kept, cfg)]
    tally.select_s += time.perf_counter() - t0
    return "".join(lines)


def run_rft(cfg: RftConfig, *, progress: bool = True) -> dict:
    """Run (or resume) this host's shard; returns the stats that `rft` prints."""
    cfg.validate("rft")
    index, count = host_shard.resolve_shard(cfg.shard_index, cfg.num_shards)
    out_path = shard_path(cfg.output, index, count)
    questions = load_questions(
        cfg.dataset, cfg.split, data_dir=cfg.data_dir or None, limit=cfg.limit, procedural_seed=cfg.procedural_seed
    )
    mine = [q for q in questions if host_shard.owns(q.index, index, count)]
    run_dir.check_settings(
        settings_path(out_path), _settings(cfg, index, count), keys=RESUME_KEYS, output=out_path, flag="--output"
    )
    done = {r["question_id"] for r in repair(out_path)}
    skipped: dict[str, set] = {"no_gold_answer": {q.id for q in mine if not q.answer.strip()}, "prompt_too_long": set()}
    todo = [q for q in mine if q.id not in done and q.id not in skipped["no_gold_answer"]]
    tally = Tally()
    samplers: list[Sampler] = []
    try:
        for m, path in enumerate(cfg.checkpoints if todo else []):
            samplers.append(Sampler(m, path, cfg))
            too_long = samplers[-1].prepare(todo)
            skipped["prompt_too_long"] |= {q.id for q in todo if q.index in too_long}
            todo = [q for q in todo if q.index not in too_long]
        slots = samplers[0].engine.num_slots if samplers and samplers[0].engine else cfg.batch_size or 64
        step = _chunk_size(cfg.k, slots)
        with (
            run_dir.JsonlAppender(out_path) as sink,
            tqdm(total=len(todo), desc="rft", unit="question", file=sys.stderr, disable=not progress) as bar,
        ):
            for lo in range(0, len(todo), step):
                chunk = todo[lo : lo + step]
                sink.write(select_chunk(sample_chunk(samplers, chunk, tally), chunk, cfg, tally))
                bar.update(len(chunk))
                bar.set_postfix(
                    tok_s=f"{tally.tokens / max(tally.sample_s, 1e-9):.1f}",
                    kept_per_q=f"{tally.kept / max(bar.n, 1):.2f}",
                )
    finally:
        for s in samplers:
            s.close()
    rows = repair(out_path)
    finished = {r["question_id"] for r in rows} | set().union(*skipped.values())
    if count > 1 and finished >= {q.id for q in mine}:
        host_shard.mark_done(out_path, {"questions": len(mine), "rows": len(rows)})
    t = tally
    return {
        "output": out_path,
        "shard_index": index,
        "num_shards": count,
        "questions_in_shard": len(mine),
        "already_done": len(done & {q.id for q in mine}),
        "processed": len(todo),
        "samples": t.samples,
        "kept_samples": t.kept,
        "sampled_tokens": t.tokens,
        "sample_seconds": round(t.sample_s, 3),
        "select_seconds": round(t.select_s, 3),
        "sampled_tokens_per_second": round(t.tokens / t.sample_s, 2) if t.sample_s else None,
        "end_to_end_tokens_per_second": round(t.tokens / (t.sample_s + t.select_s), 2) if t.sample_s else None,
        "rejected": {r: t.rejected.get(r, 0) for r in REJECT_REASONS},
        "finish_reasons": dict(t.finish),
        "skipped_questions": {k: len(v) for k, v in skipped.items()},
        "output_stats": output_stats(rows),
    }
