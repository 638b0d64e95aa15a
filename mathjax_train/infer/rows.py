"""One in-flight request of the engine (a row: its tokens, pages, sampling settings and progress) and the
engine's counters. The engine, its page manager (infer/kv_manager.py) and its stop handling (infer/stops.py)
all act on these."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from mathjax_train.infer.params import Completion, SamplingParams

WAITING, RUNNING, PAUSED, FINISHED = "waiting", "running", "paused", "finished"


@dataclass
class EngineStats:
    prompt_prefills: int = 0  # prompts (or preempted / resumed sequences) whose prefill completed
    prefill_calls: int = 0  # prefill chunks (a prompt longer than prefill_budget takes several)
    prefill_programs: int = 0  # program calls that ran them (short prompts' chunks share one)
    prefill_tokens: int = 0
    decode_chunks: int = 0
    decode_rows: int = 0  # rows summed over decode chunks (/ decode_chunks: how many rows a chunk shares)
    generated_tokens: int = 0
    preemptions: int = 0
    finished: int = 0
    cache_losses: int = 0  # programs that failed after taking the cache (it was rebuilt; rows recompute)
    prefix_hit_tokens: int = 0  # prompt tokens whose pages came from the prefix cache, not a prefill
    verify_calls: int = 0  # speculative steps (infer/speculate.py); their rows count in decode_rows
    drafted_tokens: int = 0
    accepted_tokens: int = 0  # drafted tokens the model agreed with

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(eq=False)
class SharedPrompt:
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
    shared: SharedPrompt | None = None
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
    epoch: int = 0  # the cache epoch its held pages belong to (see KVManager.lose_cache)

    @property
    def generated(self) -> list[int]:
        return self.tokens[self.round_start :]

    def result(self) -> Completion:
        """The completion of a row that has finished (or is held after a stop)."""
        if self.completion is None:
            raise RuntimeError(f"row {self.id} has not finished")
        return self.completion
