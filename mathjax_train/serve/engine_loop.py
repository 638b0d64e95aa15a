"""The server's one model thread: it owns an Engine, feeds it requests in turn and steps it.

A request is a list of groups (one prompt with its n seeds, prefilled once). `submit` takes all of
a request's groups or none (OverflowError past `max_live_rows`, counting rows not yet given to the
engine), so a refused request holds nothing. The thread hands groups to the engine round-robin
between requests, keeping about two batches' worth of rows there, so one request of many rows
cannot make later small requests wait for all of its rows. Engine callbacks fire on this thread and
only pass events to the request's `sink`: ("tokens", choice, ids, logprobs), ("finish", choice,
completion), ("error", choice, exception) for a row that failed alone or a step that failed.
"""

from __future__ import annotations

import sys
import threading
import traceback
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Callable, Sequence

from mathjax_train.infer.engine import Engine, SeqState
from mathjax_train.infer.params import Completion, SamplingParams

Group = tuple[Sequence[int], SamplingParams, Sequence[int]]  # prompt ids, settings, one seed per choice
Sink = Callable[[tuple], None]


@dataclass
class LoopStats:
    requests: int = 0  # submitted requests
    groups: int = 0  # groups handed to the engine (one per prompt of a request)
    rows: int = 0  # rows handed to the engine
    refused: int = 0  # requests refused whole (over max_live_rows)
    steps: int = 0
    step_errors: int = 0
    row_errors: int = 0  # rows that failed alone (the engine isolates them)
    finish_reasons: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict:
        return {k: (dict(v) if isinstance(v, Counter) else v) for k, v in self.__dict__.items()}


@dataclass(eq=False)
class Ticket:
    """One request in the loop: its groups not yet in the engine and its rows there."""

    sink: Sink
    stream: bool
    pending: deque = field(default_factory=deque)  # (group, index of its first choice)
    pending_rows: int = 0
    rows: dict[int, tuple[SeqState, int]] = field(default_factory=dict)  # row id -> (row, choice index)
    cancelled: bool = False


class EngineLoop:
    """Runs the engine on a background thread; `submit`, `cancel` and `close` are safe from any thread."""

    def __init__(self, engine: Engine, *, max_live_rows: int = 4096, lookahead_rows: int = 0):
        self.engine, self.max_live_rows = engine, max_live_rows
        self.lookahead_rows = lookahead_rows or 2 * engine.num_slots  # rows kept in the engine when many wait
        self.stats = LoopStats()
        self._cond = threading.Condition()
        self._turns: deque[Ticket] = deque()  # requests with groups not yet in the engine, in turn order
        self._rows: dict[int, tuple[Ticket, SeqState, int]] = {}  # rows in the engine: id -> (ticket, row, choice)
        self._pending_rows = 0
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="mathjax-serve-engine", daemon=True)
        self._thread.start()

    def stats_dict(self) -> dict:
        with self._cond:
            return self.stats.as_dict()

    @property
    def live_rows(self) -> int:
        """Rows waiting here or in the engine, or running."""
        with self._cond:
            return self._pending_rows + len(self._rows)

    def submit(self, groups: Sequence[Group], sink: Sink, *, stream: bool = False) -> Ticket:
        """Queue a request's groups (token events only when `stream`); all or nothing."""
        total = sum(len(seeds) for _, _, seeds in groups)
        with self._cond:
            if self._closed:
                raise RuntimeError("the server is shutting down")
            live = self._pending_rows + len(self._rows)
            if live + total > self.max_live_rows:
                self.stats.refused += 1
                raise OverflowError(f"{live} sequences are already waiting or running (limit {self.max_live_rows})")
            t = Ticket(sink, stream)
            first = 0
            for g in groups:
                t.pending.append((g, first))
                first += len(g[2])
            t.pending_rows = total
            self._pending_rows += total
            self._turns.append(t)
            self.stats.requests += 1
            self._cond.notify()
        return t

    def cancel(self, t: Ticket) -> None:
        """Drop the request's queued groups now; its rows in the engine finish as aborted at the next step."""
        with self._cond:
            if t.cancelled:
                return
            t.cancelled = True
            self._drop_pending(t)
            for row, _ in t.rows.values():
                self.engine.cancel(row)
            self._cond.notify()

    def close(self, timeout_s: float = 60.0) -> None:
        """Stop the thread; requests still live get an error event."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=timeout_s)
        with self._cond:
            live = [(t, c) for t, _, c in self._rows.values()] + [
                (t, first) for t in self._turns for _, first in t.pending
            ]
            self._rows, self._turns, self._pending_rows = {}, deque(), 0
        error = RuntimeError("the server shut down before this sequence finished")
        for t, choice in live:
            self._send(t, ("error", choice, error))

    # -- the model thread ---------------------------------------------------------------------

    def _drop_pending(self, t: Ticket) -> None:
        self._pending_rows -= t.pending_rows
        t.pending.clear()
        t.pending_rows = 0
        if t in self._turns:
            self._turns.remove(t)

    def _feed(self) -> None:
        """Hand groups to the engine, one per request in turn, while it holds fewer than lookahead_rows."""
        while self._turns and len(self._rows) < self.lookahead_rows:
            t = self._turns.popleft()
            (ids, params, seeds), first = t.pending.popleft()
            t.pending_rows -= len(seeds)
            self._pending_rows -= len(seeds)
            if t.pending:
                self._turns.append(t)
            try:
                rows = self.engine.submit(
                    ids, params, seeds, on_tokens=self._on_tokens if t.stream else None, on_finish=self._on_finish
                )
            except Exception as e:  # noqa: BLE001 (the app validated the group; a refusal here ends that request)
                self._drop_pending(t)
                self._send(t, ("error", first, e))
                continue
            for j, row in enumerate(rows):
                t.rows[row.id] = (row, first + j)
                self._rows[row.id] = (t, row, first + j)
            self.stats.groups += 1
            self.stats.rows += len(rows)

    def _send(self, t: Ticket, event: tuple) -> None:
        try:
            t.sink(event)
        except Exception:  # noqa: BLE001 (a request that cannot take events is dropped, not the loop)
            if not t.cancelled:
                t.cancelled = True
                self._drop_pending(t)
                for row, _ in t.rows.values():
                    self.engine.cancel(row)

    def _on_tokens(self, row: SeqState, new: list[int]) -> None:
        entry = self._rows.get(row.id)
        if entry is not None:
            t, _, choice = entry
            self._send(t, ("tokens", choice, list(new), row.logprobs[len(row.logprobs) - len(new) :]))

    def _on_finish(self, row: SeqState, completion: Completion) -> None:
        with self._cond:
            entry = self._rows.pop(row.id, None)
            self.stats.finish_reasons[completion.finish_reason] += 1
            if entry is not None:
                entry[0].rows.pop(row.id, None)
        if entry is None:
            return
        t, _, choice = entry
        if completion.finish_reason == "error":
            self.stats.row_errors += 1
            self._send(t, ("error", choice, row.error or RuntimeError("the row failed")))
        else:
            self._send(t, ("finish", choice, completion))

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and not self._turns and not self.engine.busy:
                    self._cond.wait()
                if self._closed:
                    return
                self._feed()
            try:
                self.engine.step()
                self.stats.steps += 1
            except Exception as e:  # noqa: BLE001 (the server must outlive one failed step)
                self._fail_all(e)

    def _fail_all(self, error: Exception) -> None:
        """A step raised (not one row's fault): every request with rows in the engine gets the error and
        its rows are cancelled to free their pages."""
        self.stats.step_errors += 1
        sys.stderr.write("serve: an engine step failed:\n" + traceback.format_exc())
        with self._cond:
            hit = {id(t): t for t, _, _ in self._rows.values()}
            firsts = {id(t): min(c for _, c in t.rows.values()) for t in hit.values()}
            for t in hit.values():
                t.cancelled = True
                self._drop_pending(t)
                for row, _ in t.rows.values():
                    self.engine.cancel(row)
        for key, t in hit.items():
            self._send(t, ("error", firsts[key], error))
