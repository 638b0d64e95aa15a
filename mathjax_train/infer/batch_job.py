"""The `generate` job over a JSONL file: each row's `prompt` -> K completions, plain (on the engine) or
tool-integrated (infer/tool_generate.py), written in input order by one writer; on a pod, each host its
shard of the rows (parallel/host_shard.py), joined in input order. The layer above the engine and the
tool generator: neither imports it."""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from typing import Callable

from etils import epath
from tqdm import tqdm

from mathjax_train.config import EngineConfig, GenerateJobConfig, InputError, is_remote
from mathjax_train.data import run_dir
from mathjax_train.data.jsonl_source import read_jsonl_numbered
from mathjax_train.infer.engine import SeqState, engine_for_prompts
from mathjax_train.infer.loading import LoadedModel, load_for_inference
from mathjax_train.infer.params import Completion, SamplingParams, sample_seed
from mathjax_train.infer.tool_generate import ToolGenerator
from mathjax_train.parallel.host_shard import mark_done, owns, resolve_shard, settings_path, shard_path, unfinished


@dataclass
class JobStats:
    prompts: int
    completions: int
    new_tokens: int
    seconds: float

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / max(self.seconds, 1e-9)


class _OrderedRows:
    """The job's one writer: each input row, with its K completions, goes to `write` as one JSON line, in
    input order, as soon as all its samples are done (samples finish in any order)."""

    def __init__(self, rows: list[tuple[int, dict]], num_samples: int, write: Callable[[str], None], tools: bool):
        self.rows, self.k, self.write, self.tools = rows, num_samples, write, tools
        self.done: dict[int, Completion] = {}  # finished samples of unwritten rows, by row * K + sample
        self.written = 0
        self.new_tokens = 0

    def add(self, index: int, c: Completion) -> None:
        """Sample `index` (row * K + sample) finished with `c`; write every row that is now complete."""
        self.done[index] = c
        self.new_tokens += c.num_tokens
        while self.written < len(self.rows) and all(self.written * self.k + j in self.done for j in range(self.k)):
            cs = [self.done.pop(self.written * self.k + j) for j in range(self.k)]
            row = dict(
                self.rows[self.written][1],
                completions=[c.text for c in cs],
                token_ids=[c.token_ids for c in cs],
                finish_reasons=[c.finish_reason for c in cs],
            )
            if self.tools:
                row["tool_calls"] = [c.tool_calls for c in cs]
            self.write(json.dumps(row) + "\n")
            self.written += 1


def generate_rows(
    model: LoadedModel,
    rows: list[tuple[int, dict]],
    write: Callable[[str], None],
    sp: SamplingParams,
    *,
    num_samples: int = 1,
    seed: int = 0,
    engine_config: EngineConfig | None = None,
) -> JobStats:
    """K completions of each (input index, row) of `rows`, written in order (_OrderedRows). Seeds come from
    the input index, so a row's completions do not depend on which other rows (or which shard of the file)
    ran with it."""
    encoded = [model.tokenizer.encode(r["prompt"]) for _, r in rows]
    engine = engine_for_prompts(model, map(len, encoded), sp, engine_config)
    out = _OrderedRows(rows, num_samples, write, tools=False)

    index: dict[int, int] = {}  # engine row id -> its sample's index (row * K + sample)

    def finished(row: SeqState, c: Completion) -> None:
        out.add(index[row.id], c)

    for k, ((i, _), ids) in enumerate(zip(rows, encoded)):  # a row's K samples share its prompt's prefill
        group = engine.submit(ids, sp, [sample_seed(seed, i, j) for j in range(num_samples)], on_finish=finished)
        index.update((r.id, k * num_samples + j) for j, r in enumerate(group))
    start = time.time()
    with tqdm(total=len(rows) * num_samples, desc="generate", unit="completion", file=sys.stderr) as bar:

        def progress():
            bar.update(engine.stats.finished - bar.n)
            bar.set_postfix(tok_s=f"{engine.stats.generated_tokens / max(time.time() - start, 1e-9):.1f}")

        engine.run(progress=progress)
        progress()
    return JobStats(len(rows), len(rows) * num_samples, out.new_tokens, time.time() - start)


def generate_rows_with_tools(
    model: LoadedModel,
    rows: list[tuple[int, dict]],
    write: Callable[[str], None],
    sp: SamplingParams,
    *,
    num_samples: int = 1,
    seed: int = 0,
    engine_config: EngineConfig | None = None,
    max_calls: int = 4,
    timeout_s: float = 5.0,
) -> JobStats:
    """`generate --tools python`: like generate_rows (same rows and seeds) plus `tool_calls`, on a
    ToolGenerator (infer/tool_generate.py)."""
    cfg = engine_config or EngineConfig(num_slots=8)
    work = [(k, j) for k in range(len(rows)) for j in range(num_samples)]
    out = _OrderedRows(rows, num_samples, write, tools=True)
    start = time.time()
    with (
        ToolGenerator(
            model, max_calls=max_calls, timeout_s=timeout_s, batch_size=cfg.num_slots, engine_config=cfg
        ) as tg,
        tqdm(total=len(work), desc="generate+tools", unit="completion", file=sys.stderr) as bar,
    ):

        def on_result(index: int, c: Completion) -> None:
            out.add(index, c)
            bar.update(1)
            bar.set_postfix(tok_s=f"{out.new_tokens / max(time.time() - start, 1e-9):.1f}", runs=tg.executions)

        tg.generate(
            [rows[k][1]["prompt"] for k, _ in work],
            sp,
            [sample_seed(seed, rows[k][0], j) for k, j in work],
            on_result=on_result,
        )
    return JobStats(len(rows), len(work), out.new_tokens, time.time() - start)


def _settings(cfg: GenerateJobConfig, index: int, count: int) -> dict:
    """What a shard must have been made with to be resumed (and joined with the others)."""
    g = cfg.generate
    d = asdict(g)
    for key in ("batch_size", "tensor"):  # how fast, not what: may change between runs
        d.pop(key)
    local = lambda p: p if is_remote(p) else os.path.abspath(p)  # noqa: E731
    return dict(
        d,
        checkpoint=local(cfg.checkpoint),
        prompts=local(cfg.prompts),
        dtype=cfg.dtype,
        tools=cfg.tools,
        max_tool_calls=cfg.max_tool_calls,
        shard_index=index,
        num_shards=count,
    )


def generate_job(cfg: GenerateJobConfig) -> dict:
    """`generate`: every prompt row of the file, or on a pod (num_shards > 1) this host's rows i % n == index
    into OUTPUT.shard-i-of-n (parallel/host_shard.py), resumed where it stopped; the host that completes the
    last shard joins them into OUTPUT in input order (re-running a finished shard joins them again)."""
    cfg.validate("generate")
    index, count = resolve_shard(cfg.shard_index, cfg.num_shards)
    rows = [r for _, r in read_jsonl_numbered(cfg.prompts, {"prompt": str})]
    out = shard_path(cfg.output, index, count)
    mine = [(i, r) for i, r in enumerate(rows) if owns(i, index, count)]
    done = 0
    if count > 1:
        run_dir.check_settings(settings_path(out), _settings(cfg, index, count), output=out, flag="--output")
        kept = run_dir.read_jsonl_repairing(out).rows
        if len(kept) > len(mine) or any(a["prompt"] != b[1]["prompt"] for a, b in zip(kept, mine)):
            raise InputError(f"{out}: its rows are not the first prompts of shard {index} of {cfg.prompts}")
        done = len(kept)
    elif epath.Path(out).exists():
        epath.Path(out).unlink()  # one host: the output is written anew
    g = cfg.generate
    sp = SamplingParams(
        max_tokens=g.max_new_tokens, temperature=g.temperature, top_p=g.top_p, top_k=g.top_k, stop=tuple(g.stop)
    )
    todo = mine[done:]
    stats = JobStats(0, 0, 0, 0.0)
    with run_dir.JsonlAppender(out) as sink:
        if todo:
            model = load_for_inference(cfg.checkpoint, dtype=cfg.dtype, tensor=g.tensor)
            if cfg.tools == "python":
                stats = generate_rows_with_tools(
                    model,
                    todo,
                    sink.write,
                    sp,
                    num_samples=g.num_samples,
                    seed=g.seed,
                    engine_config=g.engine(),
                    max_calls=cfg.max_tool_calls,
                    timeout_s=cfg.tool_timeout_s,
                )
            else:
                stats = generate_rows(
                    model, todo, sink.write, sp, num_samples=g.num_samples, seed=g.seed, engine_config=g.engine()
                )
    result = {
        "output": out,
        "prompts": stats.prompts,
        "completions": stats.completions,
        "new_tokens": stats.new_tokens,
        "seconds": round(stats.seconds, 2),
        "tokens_per_second": round(stats.tokens_per_second, 2),
    }
    if count > 1:
        mark_done(out, {"rows": len(mine)})
        result.update(
            shard_index=index, num_shards=count, resumed_rows=done, joined=_join(cfg.output, count, len(rows))
        )
    return result


def _join(output: str, count: int, total: int) -> str | None:
    """OUTPUT from its complete shards (row k is row k // n of shard k % n), when all are done; else None."""
    if unfinished(output, count):
        return None
    shards = [run_dir.scan_jsonl(shard_path(output, i, count)).rows for i in range(count)]
    for i, rows in enumerate(shards):
        if len(rows) != len(range(i, total, count)):
            raise InputError(
                f"{shard_path(output, i, count)}: {len(rows)} rows, but shard {i} of {count} of {total} prompts "
                f"has {len(range(i, total, count))}"
            )
    tmp = epath.Path(f"{output}.tmp-{os.getpid()}")
    tmp.write_text("".join(json.dumps(shards[k % count][k // count]) + "\n" for k in range(total)))
    tmp.rename(output)
    return output
