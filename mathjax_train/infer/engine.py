"""THE sampling engine: continuous batching over a paged KV cache, shared prompts, chunked prefill.

A sequence waits, is prefilled (its tokens but the last, in chunks of at most `prefill_budget`
tokens while other rows decode), then decodes in a slot: each `step()` runs one compiled chunk of
`decode_steps` tokens for all running rows and admits waiting ones as slots free up. The n samples
of one prompt prefill it once: each sample shares its full pages and copies the partial last one.
A row's tokens depend only on its prompt, settings and seed, never on what runs beside it. When
pages run out, the youngest running row is preempted (its pages freed) and later recomputed from
its prompt and the tokens it already has, so it finishes exactly as it would have.

The parts, by role: infer/rows.py (a row's state), infer/kv_manager.py (pages, admission, preemption),
infer/stops.py (stop strings, finishing a row), infer/step_shape.py (how long a chunk runs, when to
speculate), infer/programs.py (the compiled programs), and
infer/paged_kernels.py (the attention kernel, resolved once into a KernelSpec).

With `isolate_rows` (a server), an exception raised by one row's own work in a step (its settings
into the batch, its stop check, its callbacks) finishes that row alone with reason "error" and the
exception in `row.error`; without it (batch jobs), the exception ends the step as before.

Single-threaded: `submit`/`cancel` may be called from any thread, `step` from one.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from typing import Callable, Sequence

import jax
import numpy as np

from mathjax_train.config import EngineConfig, InputError
from mathjax_train.infer.exact import ExactRows
from mathjax_train.infer.kv_manager import KVManager, Target
from mathjax_train.infer.layout import decode_config, decode_params, unroll_by_default
from mathjax_train.infer.loading import LoadedModel
from mathjax_train.infer.pages import PagePool
from mathjax_train.infer.paged_kernels import cache_page_bytes, empty_cache, kernel_spec
from mathjax_train.infer.params import Completion, SamplingParams
from mathjax_train.infer.placement import engine_placement
from mathjax_train.infer.prefix_cache import PrefixCache
from mathjax_train.infer.programs import (
    Programs,
    bucket,
    decode_inputs,
    page_bucket,
    page_table,
    prefill_row_buckets,
    row_bucket,
    row_buckets,
)
from mathjax_train.infer.rows import FINISHED, PAUSED, RUNNING, WAITING, EngineStats, SeqState, SharedPrompt
from mathjax_train.infer.sizing import engine_pages, engine_slots
from mathjax_train.infer.speculate import draft_table
from mathjax_train.infer.step_shape import SMALL_BATCH, chunk_limits, speculates
from mathjax_train.infer.stops import RowStops

__all__ = ["FINISHED", "PAUSED", "RUNNING", "WAITING", "Engine", "EngineStats", "SeqState", "engine_for_prompts"]


class Engine:
    """Generates completions for token prompts: `submit` rows (or `generate` a batch), then `step` until idle.

    It holds what one step needs in one place (the model, the KV cache, the compiled programs) and runs
    the step: drain submitted rows and cancels, admit and prefill (KVManager), give running rows pages for
    a chunk (KVManager, preempting if short), decode the chunk, and hand each row's tokens to its stop
    checks (RowStops). Rows are SeqState; how pages are kept and rows end is those classes' business."""

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
        self.max_seq_len = min(max_seq_len or mc.max_position_embeddings, mc.max_position_embeddings)
        self.page_size = self.cfg.page_size
        self.max_pages_per_seq = math.ceil(self.max_seq_len / self.page_size)
        self.num_slots = engine_slots(self.cfg.num_slots, jax.default_backend())
        self.exact = ExactRows(mc, self.max_seq_len - 1) if exact else None  # a row's last token is never input
        # this host's devices (engine.tensor): params split by the mesh rules, the cache by kv heads
        self.placement = engine_placement(self.cfg.tensor, mc)
        self.kernel = kernel_spec(self.cfg.attention, mc, self.page_size, self.placement.tensor)
        placed = self.placement.place_params(model.params, mc)
        if placed is not model.params:  # in place: the engine reads model.params at every call
            model.params = placed
        self.num_pages = self.cfg.num_pages or engine_pages(
            cache_page_bytes(self.kernel, mc, self.page_size),
            self.placement,
            self.cfg.kv_memory_fraction,
            self.num_slots,
            self.max_pages_per_seq,
            self.max_seq_len,
        )
        self.stats = EngineStats()
        self.kv = KVManager(
            self.num_pages, self.page_size, self.cfg.prefix_cache, self.stats, self._prefill, self._copy_page
        )
        self.stops = RowStops(self.tokenizer, self.eos_ids, self.kv, self.stats)
        self.cache = self._empty_cache()
        self._params_version = model.params_version
        self.unroll = unroll_by_default(self.cfg.layers, jax.default_backend())
        self.programs = Programs.of(
            decode_config(mc, self.unroll), self.eos_ids, self.cfg.decode_steps, self.kernel, self.placement
        )
        self._prepared: tuple[int, dict] | None = None  # (params version, the params laid out for decoding)
        self.shapes: set[tuple] = set()  # program shapes this engine ran (each compiled once per model)
        self._inbox: list[SeqState] = []
        self._cancels: list[SeqState] = []
        self._lock = threading.Lock()
        self._ids = 0

    # the page manager's state, as callers (serve, tests) read it
    @property
    def pool(self) -> PagePool:
        return self.kv.pool

    @property
    def prefix(self) -> PrefixCache | None:
        return self.kv.prefix

    @property
    def waiting(self) -> deque[SeqState]:
        return self.kv.waiting

    @property
    def running(self) -> list[SeqState]:
        return self.kv.running

    def _empty_cache(self) -> dict:
        return empty_cache(self.kernel, self.model.cfg, self.num_pages, self.page_size, self.placement)

    def compile_ahead(self) -> int:
        """Compile the programs a run can need (a decode chunk for every row bucket up to num_slots, a
        speculative step for the small ones, a prefill call for every token and row bucket up to prefill_budget,
        the page copy) by running them on the trash page, so that a server's first clients do not wait for
        compilations. Call it before any row runs. Returns how many programs it ran."""
        params, ran = self.program_params(), 0
        width = self._width(self.max_pages_per_seq)
        tokens = 16
        while True:
            n = min(tokens, self.cfg.prefill_budget)
            for rows in prefill_row_buckets(n, self.cfg.prefill_budget):
                chunk = (np.zeros(n, np.int32), 0, np.zeros(width, np.int32))
                self.cache = self.programs.prefill(params, self.cache, [chunk] * rows)
                ran += 1
            if n >= self.cfg.prefill_budget:
                break
            tokens *= 2
        k = 0 if self.kernel.ragged_pool else self.cfg.speculative_tokens
        for s in row_buckets(self.num_slots):
            batch = decode_inputs([], s, width)
            self.cache, _ = self.programs.decode(params, self.cache, batch[0], batch[1])
            ran += 1
            if k and s <= row_bucket(SMALL_BATCH, self.num_slots):
                drafts = np.full((s, k), -1, np.int32)
                self.cache, _ = self.programs.verify(params, self.cache, batch[0], drafts, batch[1])
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
        shared = SharedPrompt(prompt, len(seeds)) if len(seeds) > 1 else None
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
        self.kv.resume(row, len(tokens))
        row.round_start, row.params, row.seed = len(row.tokens), params, int(seed) % 2**32
        row.logprobs, row.completion, row.state = [], None, WAITING
        with self._lock:
            self._inbox.append(row)

    def release(self, row: SeqState) -> None:
        """Free the pages of a held row that will not be resumed."""
        self.kv.release_held(row)

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
        self.kv.admit(self.num_slots, self.cfg.prefill_budget, self.cfg.decode_steps)
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
        return self.kv.held_by_rows()

    def release_params(self) -> None:
        """Drop the engine's own references to the parameters (the decoding layout made from them), so that the
        caller can free them before it sets new ones (rl does, before the reshard makes the next)."""
        self._prepared = None

    def program_params(self) -> dict:
        """The model's current parameters as the programs take them (infer/layout.py), remade when they change."""
        version = self.model.params_version
        if self._prepared is None or self._prepared[0] != version:
            self._prepared = None  # the old arrays go before the new ones are made
            self._prepared = (version, decode_params(self.model.params, self.model.cfg, self.unroll))
        return self._prepared[1]

    def _program(self, program, *args, **kwargs):
        """Run a compiled program. The cache is donated to it, so one that fails midway may leave no
        cache behind; then the engine starts a fresh one (and every row recomputes: KVManager.lose_cache)
        before the error goes on."""
        try:
            return program(*args, **kwargs)
        except Exception:
            if any(x.is_deleted() for x in jax.tree.leaves(self.cache)):
                self.kv.lose_cache()
                self.cache = self._empty_cache()
            raise

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
                self.stops.finish(row, "aborted")

    def _prefill(self, chunks: list[tuple[Target, int, int]]) -> None:
        """The prefill program on each (target, start, n): target's tokens start..start+n-1 into its pages
        (KVManager keeps the accounts). Chunks of one token bucket share calls of 16, 4 or 1 rows."""
        groups: dict[int, list[tuple[Target, int, int]]] = {}
        for chunk in chunks:
            groups.setdefault(bucket(chunk[2], 1 << 30, 16), []).append(chunk)
        for tokens, group in groups.items():
            sizes = prefill_row_buckets(tokens, self.cfg.prefill_budget)
            while group:
                take = max(b for b in sizes if b <= len(group))
                part, group = group[:take], group[take:]
                width = self._width(max(math.ceil((start + n) / self.page_size) for _, start, n in part))
                calls = [
                    (np.asarray(t.tokens[start : start + n], np.int32), start, page_table(t.pages, width))
                    for t, start, n in part
                ]
                self.cache = self._program(
                    self.programs.prefill, self.program_params(), self.cache, calls, record=self.shapes
                )
                self.stats.prefill_programs += 1

    def _copy_page(self, src: int, dst: int) -> None:
        self.cache = self._program(self.programs.copy_pages, self.cache, [(src, dst)])

    def _width(self, pages: int) -> int:
        """Page-table columns of a call: the XLA path reads (and pays for) every column, so they come
        in buckets; the CPU kernel reads only a row's own pages, so one width serves every call."""
        if self.kernel.fixed_width:
            return self.max_pages_per_seq
        return page_bucket(pages, self.max_pages_per_seq)

    def _decode_chunk(self) -> None:
        with self._lock:
            pending = bool(self._inbox) or bool(self.waiting)
        steps, exit_on_end = chunk_limits(self.running, pending, self.cfg.decode_steps)
        speculate = speculates(
            self.running, self.cfg.speculative_tokens, self.exact is not None, self.kernel.ragged_pool
        )
        self.kv.grow_for_chunk(max(steps, self.cfg.speculative_tokens + 1) if speculate else steps)
        rows = list(self.running)
        if not rows:
            return
        if self.exact is not None:
            for r in rows:
                self._guarded(r, self._decode_exact, r, steps)
            return
        if speculate and self._verify_chunk(rows):
            return
        s = row_bucket(len(rows), self.num_slots)
        width = self._width(max(math.ceil((r.cached + steps) / self.page_size) for r in rows))
        errors: dict[int, Exception] = {}
        batch, table = decode_inputs(rows, s, width, errors if self.isolate_rows else None)
        for i, e in errors.items():  # rows whose settings the batch cannot hold (isolate_rows): their slots idle
            self.stops.fail(rows[i], e)
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
        self._take_outputs(rows, out, skip=errors)

    def _verify_chunk(self, rows: list[SeqState]) -> bool:
        """One speculative step for `rows`; False (nothing run) when no row has a draft."""
        s = row_bucket(len(rows), self.num_slots)
        drafts, drafted = draft_table([r.tokens for r in rows], s, self.cfg.speculative_tokens)
        if not drafted:
            return False
        width = self._width(max(math.ceil((r.cached + drafts.shape[1] + 1) / self.page_size) for r in rows))
        errors: dict[int, Exception] = {}
        batch, table = decode_inputs(rows, s, width, errors if self.isolate_rows else None)
        if errors:  # the decode chunk fails those rows alone
            return False
        self.cache, out = self._program(
            self.programs.verify, self.program_params(), self.cache, batch, drafts, table, record=self.shapes
        )
        self.stats.verify_calls += 1
        self.stats.decode_rows += len(rows)
        self.stats.drafted_tokens += drafted
        self.stats.accepted_tokens += self._take_outputs(rows, out) - len(rows)  # each row's last token is its own
        return True

    def _take_outputs(self, rows: list[SeqState], out: dict, skip=()) -> int:
        """Hand each row (but those in `skip`) its tokens of a decode or verify output (-1 after its last ones);
        returns how many tokens they took."""
        taken = 0
        for i, r in enumerate(rows):
            if i in skip:
                continue
            got = out["tokens"][i]
            n = int(np.sum(got >= 0))
            taken += n
            self._take_tokens(r, [int(t) for t in got[:n]], [float(x) for x in out["logprobs"][i, :n]])
        return taken

    def _take_tokens(self, r: SeqState, new: list[int], logprobs: list[float]) -> None:
        """Append a decode chunk's tokens (and their log-probabilities) to row `r`, then its stop checks."""
        r.tokens += new
        r.logprobs += logprobs
        r.cached += len(new)  # the pages the chunk reserved hold them
        self.stats.generated_tokens += len(new)
        self._guarded(r, self.stops.after_tokens, r, new)

    def _decode_exact(self, r: SeqState, steps: int) -> None:
        """Up to `steps` tokens of one row through the exact program, ending where the decode chunk would."""
        assert self.exact is not None
        new, logprobs = self.exact.decode(
            self.model.params, r.tokens, len(r.generated), r.seed, r.params, steps, self.stops.eos
        )
        self.stats.decode_chunks += 1
        self.stats.decode_rows += 1
        self._take_tokens(r, new, logprobs)

    def _guarded(self, row: SeqState, fn, *args) -> None:
        """fn(*args), work of `row` alone: with isolate_rows, an exception finishes that row as "error"."""
        if not self.isolate_rows:
            fn(*args)
            return
        try:
            fn(*args)
        except Exception as e:  # noqa: BLE001 (one row's fault must not end its batch-mates)
            if row.state in (WAITING, RUNNING):
                self.stops.fail(row, e)


def engine_for_prompts(
    model: LoadedModel, prompt_lengths, sp: SamplingParams, config: EngineConfig | None = None
) -> Engine:
    """An engine sized for a batch of prompts: sequences up to the longest prompt plus max_tokens."""
    longest = max(prompt_lengths, default=1)
    return Engine(model, config or EngineConfig(), max_seq_len=longest + sp.max_tokens)
