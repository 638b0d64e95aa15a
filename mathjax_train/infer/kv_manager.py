"""The engine's KV pages and the queues its rows wait and run in (vLLM's scheduler + KV-cache manager).

Admission prefills waiting rows in order while pages and slots last (a shared prompt once, then each sample
forked off it: full pages shared, the partial last one copied), keeping headroom for what running rows will
need next. Before each decode chunk the running rows get their pages, oldest first; when the pool runs
short, waiting rows' partial prefills are reclaimed, then the youngest running row is preempted (recomputed
later from its tokens, so it finishes exactly as it would have). The programs themselves run through the
engine's callbacks; this class only decides and keeps the accounts.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Callable

from mathjax_train.infer.pages import PagePool
from mathjax_train.infer.prefix_cache import PrefixCache
from mathjax_train.infer.rows import FINISHED, PAUSED, RUNNING, WAITING, EngineStats, SeqState, SharedPrompt

Target = SeqState | SharedPrompt  # what a prefill fills: a row, or the prompt its samples share


class KVManager:
    def __init__(
        self,
        num_pages: int,
        page_size: int,
        prefix_cache: bool,
        stats: EngineStats,
        prefill: Callable[[list[tuple[Target, int, int]]], None],
        copy_page: Callable[[int, int], None],
    ):
        """`prefill([(target, start, n), ...])` runs the prefill program on each target's tokens start..start+n-1
        (into its pages); `copy_page(src, dst)` copies one page's keys and values."""
        self.num_pages, self.page_size, self.stats = num_pages, page_size, stats
        self._use_prefix, self._prefill, self._copy_page = prefix_cache, prefill, copy_page
        # prefill chunks decided but not yet run: admission gathers them so that short prompts share a call.
        # They run (flush_prefills) before anything reads or gives away pages they write.
        self._pending: list[tuple[Target, int, int]] = []
        self.waiting: deque[SeqState] = deque()
        self.running: list[SeqState] = []
        self.epoch = 0  # bumped when the cache is lost: pages held from an older epoch are gone
        self._admissions = 0
        self.fresh()

    def fresh(self) -> None:
        """An empty page pool and prefix cache (at start-up, and after a lost cache)."""
        self.pool = PagePool(self.num_pages)
        self.prefix = PrefixCache(self.pool, self.page_size) if self._use_prefix else None

    def held_by_rows(self) -> int:
        """Pages neither free nor kept only by the prefix cache."""
        cached_only = self.prefix.cached_only() if self.prefix is not None else 0
        return self.pool.usable - self.pool.free - cached_only

    def pages_for(self, tokens: int) -> int:
        return math.ceil(tokens / self.page_size)

    # ---- admission
    def admit(self, num_slots: int, prefill_budget: int, decode_steps: int) -> None:
        """Prefill and admit waiting rows, in order, while slots, pages and (with rows running, so that their
        decoding is not held up long) this step's prefill budget last."""
        try:
            self._admit(num_slots, prefill_budget, decode_steps)
        finally:
            self.flush_prefills()

    def flush_prefills(self) -> None:
        """Run the prefill chunks admission has gathered."""
        pending, self._pending = self._pending, []
        if pending:
            self._prefill(pending)

    def _writes_pending(self, target: Target) -> bool:
        """Whether a gathered chunk writes pages `target` holds (its own earlier chunk, or prefix-cache pages
        another prompt's chunk is filling): its next chunk must read them written."""
        written = {p for t, _, _ in self._pending for p in t.pages}
        return not written.isdisjoint(target.pages)

    def _admit(self, num_slots: int, prefill_budget: int, decode_steps: int) -> None:
        budget = prefill_budget if self.running else None  # idle: prefill as much as the slots take
        headroom = self.growth(decode_steps)
        while self.waiting and len(self.running) < num_slots:
            row = self.waiting[0]
            target: Target = row.shared if row.shared is not None else row
            if self.prefix is not None and not target.pages:
                target.pages = self.prefix.lookup(target.tokens, len(target.tokens) - 1)
                target.cached = len(target.pages) * self.page_size
                self.stats.prefix_hit_tokens += target.cached
            needed = len(target.tokens) - 1 - target.cached
            while needed > 0:
                if budget is not None and budget <= 0:
                    return
                n = min(needed, prefill_budget, budget or needed)
                if not self._reserve(target, target.cached + n, headroom):
                    return
                if self._writes_pending(target):
                    self.flush_prefills()
                self._pending.append((target, target.cached, n))
                self._prefilled(target, n)
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

    def _prefilled(self, target: Target, n: int) -> None:
        target.cached += n
        if self.prefix is not None:
            self.prefix.insert(target.tokens, target.pages, target.cached)
        self.stats.prefill_calls += 1
        self.stats.prefill_tokens += n
        self.stats.prompt_prefills += target.cached == len(target.tokens) - 1

    def growth(self, steps: int) -> int:
        """Pages the running rows need for their next `steps` tokens."""
        return sum(max(0, self._missing(r, steps)) for r in self.running)

    def _missing(self, row: SeqState, steps: int) -> int:
        room = row.params.max_tokens - len(row.generated)
        return self.pages_for(row.cached + min(steps, room)) - len(row.pages)

    def _fork(self, row: SeqState) -> bool:
        """Give a sample of a shared prompt its pages: the full ones shared, the partial one copied.
        False when no page is free for the copy (the row waits)."""
        p = row.shared
        assert p is not None, "only a row of a shared prompt is forked"
        self.flush_prefills()  # the prompt's pages are written before they are shared or copied
        full, partial = divmod(p.cached, self.page_size)
        copy = partial and p.waiting > 1
        if copy and not self._reserve_free(1, protect=p):
            return False
        row.pages = list(p.pages[:full])
        self.pool.share(row.pages)
        if copy:
            own = self.pool.allocate(1)
            self._copy_page(p.pages[full], own[0])
            row.pages += own
        elif partial:  # the last sample takes the prompt's own partial page
            row.pages.append(p.pages[full])
            p.pages = p.pages[:full]
        self._unclaim(p)
        row.cached, row.shared = p.cached, None
        return True

    def _unclaim(self, p: SharedPrompt) -> None:
        """One sample fewer waits on `p`; the last gives back its pages."""
        p.waiting -= 1
        if p.waiting == 0:
            self.pool.release(p.pages)
            p.pages = []

    # ---- page accounting
    def _reserve_free(self, n: int, protect: Target | None = None) -> bool:
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

    def _reclaim_waiting(self, n: int, protect: Target | None = None) -> None:
        """Drop the partial prefills of waiting rows (and shared prompts), from the back of the queue,
        until n pages are free; they are recomputed when their turn comes. Pages only the prefix cache
        holds go first. Gathered prefills run first: no page is given away before it is written."""
        if self.pool.free >= n:
            return
        self.flush_prefills()
        if self.prefix is not None and self.pool.free < n:
            self.prefix.evict(n - self.pool.free)
        for row in reversed(self.waiting):
            if self.pool.free >= n:
                return
            target: Target = row.shared if row.shared is not None else row
            if target is protect or not target.pages:
                continue
            self.pool.release(target.pages)
            target.pages, target.cached = [], 0

    def _reserve(self, target: Target, tokens: int, headroom: int = 0) -> bool:
        """Give `target` pages for `tokens` tokens if the pool has (or can reclaim) them and `headroom`
        more (what running rows will need next, so that admitting a row does not preempt one)."""
        missing = self.pages_for(tokens) - len(target.pages)
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

    def grow_for_chunk(self, steps: int) -> None:
        """Pages for the next chunk of `steps`, oldest rows first: reclaimed from waiting rows, else taken
        by preempting the youngest running rows (possibly the row itself)."""
        for row in sorted(self.running, key=lambda r: r.admitted_at):
            if row.state != RUNNING:
                continue
            missing = self._missing(row, steps)
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

    # ---- rows leaving, coming back, and a lost cache
    def drop(self, row: SeqState, hold: bool) -> None:
        """A row leaves the queues (finished, or `hold`: paused after a stop, keeping its pages to resume)."""
        if row in self.running:
            self.running.remove(row)
        if row in self.waiting:
            self.waiting.remove(row)
        if row.shared is not None:  # never forked: give back its claim on the shared prompt
            p, row.shared = row.shared, None
            self._unclaim(p)
        if hold:
            row.state, row.epoch = PAUSED, self.epoch
        else:
            if row.state != PAUSED or row.epoch == self.epoch:  # a held row's pages may be a lost cache's
                self.pool.release(row.pages)
            row.pages, row.state = [], FINISHED

    def resume(self, row: SeqState, appended: int) -> None:
        """A held row's pages for its next round: those it kept (none if they went with a lost cache),
        holding its tokens up to the `appended` ones."""
        if row.epoch != self.epoch:
            row.pages, row.cached = [], 0
        row.cached = min(row.cached, len(row.tokens) - appended)

    def release_held(self, row: SeqState) -> None:
        """Free the pages of a held row that will not be resumed."""
        if row.state == PAUSED:
            if row.epoch == self.epoch:
                self.pool.release(row.pages)
            row.pages, row.state = [], FINISHED

    def lose_cache(self) -> None:
        """Every page's contents are gone: a fresh pool and prefix cache. Running and waiting rows go back
        to waiting, to be recomputed from their tokens as after a preemption; held rows are when resumed
        (their epoch is older)."""
        self.epoch += 1
        self.stats.cache_losses += 1
        self._pending = []
        self.fresh()
        for row in self.running:
            row.state = WAITING
        self.waiting.extendleft(reversed(self.running))
        self.running = []
        for row in self.waiting:
            row.pages, row.cached = [], 0
            if row.shared is not None:
                row.shared.pages, row.shared.cached = [], 0
