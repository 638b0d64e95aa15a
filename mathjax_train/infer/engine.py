"""THE sampling engine: continuous batching over a paged KV cache, shared prompts, chunked prefill.

A sequence waits, is prefilled (its tokens but the last, in chunks of at most `prefill_budget`
tokens while other rows decode), then decodes in a slot: each `step()` runs one compiled chunk of
`decode_steps` tokens for all running rows and admits waiting ones as slots free up. The n samples
of one prompt prefill it once: each sample shares its full pages and copies the partial last one.
A row's tokens depend only on its prompt, settings and seed, never on what runs beside it. When
pages run out, the youngest running row is preempted (its pages freed) and later recomputed from
its prompt and the tokens it already has, so it finishes exactly as it would have.

With `isolate_rows` (a server), an exception raised by one row's own work in a step (its settings
into the batch, its stop check, its callbacks) finishes that row alone with reason "error" and the
exception in `row.error`; without it (batch jobs), the exception ends the step as before.

Single-threaded: `submit`/`cancel` may be called from any thread, `step` from one.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Sequence

import jax
import numpy as np

from mathjax_train.config import EngineConfig, InputError
from mathjax_train.infer.loading import LoadedModel
from mathjax_train.infer.exact import ExactRows
from mathjax_train.infer.layout import decode_config, decode_params, unroll_by_default
from mathjax_train.infer.pages import PagePool
from mathjax_train.infer.placement import Placement, engine_placement
from mathjax_train.infer.prefix_cache import PrefixCache
from mathjax_train.infer.params import Completion, SamplingParams
from mathjax_train.infer.programs import Programs, page_bucket, row_bucket, row_buckets
from mathjax_train.infer.sizing import engine_slots, kv_fit
from mathjax_train.infer.paged_kernels import cache_page_bytes, empty_cache, paged_kernel

WAITING, RUNNING, PAUSED, FINISHED = "waiting", "running", "paused", "finished"
SMALL_BATCH = 8  # rows at or below which decode chunks adapt to stops and waiting rows (_chunk_limits)


@dataclass
class EngineStats:
    prompt_prefills: int = 0  # prompts (or preempted / resumed sequences) whose prefill completed
    prefill_calls: int = 0
    prefill_tokens: int = 0
    decode_chunks: int = 0
    decode_rows: int = 0  # rows summed over decode chunks (/ decode_chunks: how many rows a chunk shares)
    generated_tokens: int = 0
    preemptions: int = 0
    finished: int = 0
    cache_losses: int = 0  # programs that failed after taking the cache (it was rebuilt; rows recompute)
    prefix_hit_tokens: int = 0  # prompt tokens whose pages came from the prefix cache, not a prefill

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(eq=False)
class _Prompt:
    """A prompt prefilled once for the samples that share it."""

    tokens: list[int]
    waiting: int  # samples not yet forked off
    pages: list[int] = field(default_factory=list)
    cached: int = 0


@dataclass(eq=False)
class SeqState:
    """One row: its tokens, pages and progress. `tokens` = context (prompt, earlier rounds) + this round."""

    id: int
    tokens: list[int]
    params: SamplingParams
    seed: int
    round_start: int  # index in `tokens` where this round's sampled tokens begin
    shared: _Prompt | None = None
    pages: list[int] = field(default_factory=list)
    cached: int = 0  # tokens whose KV is in `pages`
    state: str = WAITING
    logprobs: list[float] = field(default_factory=list)
    hold_on_stop: bool = False
    on_tokens: Callable[["SeqState", list[int]], None] | None = None
    on_finish: Callable[["SeqState", Completion], None] | None = None
    completion: Completion | None = None
    admitted_at: int = 0
    error: BaseException | None = None  # why the row finished with reason "error" (isolate_rows)
    epoch: int = 0  # the engine's cache epoch its held pages belong to (see Engine._lose_cache)

    @property
    def generated(self) -> list[int]:
        return self.tokens[self.round_start :]

    def result(self) -> Completion:
        """The completion of a row that has finished (or is held after a stop)."""
        if self.completion is None:
            raise RuntimeError(f"row {self.id} has not finished")
        return self.completion


class Engine:
    def __init__(
        self,
        model: LoadedModel,
        config: EngineConfig | None = None,
        *,
        max_seq_len: int = 0,
        isolate_rows: bool = False,
        exact: bool = False,
    ):
        """`exact`: decode each row alone through infer/exact.py's program (rl.exact_logprobs), whose numbers the
        learner reproduces bit for bit; slow (every token recomputes its row), for parity, not throughput."""
        self.model, self.cfg = model, config or EngineConfig()
        self.isolate_rows = isolate_rows
        self.cfg.validate()
        mc = model.cfg
        self.tokenizer = model.tokenizer
        self.eos_ids = model.eos_ids
        self._eos = set(self.eos_ids)
        self.max_seq_len = min(max_seq_len or mc.max_position_embeddings, mc.max_position_embeddings)
        self.page_size = self.cfg.page_size
        self.max_pages_per_seq = math.ceil(self.max_seq_len / self.page_size)
        self.num_slots = engine_slots(self.cfg.num_slots, jax.default_backend())
        self.exact = ExactRows(mc, self.max_seq_len - 1) if exact else None  # a row's last token is never input
        # this host's devices (engine.tensor): params split by the mesh rules, the cache by kv heads
        self.placement = engine_placement(self.cfg.tensor, mc)
        self.kernel = paged_kernel(self.cfg.attention, mc, self.page_size, self.placement.tensor)
        placed = self.placement.place_params(model.params, mc)
        if placed is not model.params:  # in place: the engine reads model.params at every call
            model.params = placed
        self.num_pages = self.cfg.num_pages or self._pages_from_memory()
        self._fresh_cache()
        self._params_version = model.params_version
        self.unroll = unroll_by_default(self.cfg.layers, jax.default_backend())
        self.programs = Programs.of(
            decode_config(mc, self.unroll), self.eos_ids, self.cfg.decode_steps, self.kernel, self.placement
        )
        self._prepared: tuple[int, dict] | None = None  # (params version, the params laid out for decoding)
        self.stats = EngineStats()
        self.shapes: set[tuple] = set()  # program shapes this engine ran (each compiled once per model)
        self.waiting: deque[SeqState] = deque()
        self.running: list[SeqState] = []
        self._inbox: list[SeqState] = []
        self._cancels: list[SeqState] = []
        self._lock = threading.Lock()
        self._ids = 0
        self._admissions = 0
        self._epoch = 0

    # ---- sizing
    def _pages_from_memory(self) -> int:
        """engine.kv_memory_fraction of the least free memory among the engine's devices (infer/sizing.py)."""
        t = self.placement.tensor
        fit = kv_fit(
            cache_page_bytes(self.kernel, self.model.cfg, self.page_size) // t,
            _free_memory_bytes(self.placement) or None,
            self.cfg.kv_memory_fraction,
            self.num_slots,
            self.max_pages_per_seq,
        )
        problem = fit.problem(
            self.max_seq_len, "lower the sequence length, set engine.num_pages or raise engine.tensor"
        )
        if problem:
            raise InputError(problem)
        return fit.pages

    def _fresh_cache(self) -> None:
        """An empty cache with its page pool and prefix cache (at start-up, and after a lost cache)."""
        self.pool = PagePool(self.num_pages)
        self.prefix = PrefixCache(self.pool, self.page_size) if self.cfg.prefix_cache else None
        self.cache = empty_cache(self.kernel, self.model.cfg, self.num_pages, self.page_size, self.placement)

    def compile_ahead(self) -> int:
        """Compile the programs a run can need (a decode chunk for every row bucket up to num_slots, a
        prefill chunk for every token bucket up to prefill_budget, the page copy) by running them on the
        trash page, so that a server's first clients do not wait for compilations. Call it before any
        row runs. Returns how many programs it ran."""
        params, ran = self.program_params(), 0
        width = self._width(self.max_pages_per_seq)
        tokens = 16
        while True:
            n = min(tokens, self.cfg.prefill_budget)
            self.cache = self.programs.prefill(params, self.cache, np.zeros(n, np.int32), 0, np.zeros(width, np.int32))
            ran += 1
            if n >= self.cfg.prefill_budget:
                break
            tokens *= 2
        for s in row_buckets(self.num_slots):
            batch = self._batch([], s, np.zeros((s, width), np.int32))
            self.cache, _ = self.programs.decode(params, self.cache, batch[0], batch[1])
            ran += 1
        self.cache = self.programs.copy_pages(self.cache, [(0, 0)])
        return ran + 1

    # ---- submitting work (any thread)
    def submit(
        self,
        prompt_ids: Sequence[int],
        params: SamplingParams,
        seeds: Sequence[int],
        *,
        hold_on_stop: bool = False,
        on_tokens=None,
        on_finish=None,
    ) -> list[SeqState]:
        """One row per seed, all from `prompt_ids` (prefilled once for all of them)."""
        prompt = [int(t) for t in prompt_ids]
        if not prompt:
            raise InputError("a prompt has no tokens")
        vocab = self.model.cfg.vocab_size
        if not 0 <= min(prompt) <= max(prompt) < vocab:
            bad = next(t for t in prompt if not 0 <= t < vocab)
            raise InputError(f"a prompt holds token id {bad}, outside the vocabulary [0, {vocab})")
        if not seeds:
            raise ValueError("submit needs at least one seed")
        self._check_fits(len(prompt), params.max_tokens)
        shared = _Prompt(prompt, len(seeds)) if len(seeds) > 1 else None
        rows = []
        with self._lock:
            for s in seeds:
                self._ids += 1
                rows.append(
                    SeqState(
                        self._ids,
                        list(prompt),
                        params,
                        int(s) % 2**32,
                        len(prompt),
                        shared,
                        hold_on_stop=hold_on_stop,
                        on_tokens=on_tokens,
                        on_finish=on_finish,
                    )
                )
            self._inbox.extend(rows)
        return rows

    def fits(self, context: int, max_tokens: int) -> str | None:
        """Why `max_tokens` more tokens after `context` do not fit a row of this engine (None if they do)."""
        total = context + max_tokens
        if total > self.max_seq_len:
            return (
                f"with max_tokens={max_tokens} that exceeds the engine's {self.max_seq_len}-token sequence "
                f"limit (model max_position_embeddings {self.model.cfg.max_position_embeddings})"
            )
        if math.ceil(total / self.page_size) > self.pool.usable:
            return (
                f"with max_tokens={max_tokens} that needs more than the KV cache's {self.pool.usable} pages "
                f"of {self.page_size} tokens; raise engine.num_pages"
            )
        return None

    def _check_fits(self, context: int, max_tokens: int) -> None:
        problem = self.fits(context, max_tokens)
        if problem:
            raise InputError(f"a prompt of {context} tokens: {problem}")

    def cancel(self, row: SeqState) -> None:
        """Stop a row (e.g. its client went away); it finishes as `aborted` at the next step."""
        with self._lock:
            self._cancels.append(row)

    def extend(self, row: SeqState, keep: int, tokens: Sequence[int], params: SamplingParams, seed: int) -> None:
        """Resume a row held after a stop string: keep the first `keep` tokens of its last round, append
        `tokens` (e.g. a tool's output) as a prefill chunk into the pages it kept, and sample a new round."""
        if row.state != PAUSED:
            raise RuntimeError(f"row {row.id} is {row.state}, not paused")
        if not tokens:
            raise ValueError("extend needs at least one token to append")
        del row.tokens[row.round_start + keep :]
        row.tokens.extend(int(t) for t in tokens)
        self._check_fits(len(row.tokens), params.max_tokens)
        if row.epoch != self._epoch:  # its pages went with a lost cache: recomputed from its tokens
            row.pages, row.cached = [], 0
        row.cached = min(row.cached, len(row.tokens) - len(tokens))
        row.round_start, row.params, row.seed = len(row.tokens), params, int(seed) % 2**32
        row.logprobs, row.completion, row.state = [], None, WAITING
        with self._lock:
            self._inbox.append(row)

    def release(self, row: SeqState) -> None:
        """Free the pages of a held row that will not be resumed."""
        if row.state == PAUSED:
            if row.epoch == self._epoch:
                self.pool.release(row.pages)
            row.pages, row.state = [], FINISHED

    # ---- running
    @property
    def busy(self) -> bool:
        with self._lock:
            pending = bool(self._inbox or self._cancels)
        return pending or bool(self.waiting or self.running)

    def step(self) -> None:
        """Admit and prefill what fits, then decode one chunk for every running row."""
        if self.model.params_version != self._params_version:  # cached pages hold the old model's keys
            self._params_version = self.model.params_version
            self.clear_prefix_cache()
        self._drain()
        self._prefill_and_admit()
        if self.running:
            self._decode_chunk()

    def run(self, rows: Sequence[SeqState] = (), progress: Callable[[], None] | None = None) -> list[Completion]:
        """Step until idle; return the completions of `rows`."""
        while self.busy:
            self.step()
            if progress:
                progress()
        return [r.result() for r in rows]

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        params: SamplingParams | Sequence[SamplingParams],
        seeds: Sequence[Sequence[int]],
        progress: Callable[[], None] | None = None,
    ) -> list[list[Completion]]:
        """Completions for each prompt, one per seed of that prompt."""
        if isinstance(params, SamplingParams):
            params = [params] * len(prompts)
        groups = [self.submit(p, sp, s) for p, sp, s in zip(prompts, params, seeds)]
        self.run(progress=progress)
        return [[r.result() for r in g] for g in groups]

    def pages_held_by_rows(self) -> int:
        """Pages in use by rows (running, waiting with a partial prefill, or held after a stop): neither
        free nor kept only by the prefix cache. 0 when the engine is idle and no row is held."""
        cached_only = self.prefix.cached_only() if self.prefix is not None else 0
        return self.pool.usable - self.pool.free - cached_only

    def program_params(self) -> dict:
        """The model's current parameters as the programs take them (infer/layout.py), remade when they change."""
        version = self.model.params_version
        if self._prepared is None or self._prepared[0] != version:
            self._prepared = None  # the old arrays go before the new ones are made
            self._prepared = (version, decode_params(self.model.params, self.model.cfg, self.unroll))
        return self._prepared[1]

    def _program(self, program, *args, **kwargs):
        """Run a compiled program. The cache is donated to it, so one that fails midway may leave no
        cache behind; then the engine starts a fresh one (`_lose_cache`) before the error goes on."""
        try:
            return program(*args, **kwargs)
        except Exception:
            if any(x.is_deleted() for x in jax.tree.leaves(self.cache)):
                self._lose_cache()
            raise

    def _lose_cache(self) -> None:
        """Every page's contents are gone: a fresh cache, pool and prefix cache. Running and waiting rows
        go back to waiting, to be recomputed from their tokens as after a preemption; held rows are when
        resumed (their epoch is older)."""
        self._epoch += 1
        self.stats.cache_losses += 1
        self._fresh_cache()
        for row in self.running:
            row.state = WAITING
        self.waiting.extendleft(reversed(self.running))
        self.running = []
        for row in self.waiting:
            row.pages, row.cached = [], 0
            if row.shared is not None:
                row.shared.pages, row.shared.cached = [], 0

    def clear_prefix_cache(self) -> None:
        """Give back every page the prefix cache holds (pages rows still use stay theirs)."""
        if self.prefix is not None:
            self.prefix.clear()

    def _drain(self) -> None:
        with self._lock:
            new, self._inbox = self._inbox, []
            cancels, self._cancels = self._cancels, []
        self.waiting.extend(new)
        for row in cancels:
            if row.state in (WAITING, RUNNING, PAUSED):
                self._finish(row, "aborted")

    def _growth(self, steps: int) -> int:
        """Pages the running rows need for their next `steps` tokens."""
        need = 0
        for r in self.running:
            room = r.params.max_tokens - len(r.generated)
            need += max(0, math.ceil((r.cached + min(steps, room)) / self.page_size) - len(r.pages))
        return need

    def _prefill_and_admit(self) -> None:
        budget = self.cfg.prefill_budget if self.running else None  # idle: prefill as much as the slots take
        headroom = self._growth(self.cfg.decode_steps)
        while self.waiting and len(self.running) < self.num_slots:
            row = self.waiting[0]
            target = row.shared if row.shared is not None else row
            if self.prefix is not None and not target.pages:
                target.pages = self.prefix.lookup(target.tokens, len(target.tokens) - 1)
                target.cached = len(target.pages) * self.page_size
                self.stats.prefix_hit_tokens += target.cached
            needed = len(target.tokens) - 1 - target.cached
            while needed > 0:
                if budget is not None and budget <= 0:
                    return
                n = min(needed, self.cfg.prefill_budget, budget or needed)
                if not self._reserve(target, target.cached + n, headroom):
                    return
                self._prefill(target, n)
                needed -= n
                if budget is not None:
                    budget -= n
            if target is not row and not self._fork(row):
                return
            self.waiting.popleft()
            row.state = RUNNING
            row.admitted_at = self._admissions
            self._admissions += 1
            self.running.append(row)

    def _prefill(self, target, n: int) -> None:
        start = target.cached
        table = self._table(target.pages, self._width(math.ceil((start + n) / self.page_size)))
        self.cache = self._program(
            self.programs.prefill,
            self.program_params(),
            self.cache,
            np.asarray(target.tokens[start : start + n], np.int32),
            start,
            table,
            record=self.shapes,
        )
        target.cached += n
        if self.prefix is not None:
            self.prefix.insert(target.tokens, target.pages, target.cached)
        self.stats.prefill_calls += 1
        self.stats.prefill_tokens += n
        self.stats.prompt_prefills += target.cached == len(target.tokens) - 1

    def _fork(self, row: SeqState) -> bool:
        """Give a sample of a shared prompt its pages: the full ones shared, the partial one copied.
        False when no page is free for the copy (the row waits)."""
        p = row.shared
        assert p is not None, "only a row of a shared prompt is forked"
        full, partial = divmod(p.cached, self.page_size)
        copy = partial and p.waiting > 1
        if copy and not self._reserve_free(1, protect=p):
            return False
        row.pages = list(p.pages[:full])
        self.pool.share(row.pages)
        p.waiting -= 1
        if copy:
            own = self.pool.allocate(1)
            self.cache = self._program(self.programs.copy_pages, self.cache, [(p.pages[full], own[0])])
            row.pages += own
        elif partial:  # the last sample takes the prompt's own partial page
            row.pages.append(p.pages[full])
            p.pages = p.pages[:full]
        if p.waiting == 0:
            self.pool.release(p.pages)
            p.pages = []
        row.cached, row.shared = p.cached, None
        return True

    def _reserve_free(self, n: int, protect=None) -> bool:
        """Make n pages free for admission: reclaim what waiting rows hold (newest first), never
        preempt a running row. With nothing running and still short, the pool is too small."""
        self._reclaim_waiting(n, protect)
        if self.pool.free >= n:
            return True
        if not self.running:
            raise RuntimeError(
                f"the KV cache's {self.pool.usable} pages are all held by rows waiting to resume; "
                "raise engine.num_pages or lower engine.num_slots"
            )
        return False

    def _reclaim_waiting(self, n: int, protect=None) -> None:
        """Drop the partial prefills of waiting rows (and shared prompts), from the back of the queue,
        until n pages are free; they are recomputed when their turn comes. Pages only the prefix cache
        holds go first."""
        if self.prefix is not None and self.pool.free < n:
            self.prefix.evict(n - self.pool.free)
        for row in reversed(self.waiting):
            if self.pool.free >= n:
                return
            target = row.shared if row.shared is not None else row
            if target is protect or not target.pages:
                continue
            self.pool.release(target.pages)
            target.pages, target.cached = [], 0

    def _reserve(self, target, tokens: int, headroom: int = 0) -> bool:
        """Give `target` pages for `tokens` tokens if the pool has (or can reclaim) them and `headroom`
        more (what running rows will need next, so that admitting a row does not preempt one)."""
        missing = math.ceil(tokens / self.page_size) - len(target.pages)
        if missing <= 0:
            return True
        if not self._reserve_free(missing + headroom, protect=target):
            return False
        target.pages += self.pool.allocate(missing)
        return True

    def _preempt(self, victim: SeqState) -> None:
        """Free a running row's pages; it waits at the front to be recomputed from its tokens."""
        self.running.remove(victim)
        self.pool.release(victim.pages)
        victim.pages, victim.cached, victim.state = [], 0, WAITING
        self.waiting.appendleft(victim)
        self.stats.preemptions += 1

    def _grow_for_chunk(self, steps: int) -> None:
        """Pages for the next chunk of `steps`, oldest rows first: reclaimed from waiting rows, else taken
        by preempting the youngest running rows (possibly the row itself)."""
        for row in sorted(self.running, key=lambda r: r.admitted_at):
            if row.state != RUNNING:
                continue
            room = row.params.max_tokens - len(row.generated)
            missing = math.ceil((row.cached + min(steps, room)) / self.page_size) - len(row.pages)
            if missing > 0:
                self._reclaim_waiting(missing)
            while missing > 0 and self.pool.free < missing:
                younger = [r for r in self.running if r.admitted_at > row.admitted_at]
                victim = max(younger, key=lambda r: r.admitted_at) if younger else row
                self._preempt(victim)
                if victim is row:
                    break
                self._reclaim_waiting(missing)  # pages the victim shared may now be the prefix cache's alone
            if row.state == RUNNING and missing > 0:
                row.pages += self.pool.allocate(missing)

    def _width(self, pages: int) -> int:
        """Page-table columns of a call: the XLA path reads (and pays for) every column, so they come
        in buckets; the CPU kernel reads only a row's own pages, so one width serves every call."""
        if self.kernel == "cpu":
            return self.max_pages_per_seq
        return page_bucket(pages, self.max_pages_per_seq)

    def _table(self, pages: list[int], width: int) -> np.ndarray:
        table = np.zeros(width, np.int32)
        table[: min(len(pages), width)] = pages[:width]
        return table

    def _chunk_limits(self) -> tuple[int, bool]:
        """How long the next chunk may run. Stop strings are checked, and waiting rows admitted, between
        chunks; a row that has met its stop string, or a slot a waiting row could take, idles until the
        chunk ends. In a small batch (at most SMALL_BATCH rows: a server's few clients, a job's tail) that
        idle row is a large share of the work and a chunk boundary is cheap, so chunks there are a
        quarter of engine.decode_steps when a row has stop strings or rows wait, and with rows waiting
        a chunk also ends as soon as any row ends."""
        if len(self.running) > SMALL_BATCH:
            return self.cfg.decode_steps, False
        with self._lock:
            pending = bool(self._inbox)
        pending = pending or bool(self.waiting)
        short = pending or any(r.params.stop for r in self.running)
        return (max(1, self.cfg.decode_steps // 4) if short else self.cfg.decode_steps), pending

    def _decode_chunk(self) -> None:
        steps, exit_on_end = self._chunk_limits()
        self._grow_for_chunk(steps)
        rows = list(self.running)
        if not rows:
            return
        if self.exact is not None:
            for r in rows:
                self._guarded(r, self._decode_exact, r, steps)
            return
        s = row_bucket(len(rows), self.num_slots)
        width = self._width(max(math.ceil((r.cached + steps) / self.page_size) for r in rows))
        errors: dict[int, Exception] = {}
        batch, table = self._batch(rows, s, np.zeros((s, width), np.int32), errors)
        for i, e in errors.items():  # rows whose settings the batch cannot hold (isolate_rows): their slots idle
            self._fail_row(rows[i], e)
        if len(errors) == len(rows):
            return
        self.cache, out = self._program(
            self.programs.decode,
            self.program_params(),
            self.cache,
            batch,
            table,
            record=self.shapes,
            steps=steps,
            exit_on_end=exit_on_end,
        )
        self.stats.decode_chunks += 1
        self.stats.decode_rows += len(rows) - len(errors)
        for i, r in enumerate(rows):
            if i in errors:
                continue
            got = out["tokens"][i]
            n = int(np.sum(got >= 0))
            self._take_tokens(r, [int(t) for t in got[:n]], [float(x) for x in out["logprobs"][i, :n]])

    def _take_tokens(self, r: SeqState, new: list[int], logprobs: list[float]) -> None:
        """Append a decode chunk's tokens (and their log-probabilities) to row `r`, then its stop checks."""
        r.tokens += new
        r.logprobs += logprobs
        r.cached += len(new)  # the pages the chunk reserved hold them
        self.stats.generated_tokens += len(new)
        self._guarded(r, self._after_tokens, r, new)

    def _decode_exact(self, r: SeqState, steps: int) -> None:
        """Up to `steps` tokens of one row through the exact program, ending where the decode chunk would."""
        assert self.exact is not None
        sp = r.params
        new: list[int] = []
        logprobs: list[float] = []
        for _ in range(steps):
            step = len(r.generated) + len(new)
            tok, lp = self.exact.next_token(self.model.params, r.tokens + new, r.seed, step, sp)
            new.append(tok)
            logprobs.append(lp)
            if (tok in self._eos and not sp.ignore_eos) or step + 1 >= sp.max_tokens:
                break
        self.stats.decode_chunks += 1
        self.stats.decode_rows += 1
        self._take_tokens(r, new, logprobs)

    def _batch(
        self, rows: list[SeqState], s: int, table: np.ndarray, errors: dict[int, Exception] | None = None
    ) -> tuple[dict, np.ndarray]:
        """A decode chunk's inputs for `rows` in `s` slots (the rest inactive) and their page table. With
        isolate_rows, a row whose settings do not fit the arrays leaves its slot inactive, its error in `errors`."""
        batch = {
            "last": np.zeros(s, np.int32),
            "length": np.zeros(s, np.int32),
            "active": np.zeros(s, bool),
            "step": np.zeros(s, np.int32),
            "max_step": np.ones(s, np.int32),
            "seed": np.zeros(s, np.uint32),
            "temperature": np.zeros(s, np.float32),
            "top_p": np.ones(s, np.float32),
            "top_k": np.zeros(s, np.int32),
            "ignore_eos": np.zeros(s, bool),
        }
        for i, r in enumerate(rows):
            try:
                self._fill_slot(batch, table, i, r)
            except Exception as e:
                if not self.isolate_rows or errors is None:
                    raise
                for name, v in batch.items():  # the slot stays inactive
                    v[i] = 1 if name == "max_step" else 0
                table[i] = 0
                errors[i] = e
        return batch, table

    def _fill_slot(self, batch: dict, table: np.ndarray, i: int, r: SeqState) -> None:
        sp = r.params
        # a row with no token yet in its round feeds its context's last token, whose KV is not cached
        batch["last"][i], batch["length"][i], batch["active"][i] = r.tokens[-1], r.cached, True
        batch["step"][i], batch["max_step"][i], batch["seed"][i] = len(r.generated), sp.max_tokens, r.seed
        batch["temperature"][i], batch["top_p"][i], batch["top_k"][i] = sp.temperature, sp.top_p, sp.top_k
        batch["ignore_eos"][i] = sp.ignore_eos
        table[i] = self._table(r.pages, table.shape[1])

    def _guarded(self, row: SeqState, fn, *args) -> None:
        """fn(*args), work of `row` alone: with isolate_rows, an exception finishes that row as "error"."""
        if not self.isolate_rows:
            fn(*args)
            return
        try:
            fn(*args)
        except Exception as e:  # noqa: BLE001 (one row's fault must not end its batch-mates)
            if row.state in (WAITING, RUNNING):
                self._fail_row(row, e)

    def _fail_row(self, row: SeqState, error: Exception) -> None:
        row.error = error
        self._finish(row, "error", "")

    def _after_tokens(self, row: SeqState, new: list[int]) -> None:
        gen = row.generated
        if row.params.stop and self._stop_in_tail(gen, len(gen) - len(new), row.params.stop):
            text = self._text(gen)
            hits = [text.find(s) for s in row.params.stop if s in text]
            if hits:
                cut = min(hits)
                keep = self._tokens_reaching(gen, len(gen) - len(new), row.params.stop)
                dropped = len(gen) - keep
                if dropped:
                    del row.tokens[len(row.tokens) - dropped :]
                    del row.logprobs[keep:]
                    row.cached = len(row.tokens) - 1
                    new = new[: max(0, len(new) - dropped)]
                if row.on_tokens and new:
                    row.on_tokens(row, new)
                self._finish(row, "stop", text[:cut])
                return
        if row.on_tokens and new:
            row.on_tokens(row, new)
        if gen and gen[-1] in self._eos and not row.params.ignore_eos:
            self._finish(row, "eos")
        elif len(gen) >= row.params.max_tokens:
            self._finish(row, "length")

    def _stop_in_tail(self, gen: list[int], checked: int, stops: tuple[str, ...]) -> bool:
        """Whether a stop string may end in gen[checked:]: the first `checked` tokens hold none, so one that
        ends later starts at most len(stop) characters earlier, within 4 tokens a character (a character
        may take up to 4 byte-level tokens) plus a margin. Decoding that tail, not the whole round, keeps
        each chunk's check short."""
        back = 4 * max(map(len, stops)) + 8
        tail = self._text(gen[max(0, checked - back) :])
        return any(s in tail for s in stops)

    def _tokens_reaching(self, gen: list[int], checked: int, stops: tuple[str, ...]) -> int:
        """The fewest leading tokens whose text contains a stop string; the first `checked` tokens
        were checked after the previous chunk and contain none, so the search starts after them."""
        for k in range(checked + 1, len(gen) + 1):
            t = self._text(gen[:k])
            if any(s in t for s in stops):
                return k
        return len(gen)

    def _text(self, ids: list[int]) -> str:
        return self.tokenizer.decode([t for t in ids if t not in self._eos])

    def _finish(self, row: SeqState, reason: str, text: str | None = None) -> None:
        if row in self.running:
            self.running.remove(row)
        if row in self.waiting:
            self.waiting.remove(row)
        if row.shared is not None:  # never forked: give back its claim on the shared prompt
            p, row.shared = row.shared, None
            p.waiting -= 1
            if p.waiting == 0:
                self.pool.release(p.pages)
                p.pages = []
        gen = list(row.generated)
        row.completion = Completion(gen, self._text(gen) if text is None else text, reason, list(row.logprobs))
        if row.hold_on_stop and reason == "stop":
            row.state, row.epoch = PAUSED, self._epoch
        else:
            if row.state != PAUSED or row.epoch == self._epoch:  # a held row's pages may be a lost cache's
                self.pool.release(row.pages)
            row.pages, row.state = [], FINISHED
        self.stats.finished += 1
        if row.on_finish:
            row.on_finish(row, row.completion)


def _free_memory_bytes(placement: Placement) -> int:
    """Free memory of one of the engine's devices: the least free HBM among them, or on CPU the host RAM
    they share, divided among them (0 = unknown)."""
    free = placement.free_memory_bytes()
    if free is not None:
        return free
    try:
        import os

        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // placement.tensor
    except (ValueError, OSError):
        return 0
