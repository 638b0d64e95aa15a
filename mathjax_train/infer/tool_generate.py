"""Batched tool-integrated generation (MARIO / ToRA style; the format is tools/tir.py).

Each row decodes until it stops at the opening of an output block right after a closed
```python block; that code runs in the row's own sandboxed Session (later blocks see earlier
variables), the real output block is appended, and the row resumes, up to `max_calls` runs.
Rows move through a fixed-size batch: when one finishes, the next prompt takes its slot.
"""
from __future__ import annotations

import json
import math
import sys
import time
import weakref
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Sequence

from etils import epath
from tqdm import tqdm

from mathjax_train.data.jsonl_source import read_jsonl_numbered
from mathjax_train.infer.batch_job import JobStats, row_seed
from mathjax_train.infer.generate import Generator, SamplingParams
from mathjax_train.infer.loading import LoadedModel
from mathjax_train.tools.interpreter import DEFAULT_PRELOAD, InterpreterPool, Session
from mathjax_train.tools.tir import STOP, format_output, pending_code

FINISH_REASONS = ("eos", "length", "stop", "max_calls")
_ROUND_SEED_STEP = 0x9E3779B1


@dataclass
class ToolGeneration:
    """`text`: the completion incl. executed output blocks; `calls`: code blocks executed.

    `token_ids`: the completion's ids; with no call, exactly the sampled ids; after a call, the
    completion re-tokenized with its prompt for the last round followed by that round's samples.
    `finish_reason`: eos | length | stop (a caller's stop string) | max_calls (the model asked for
    one more run after `max_calls`; that last code block is left unexecuted).
    """

    text: str
    token_ids: list[int]
    calls: int
    finish_reason: str


@dataclass
class _Row:
    index: int
    prompt: str
    prompt_ids: list[int]
    text: str = ""
    context: list[int] = field(default_factory=list)  # prompt + completion so far, re-tokenized
    calls: int = 0
    rounds: int = 0
    session: Session | None = None
    code: str | None = None  # pending block to run before the next round


_GENERATORS: dict[int, Generator] = {}


def shared_generator(model: LoadedModel, eos_ids: Sequence[int]) -> Generator:
    """One Generator (and its compiled functions) per loaded model, dropped with the model."""
    key = id(model)
    if key not in _GENERATORS:
        _GENERATORS[key] = Generator(model.cfg, model.params, eos_ids=eos_ids)
        weakref.finalize(model, _GENERATORS.pop, key, None)
    return _GENERATORS[key]


def round_seed(seed: int, round_index: int) -> int:
    """Round 0 uses the row's seed unchanged (so a row without calls matches plain sampling)."""
    return (seed + round_index * _ROUND_SEED_STEP) % (2**32)


def bucket_length(n: int, minimum: int = 32) -> int:
    """Padded prompt length: powers of two, so growing contexts compile only a few shapes."""
    return max(minimum, 1 << math.ceil(math.log2(max(n, 1))))


class ToolGenerator:
    """Holds the compiled model and a pool of warm sandboxes (started on the first code run)."""

    def __init__(self, model: LoadedModel, *, max_calls: int = 4, timeout_s: float = 5.0, batch_size: int = 8,
                 preload: Sequence[str] = DEFAULT_PRELOAD, sandboxes: int | None = None,
                 add_special_tokens: bool = True):
        if max_calls < 0 or batch_size < 1 or timeout_s <= 0:
            raise ValueError(f"need max_calls >= 0, batch_size >= 1 and timeout_s > 0, got {max_calls}, "
                             f"{batch_size}, {timeout_s}")
        self.model, self.max_calls, self.timeout_s, self.batch_size = model, max_calls, timeout_s, batch_size
        tok = model.tokenizer
        self.eos = sorted(set(model.cfg.eos_token_id) | ({tok.eos_id} if tok.eos_id is not None else set()))
        self.gen = shared_generator(model, self.eos)
        self.preload = tuple(preload)
        self.add_special = add_special_tokens  # False for prompts rendered by a chat template (own BOS)
        self.sandboxes = min(sandboxes or batch_size, batch_size)  # concurrent sessions <= rows in a batch
        self._pool: InterpreterPool | None = None
        self.executions = 0

    def _session(self) -> Session:
        if self._pool is None:
            self._pool = InterpreterPool(workers=self.sandboxes, timeout_s=self.timeout_s, preload=self.preload)
        return self._pool.session(self.timeout_s)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def __enter__(self) -> "ToolGenerator":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _finish(self, row: _Row, out: dict, ids: list[int], reason: str) -> None:
        after_prompt = row.context[len(row.prompt_ids):] if row.calls else []
        out[row.index] = ToolGeneration(row.text, after_prompt + list(ids), row.calls, reason)
        if row.session is not None:
            row.session.close()
            row.session = None

    def _run_pending(self, rows: list[_Row]) -> None:
        """Execute each row's pending block in its own session, concurrently; append the outputs."""
        for r in rows:
            if r.session is None:
                r.session = self._session()
        with ThreadPoolExecutor(max(1, len(rows))) as ex:
            results = list(ex.map(lambda r: r.session.run(r.code), rows))
        tok = self.model.tokenizer
        for r, res in zip(rows, results):
            if not r.text.endswith("\n"):
                r.text += "\n"
            r.text += format_output(res)
            r.calls += 1
            r.code = None
            r.context = tok.encode(r.prompt + r.text, self.add_special)
        self.executions += len(rows)

    def generate(self, prompts: Sequence[str], sp: SamplingParams, seeds: Sequence[int]) -> list[ToolGeneration]:
        if len(seeds) != len(prompts):
            raise ValueError(f"got {len(prompts)} prompts but {len(seeds)} seeds")
        if min(len(prompts), self.batch_size) > self.sandboxes:  # each row in flight may hold a session
            raise ValueError(f"{min(len(prompts), self.batch_size)} rows in flight but only {self.sandboxes} sandboxes")
        tok, cfg = self.model.tokenizer, self.model.cfg
        stops = tuple(sp.stop) + (() if STOP in sp.stop else (STOP,))
        round_sp = replace(sp, stop=stops)
        limit = cfg.max_position_embeddings
        rows = []
        for i, p in enumerate(prompts):
            ids = tok.encode(p, self.add_special)
            if len(ids) + sp.max_new_tokens > limit:
                raise ValueError(f"prompt {i} has {len(ids)} tokens; with max_new_tokens={sp.max_new_tokens} "
                                 f"that exceeds the model's {limit} positions")
            rows.append(_Row(i, p, ids, context=list(ids)))
        queue, active, out = deque(rows), [], {}
        try:
            while queue or active:
                while queue and len(active) < self.batch_size:
                    active.append(queue.popleft())
                for r in [r for r in active if len(r.context) + sp.max_new_tokens > limit]:
                    self._finish(r, out, [], "length")  # no room for another round
                active = [r for r in active if r.index not in out]
                if not active:
                    continue
                contexts = [r.context for r in active]
                padded = contexts + [contexts[0]] * (self.batch_size - len(contexts))
                row_seeds = [round_seed(seeds[r.index], r.rounds) for r in active]
                row_seeds += [row_seeds[0]] * (self.batch_size - len(row_seeds))
                gens = self.gen.generate(padded, round_sp, row_seeds,
                                         prompt_len=bucket_length(max(len(c) for c in contexts)),
                                         decode_text=tok.decode)
                to_run = []
                for r, g in zip(active, gens):
                    r.rounds += 1
                    r.text += g.text
                    if g.finish_reason == "stop" and self._stopped_for_tool(g) and pending_code(r.text) is not None:
                        if r.calls >= self.max_calls:
                            self._finish(r, out, g.token_ids, "max_calls")
                        else:
                            r.code = pending_code(r.text)
                            to_run.append(r)
                    else:
                        self._finish(r, out, g.token_ids, g.finish_reason)
                if to_run:
                    self._run_pending(to_run)
                active = [r for r in active if r.index not in out]
        finally:
            for r in rows:
                if r.session is not None:
                    r.session.close()
        return [out[i] for i in range(len(prompts))]

    def _stopped_for_tool(self, g) -> bool:
        """Whether the stop string that cut this round's text was the tool STOP."""
        full = self.model.tokenizer.decode([t for t in g.token_ids if t not in self.eos])
        return full[len(g.text):].startswith(STOP)


def generate_with_tools(model: LoadedModel, prompts: list[str], sp: SamplingParams, seeds: list[int], *,
                        max_calls: int = 4, timeout_s: float = 5.0, batch_size: int = 8) -> list[ToolGeneration]:
    """Tool-integrated completions of `prompts` (one per prompt, seeded per row); see ToolGenerator."""
    with ToolGenerator(model, max_calls=max_calls, timeout_s=timeout_s, batch_size=batch_size,
                       sandboxes=max(1, len(prompts))) as tg:
        return tg.generate(prompts, sp, seeds)


def generate_file_with_tools(model: LoadedModel, prompts_path, output_path, sp: SamplingParams, *,
                             num_samples: int = 1, seed: int = 0, batch_size: int = 8, max_calls: int = 4,
                             timeout_s: float = 5.0):
    """`generate --tools python`: like batch_job.generate_file (same rows and seeds) plus `tool_calls`."""
    rows = [r for _, r in read_jsonl_numbered(prompts_path, {"prompt": str})]
    out = epath.Path(output_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    per_chunk = max(1, (4 * batch_size) // num_samples)  # prompts per call: rows are written as they finish
    start, new_tokens = time.time(), 0
    with ToolGenerator(model, max_calls=max_calls, timeout_s=timeout_s, batch_size=batch_size) as tg, \
            out.open("w") as f, tqdm(total=len(rows) * num_samples, desc="generate+tools", unit="completion",
                                     file=sys.stderr) as bar:
        for lo in range(0, len(rows), per_chunk):
            idx = range(lo, min(lo + per_chunk, len(rows)))
            work = [(i, j) for i in idx for j in range(num_samples)]
            gens = tg.generate([rows[i]["prompt"] for i, _ in work], sp, [row_seed(seed, i, j) for i, j in work])
            for n, i in enumerate(idx):
                gs = gens[n * num_samples:(n + 1) * num_samples]
                new_tokens += sum(len(g.token_ids) for g in gs)
                f.write(json.dumps(dict(rows[i], completions=[g.text for g in gs], token_ids=[g.token_ids for g in gs],
                                        finish_reasons=[g.finish_reason for g in gs],
                                        tool_calls=[g.calls for g in gs])) + "\n")
            f.flush()
            bar.update(len(work))
            bar.set_postfix(tok_s=f"{new_tokens / max(time.time() - start, 1e-9):.1f}", runs=tg.executions)
    return JobStats(len(rows), len(rows) * num_samples, new_tokens, time.time() - start)
