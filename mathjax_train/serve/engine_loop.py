"""The server's one model thread: it owns an Engine, steps it while there is work and sleeps otherwise.

HTTP threads `submit` rows (they join the running batch at the engine's next chunk) and `cancel`
them; the engine's callbacks fire on this thread and only put events on the request's queue, so
a slow client never slows the batch. Events: ("tokens", row, ids, logprobs), ("finish", row,
completion) and ("error", row, exception) when a step failed (its rows are then cancelled).
"""

from __future__ import annotations

import queue
import sys
import threading
import traceback
from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence

from mathjax_train.infer.engine import Engine, SeqState
from mathjax_train.infer.params import SamplingParams


@dataclass
class LoopStats:
    requests: int = 0  # engine submits (one per prompt of a request)
    rows: int = 0
    steps: int = 0
    step_errors: int = 0
    finish_reasons: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict:
        return {
            "requests": self.requests,
            "rows": self.rows,
            "steps": self.steps,
            "step_errors": self.step_errors,
            "finish_reasons": dict(self.finish_reasons),
        }


class EngineLoop:
    """Runs `engine.step()` on a background thread; `submit`, `cancel` and `close` are safe from any thread.
    At most `max_live_rows` rows may be waiting or running; past that `submit` raises OverflowError."""

    def __init__(self, engine: Engine, *, max_live_rows: int = 4096):
        self.engine, self.max_live_rows = engine, max_live_rows
        self.stats = LoopStats()
        self._cond = threading.Condition()
        self._live: dict[int, tuple[SeqState, queue.SimpleQueue]] = {}  # row id -> (row, its request's events)
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="mathjax-serve-engine", daemon=True)
        self._thread.start()

    def stats_dict(self) -> dict:
        with self._cond:  # finish_reasons changes under this lock
            return self.stats.as_dict()

    @property
    def live_rows(self) -> int:
        with self._cond:
            return len(self._live)

    def submit(
        self,
        prompt_ids: Sequence[int],
        params: SamplingParams,
        seeds: Sequence[int],
        events: queue.SimpleQueue,
        *,
        stream: bool = False,
    ) -> list[SeqState]:
        """One row per seed; their events go to `events` (token events only when `stream`)."""
        with self._cond:
            if self._closed:
                raise RuntimeError("the server is shutting down")
            if len(self._live) + len(seeds) > self.max_live_rows:
                raise OverflowError(
                    f"{len(self._live)} sequences are already waiting or running (limit {self.max_live_rows})"
                )
            on_tokens = self._on_tokens if stream else None
            rows = self.engine.submit(prompt_ids, params, seeds, on_tokens=on_tokens, on_finish=self._on_finish)
            for r in rows:  # under the lock, so a callback for these rows waits until they are registered
                self._live[r.id] = (r, events)
            self.stats.requests += 1
            self.stats.rows += len(rows)
            self._cond.notify()
        return rows

    def cancel(self, rows: Sequence[SeqState]) -> None:
        """Abort the rows that have not finished (their pages and slots are freed at the next step)."""
        with self._cond:
            live = [r for r in rows if r.id in self._live]
            for r in live:
                self.engine.cancel(r)
            if live:
                self._cond.notify()

    def close(self, timeout_s: float = 60.0) -> None:
        """Stop the thread; requests still waiting get an error event."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=timeout_s)
        with self._cond:
            live, self._live = list(self._live.values()), {}
        for row, events in live:
            events.put(("error", row, RuntimeError("the server shut down before this sequence finished")))

    # -- the model thread ---------------------------------------------------------------------

    def _on_tokens(self, row: SeqState, new: list[int]) -> None:
        with self._cond:
            entry = self._live.get(row.id)
        if entry is not None:
            entry[1].put(("tokens", row, list(new), row.logprobs[len(row.logprobs) - len(new) :]))

    def _on_finish(self, row: SeqState, completion) -> None:
        with self._cond:
            entry = self._live.pop(row.id, None)
            self.stats.finish_reasons[completion.finish_reason] += 1
        if entry is not None:
            entry[1].put(("finish", row, completion))

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and not self.engine.busy:
                    self._cond.wait()
                if self._closed:
                    return
            try:
                self.engine.step()
                self.stats.steps += 1
            except Exception as e:  # noqa: BLE001 (the server must outlive one failed step)
                self._fail_all(e)

    def _fail_all(self, error: Exception) -> None:
        """A step raised: every live request gets the error, and its rows are cancelled to free their pages."""
        self.stats.step_errors += 1
        sys.stderr.write("serve: an engine step failed:\n" + traceback.format_exc())
        with self._cond:
            live, self._live = list(self._live.values()), {}
            for row, _ in live:
                self.engine.cancel(row)
        for row, events in live:
            events.put(("error", row, error))
