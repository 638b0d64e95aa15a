"""THE sampling engine: continuous batching over a paged KV cache, shared prompts, chunked prefill.

A sequence waits, is prefilled (its tokens but the last, in chunks of at most `prefill_budget`
tokens while other rows decode), then decodes in a slot: each `step()` runs one compiled chunk of
`decode_steps` tokens for all running rows and admits waiting ones as slots free up. The n samples
of one prompt prefill it once: each sample shares its full pages and copies the partial last one.
A row's tokens depend only on its prompt, settings and seed, never on what runs beside it. When
pages run out, the youngest running row is preempted (its pages freed) and later recomputed from
its prompt and the tokens it already has, so it finishes exactly as it would have.

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
from mathjax_train.infer.pages import PagePool
from mathjax_train.infer.params import Completion, SamplingParams
from mathjax_train.infer.programs import Programs, page_bucket, row_bucket
from mathjax_train.model import init_pages, page_bytes

WAITING, RUNNING, PAUSED, FINISHED = "waiting", "running", "paused", "finished"


@dataclass
class EngineStats:
    prompt_prefills: int = 0  # prompts (or preempted / resumed sequences) whose prefill completed
    prefill_calls: int = 0
    prefill_tokens: int = 0
    decode_chunks: int = 0
    generated_tokens: int = 0
    preemptions: int = 0
    finished: int = 0

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

    @property
    def generated(self) -> list[int]:
        return self.tokens[self.round_start :]

    def result(self) -> Completion:
        """The completion of a row that has finished (or is held after a stop)."""
        if self.completion is None:
            raise RuntimeError(f"row {self.id} has not finished")
        return self.completion


class Engine:
    def __init__(self, model: LoadedModel, config: EngineConfig | None = None, *, max_seq_len: int = 0):
        self.model, self.cfg = model, config or EngineConfig()
        self.cfg.validate()
        mc = model.cfg
        self.tokenizer = model.tokenizer
        self.eos_ids = model.eos_ids
        self._eos = set(self.eos_ids)
        self.max_seq_len = min(max_seq_len or mc.max_position_embeddings, mc.max_position_embeddings)
        self.page_size = self.cfg.page_size
        self.max_pages_per_seq = math.ceil(self.max_seq_len / self.page_size)
        self.num_slots = self.cfg.num_slots or (64 if jax.default_backend() == "cpu" else 256)
        self.num_pages = self.cfg.num_pages or self._pages_from_memory()
        self.pool = PagePool(self.num_pages)
        # committed like the donated outputs, so the first and later calls share one compilation
        self.cache = jax.device_put(init_pages(mc, self.num_pages, self.page_size), jax.devices()[0])
        self.programs = Programs.of(mc, self.eos_ids, self.cfg.decode_steps)
        self.stats = EngineStats()
        self.shapes: set[tuple] = set()  # program shapes this engine ran (each compiled once per model)
        self.waiting: deque[SeqState] = deque()
        self.running: list[SeqState] = []
        self._inbox: list[SeqState] = []
        self._cancels: list[SeqState] = []
        self._lock = threading.Lock()
        self._ids = 0
        self._admissions = 0

    # ---- sizing
    def _pages_from_memory(self) -> int:
        per_page = page_bytes(self.model.cfg, self.page_size)
        wanted = self.num_slots * self.max_pages_per_seq + 1
        free = _free_memory_bytes()
        fit = int(free * self.cfg.kv_memory_fraction // per_page) if free else wanted
        if fit < self.max_pages_per_seq + 1:
            raise InputError(
                f"the KV cache for one {self.max_seq_len}-token sequence needs "
                f"{(self.max_pages_per_seq + 1) * per_page / 2**30:.2f} GiB but "
                f"engine.kv_memory_fraction={self.cfg.kv_memory_fraction} of the free "
                f"{free / 2**30:.2f} GiB leaves less; lower the sequence length or set engine.num_pages"
            )
        return max(2, min(wanted, fit))

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
        row.cached = min(row.cached, len(row.tokens) - len(tokens))
        row.round_start, row.params, row.seed = len(row.tokens), params, int(seed) % 2**32
        row.logprobs, row.completion, row.state = [], None, WAITING
        with self._lock:
            self._inbox.append(row)

    def release(self, row: SeqState) -> None:
        """Free the pages of a held row that will not be resumed."""
        if row.state == PAUSED:
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

    def _drain(self) -> None:
        with self._lock:
            new, self._inbox = self._inbox, []
            cancels, self._cancels = self._cancels, []
        self.waiting.extend(new)
        for row in cancels:
            if row.state in (WAITING, RUNNING, PAUSED):
                self._finish(row, "aborted")

    def _prefill_and_admit(self) -> None:
        budget = self.cfg.prefill_budget if self.running else None  # idle: prefill as much as the slots take
        while self.waiting and len(self.running) < self.num_slots:
            row = self.waiting[0]
            target = row.shared if row.shared is not None else row
            needed = len(target.tokens) - 1 - target.cached
            while needed > 0:
                if budget is not None and budget <= 0:
                    return
                n = min(needed, self.cfg.prefill_budget, budget or needed)
                if not self._reserve(target, target.cached + n):
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
        table = self._table(target.pages, page_bucket(math.ceil((start + n) / self.page_size), self.max_pages_per_seq))
        self.cache = self.programs.prefill(
            self.model.params,
            self.cache,
            np.asarray(target.tokens[start : start + n], np.int32),
            start,
            table,
            record=self.shapes,
        )
        target.cached += n
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
            self.cache = self.programs.copy_pages(self.cache, [(p.pages[full], own[0])])
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
        until n pages are free; they are recomputed when their turn comes."""
        for row in reversed(self.waiting):
            if self.pool.free >= n:
                return
            target = row.shared if row.shared is not None else row
            if target is protect or not target.pages:
                continue
            self.pool.release(target.pages)
            target.pages, target.cached = [], 0

    def _reserve(self, target, tokens: int) -> bool:
        """Give `target` pages for `tokens` tokens if the pool has (or can reclaim) them."""
        missing = math.ceil(tokens / self.page_size) - len(target.pages)
        if missing <= 0:
            return True
        if not self._reserve_free(missing, protect=target):
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

    def _grow_for_chunk(self) -> None:
        """Pages for the next chunk, oldest rows first: reclaimed from waiting rows, else taken by
        preempting the youngest running rows (possibly the row itself)."""
        steps = self.cfg.decode_steps
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
            if row.state == RUNNING and missing > 0:
                row.pages += self.pool.allocate(missing)

    def _table(self, pages: list[int], width: int) -> np.ndarray:
        table = np.zeros(width, np.int32)
        table[: min(len(pages), width)] = pages[:width]
        return table

    def _decode_chunk(self) -> None:
        steps = self.cfg.decode_steps
        self._grow_for_chunk()
        rows = list(self.running)
        if not rows:
            return
        s = row_bucket(len(rows), self.num_slots)
        width = page_bucket(max(math.ceil((r.cached + steps) / self.page_size) for r in rows), self.max_pages_per_seq)
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
        table = np.zeros((s, width), np.int32)
        for i, r in enumerate(rows):
            sp = r.params
            batch["last"][i], batch["length"][i], batch["active"][i] = r.tokens[-1], r.cached, True
            batch["step"][i], batch["max_step"][i], batch["seed"][i] = len(r.generated), sp.max_tokens, r.seed
            batch["temperature"][i], batch["top_p"][i], batch["top_k"][i] = sp.temperature, sp.top_p, sp.top_k
            batch["ignore_eos"][i] = sp.ignore_eos
            table[i] = self._table(r.pages, width)
        # a row with no token yet in its round feeds its context's last token, whose KV is not cached
        self.cache, out = self.programs.decode(self.model.params, self.cache, batch, table, record=self.shapes)
        self.stats.decode_chunks += 1
        for i, r in enumerate(rows):
            got = out["tokens"][i]
            n = int(np.sum(got >= 0))
            new = [int(t) for t in got[:n]]
            r.tokens += new
            r.logprobs += [float(x) for x in out["logprobs"][i, :n]]
            r.cached += n
            self.stats.generated_tokens += n
            self._after_tokens(r, new)

    def _after_tokens(self, row: SeqState, new: list[int]) -> None:
        gen = row.generated
        if row.params.stop:
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
            row.state = PAUSED
        else:
            self.pool.release(row.pages)
            row.pages, row.state = [], FINISHED
        self.stats.finished += 1
        if row.on_finish:
            row.on_finish(row, row.completion)


def _free_memory_bytes() -> int:
    """Free memory where the cache will live: the first device's HBM, or host RAM on CPU."""
    dev = jax.devices()[0]
    if dev.platform != "cpu":
        stats = dev.memory_stats() or {}
        if "bytes_limit" in stats:
            return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
    try:
        import os

        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return 0
