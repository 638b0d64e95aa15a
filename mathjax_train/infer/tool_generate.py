"""Tool-integrated generation (MARIO / ToRA style; the format is tools/tir.py) on the sampling engine.

Every row decodes on one Engine until it stops at the opening of an output block right after a
closed ```python block. The row keeps its KV pages (held on stop) while that code runs in the
row's own sandboxed Session (later blocks see earlier variables) in a worker thread; meanwhile the
engine keeps decoding the other rows. The real output block is then prefilled into the same pages
and the row resumes, up to `max_calls` runs.
"""

from __future__ import annotations

import math
import os
import threading
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence, cast

from mathjax_train.config import EngineConfig, InputError
from mathjax_train.infer.engine import Engine
from mathjax_train.infer.loading import LoadedModel
from mathjax_train.infer.params import Completion, SamplingParams
from mathjax_train.infer.rows import PAUSED, SeqState
from mathjax_train.tools.interpreter import DEFAULT_PRELOAD, ExecutionResult, InterpreterPool, Session
from mathjax_train.tools.tir import STOP, format_output, pending_code

FINISH_REASONS = ("eos", "length", "stop", "max_calls")
_ROUND_SEED_STEP = 0x9E3779B1
_ANCHOR = "\n"  # text tool output is tokenized after, so no word-boundary space is prepended to it


def round_seed(seed: int, round_index: int) -> int:
    """Round 0 uses the row's seed unchanged (so a row without calls matches plain sampling)."""
    return (seed + round_index * _ROUND_SEED_STEP) % (2**32)


@dataclass(eq=False)
class _Row:
    """One completion in flight: what it has produced so far and where it stands."""

    index: int
    prompt: str
    prompt_ids: list[int]
    seed: int
    seq: SeqState | None = None
    text: str = ""  # completion text incl. executed output blocks
    ids: list[int] = field(default_factory=list)  # the context after the prompt: kept samples + tool ids
    logprobs: list[float] = field(default_factory=list)  # aligned with `ids`; NaN for tool tokens
    calls: int = 0
    rounds: int = 0
    session: Session | None = None
    keep: int = 0  # tokens of the stopped round that stay in the pages
    rest: str = ""  # the stopped round's text past those tokens, tokenized with the tool output


class ToolGenerator:
    """One engine (`batch_size` slots; 0 = the engine's default) and a pool of warm sandboxes
    (started on the first code run). At most one row per slot is in flight (decoding, waiting for
    its sandbox or to resume), so the KV cache, sized for every slot at full length, holds them all.

    `engine_config` sets the engine's pages and chunk sizes (its num_slots is `batch_size` when that
    is set). `sandboxes` caps concurrent sessions; a row that needs one while all are taken waits
    for one (its pages held) while the other rows go on.
    """

    def __init__(
        self,
        model: LoadedModel,
        *,
        max_calls: int = 4,
        timeout_s: float = 5.0,
        batch_size: int = 8,
        preload: Sequence[str] = DEFAULT_PRELOAD,
        sandboxes: int | None = None,
        add_special_tokens: bool = True,
        engine_config: EngineConfig | None = None,
    ):
        if max_calls < 0 or batch_size < 0 or timeout_s <= 0 or (sandboxes is not None and sandboxes < 1):
            raise InputError(
                f"need max_calls >= 0, batch_size >= 0 (0 = the engine's default), timeout_s > 0 and "
                f"sandboxes >= 1, got {max_calls}, {batch_size}, {timeout_s}, {sandboxes}"
            )
        self.model, self.max_calls, self.timeout_s = model, max_calls, timeout_s
        cfg = replace(engine_config) if engine_config is not None else EngineConfig()
        if batch_size:
            cfg.num_slots = batch_size
        self.engine = Engine(model, cfg)
        self.batch_size = self.engine.num_slots
        self.tokenizer = model.tokenizer
        self._eos = set(self.engine.eos_ids)
        self.preload = tuple(preload)
        self.add_special = add_special_tokens  # False for prompts rendered by a chat template (own BOS)
        self.sandboxes = min(sandboxes or min(self.batch_size, max(8, os.cpu_count() or 1)), self.batch_size)
        self._anchor = self.tokenizer.encode(_ANCHOR, add_special_tokens=False)
        self._pool: InterpreterPool | None = None
        self._pool_lock = threading.Lock()
        # one thread per row in flight: a row holding a session never waits behind rows waiting for one
        self._threads = ThreadPoolExecutor(self.batch_size, thread_name_prefix="tool-run")
        self.executions = 0

    # ---- sandboxes
    def _session(self) -> Session:
        with self._pool_lock:
            if self._pool is None:
                self._pool = InterpreterPool(workers=self.sandboxes, timeout_s=self.timeout_s, preload=self.preload)
            pool = self._pool
        return pool.session(self.timeout_s)  # blocks (in a worker thread) until a sandbox is free

    def _execute(self, row: _Row, code: str) -> ExecutionResult:
        """Worker thread: run `code` in the row's session (opened on its first call)."""
        if row.session is None:
            row.session = self._session()
        return row.session.run(code)

    def close(self) -> None:
        self._threads.shutdown(wait=True)
        with self._pool_lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None

    def __enter__(self) -> "ToolGenerator":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- sizing and tokens
    def _decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode([t for t in ids if t not in self._eos])

    def _encode_piece(self, text: str) -> list[int]:
        """Ids of `text` as it continues a context: tokenized after a newline anchor that is then cut off,
        so tokenizers that prepend a word-boundary space to a text's start (SentencePiece) do not."""
        both = self.tokenizer.encode(_ANCHOR + text, add_special_tokens=False)
        n = len(self._anchor)
        if len(both) > n and both[:n] == self._anchor:
            return both[n:]
        return self.tokenizer.encode(text, add_special_tokens=False)

    def _kept(self, c: Completion) -> tuple[int, str]:
        """The longest prefix of a stopped round's ids whose text does not go past the text before the
        stop, and that text: the pages keep exactly the context the model saw."""
        for k in range(len(c.token_ids), 0, -1):
            t = self._decode(c.token_ids[:k])
            if c.text.startswith(t):
                return k, t
        return 0, ""

    def _stopped_for_tool(self, c: Completion) -> bool:
        """Whether the stop string that cut this round's text was the tool STOP (not a caller's)."""
        return self._decode(c.token_ids).startswith(STOP, len(c.text))

    # ---- the loop
    def generate(
        self,
        prompts: Sequence[str],
        sp: SamplingParams,
        seeds: Sequence[int],
        *,
        on_result: Callable[[int, Completion], None] | None = None,
    ) -> list[Completion]:
        """One completion per prompt (`tool_calls` set; finish_reason eos | length | stop | max_calls).

        `token_ids`: every id after the prompt that the context held (kept samples, tool-output ids, the
        last round's samples; after a final "length", that call's output ids too), so they tokenize
        `text`; `logprobs` is aligned with them, NaN for tool-output ids. `on_result(i, completion)` is
        called as each row finishes.
        """
        if len(seeds) != len(prompts):
            raise ValueError(f"got {len(prompts)} prompts but {len(seeds)} seeds")
        round_sp = replace(sp, stop=tuple(sp.stop) + (() if STOP in sp.stop else (STOP,)))
        rows = []
        for i, p in enumerate(prompts):
            ids = self.tokenizer.encode(p, self.add_special)
            if not ids:
                raise InputError(f"prompt {i} has no tokens")
            problem = self.engine.fits(len(ids), sp.max_tokens)
            if problem:
                raise InputError(f"prompt {i} has {len(ids)} tokens; {problem}")
            rows.append(_Row(i, p, ids, int(seeds[i])))
        results: list[Completion | None] = [None] * len(rows)
        run = _Run(self, round_sp, results, on_result)
        try:
            run.loop(deque(rows))
        except BaseException:
            run.abandon()
            raise
        return cast(list[Completion], results)  # loop() returns once every row has its completion


class _Run:
    """The state of one `generate` call: rows in flight, rounds ended by the engine, sandbox futures."""

    def __init__(self, tg: ToolGenerator, sp: SamplingParams, results: list, on_result):
        self.tg, self.eng, self.sp, self.results, self.on_result = tg, tg.engine, sp, results, on_result
        self.live: dict[int, _Row] = {}  # by engine row id
        self.ended: list[tuple[SeqState, Completion]] = []  # filled by the engine's callbacks inside step()
        self.futures: dict[Future, _Row] = {}

    def _on_finish(self, seq: SeqState, c: Completion) -> None:
        self.ended.append((seq, c))

    def loop(self, queue: deque[_Row]) -> None:
        while queue or self.live:
            self._admit(queue)
            if self.eng.busy:
                self.eng.step()
            elif self.futures:  # only sandboxes are working: wait for one instead of spinning
                wait(list(self.futures), return_when=FIRST_COMPLETED)
            elif not self.ended:
                raise RuntimeError(f"{len(self.live)} rows in flight but the engine is idle and no code runs")
            ended, self.ended = self.ended, []
            for seq, c in ended:
                self._end_round(self.live[seq.id], c)
            for f in [f for f in self.futures if f.done()]:
                self._resume(self.futures.pop(f), f.result())

    def _admit(self, queue: deque[_Row]) -> None:
        """Submit rows while slots are free; consecutive rows of one prompt share its prefill."""
        while queue and len(self.live) < self.tg.batch_size:
            group = [queue.popleft()]
            while queue and len(self.live) + len(group) < self.tg.batch_size and queue[0].prompt == group[0].prompt:
                group.append(queue.popleft())
            seqs = self.eng.submit(
                group[0].prompt_ids, self.sp, [r.seed for r in group], hold_on_stop=True, on_finish=self._on_finish
            )
            for r, s in zip(group, seqs):
                r.seq = s
                self.live[s.id] = r

    def _end_round(self, r: _Row, c: Completion) -> None:
        r.rounds += 1
        r.text += c.text
        code = pending_code(r.text) if c.finish_reason == "stop" and self.tg._stopped_for_tool(c) else None
        if code is None or r.calls >= self.tg.max_calls:
            self._finish(r, c.token_ids, c.logprobs, "max_calls" if code is not None else c.finish_reason)
            return
        r.keep, kept_text = self.tg._kept(c)
        r.ids += c.token_ids[: r.keep]
        r.logprobs += c.logprobs[: r.keep]
        r.rest = c.text[len(kept_text) :]
        self.futures[self.tg._threads.submit(self.tg._execute, r, code)] = r

    def _resume(self, r: _Row, result: ExecutionResult) -> None:
        """Append the output block to the row's pages and start its next round (or end it: no room)."""
        r.calls += 1
        self.tg.executions += 1
        block = ("" if r.text.endswith("\n") else "\n") + format_output(result)
        r.text += block
        appended = self.tg._encode_piece(r.rest + block)
        if self.tg.engine.fits(len(r.prompt_ids) + len(r.ids) + len(appended), self.sp.max_tokens):
            self._finish(r, appended, [math.nan] * len(appended), "length")
            return
        assert r.seq is not None  # rows in flight are admitted
        self.eng.extend(r.seq, r.keep, appended, self.sp, round_seed(r.seed, r.rounds))
        r.ids += appended
        r.logprobs += [math.nan] * len(appended)

    def _finish(self, r: _Row, ids: list[int], logprobs: list[float], reason: str) -> None:
        assert r.seq is not None  # rows in flight are admitted
        if r.seq.state == PAUSED:
            self.eng.release(r.seq)
        if r.session is not None:
            r.session.close()
            r.session = None
        del self.live[r.seq.id]
        c = Completion(r.ids + list(ids), r.text, reason, r.logprobs + list(logprobs), r.calls)
        self.results[r.index] = c
        if self.on_result:
            self.on_result(r.index, c)

    def abandon(self) -> None:
        """After an error: let running code end, free every page and session, leave the engine idle."""
        wait(list(self.futures))
        for r in self.live.values():
            assert r.seq is not None  # rows in `live` are admitted
            if r.seq.state == PAUSED:
                self.eng.release(r.seq)
            elif r.seq.state != "finished":
                self.eng.cancel(r.seq)
            if r.session is not None:
                r.session.close()
                r.session = None
        try:
            while self.eng.busy:
                self.eng.step()
        finally:
            self.live.clear()


def generate_with_tools(
    model: LoadedModel,
    prompts: list[str],
    sp: SamplingParams,
    seeds: list[int],
    *,
    max_calls: int = 4,
    timeout_s: float = 5.0,
    batch_size: int = 8,
) -> list[Completion]:
    """Tool-integrated completions of `prompts` (one per prompt, seeded per row); see ToolGenerator."""
    with ToolGenerator(
        model, max_calls=max_calls, timeout_s=timeout_s, batch_size=batch_size, sandboxes=max(1, len(prompts))
    ) as tg:
        return tg.generate(prompts, sp, seeds)
