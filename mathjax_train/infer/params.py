"""What a caller asks of the engine and what it gets back: per-row settings, one result type, one seed scheme."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from mathjax_train.errors import InputError

# "error": a row that failed alone, only with Engine(isolate_rows=True)
FINISH_REASONS = ("eos", "stop", "length", "max_calls", "aborted", "error")
INT32_MAX = 2**31 - 1  # max_tokens and top_k go to the compiled programs as int32


@dataclass(frozen=True)
class SamplingParams:
    """Settings of one row. temperature 0 = greedy; top_k 0 and top_p 1 = no filter. `stop` strings
    end a row (the text is cut before the stop string); EOS ends it unless `ignore_eos`."""

    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False

    def __post_init__(self):
        object.__setattr__(self, "stop", tuple(self.stop))
        problems = []
        if not 1 <= self.max_tokens <= INT32_MAX:
            problems.append(f"max_tokens must be in [1, {INT32_MAX}], got {self.max_tokens}")
        if self.temperature < 0:
            problems.append(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            problems.append(f"top_p must be in (0, 1], got {self.top_p}")
        if not 0 <= self.top_k <= INT32_MAX:
            problems.append(f"top_k must be in [0, {INT32_MAX}], got {self.top_k}")
        if any(not isinstance(s, str) or not s for s in self.stop):
            problems.append(f"stop strings must be non-empty strings, got {list(self.stop)!r}")
        if problems:
            raise InputError("; ".join(problems))


@dataclass
class Completion:
    """One sampled completion. `token_ids` are the generated ids (the final EOS included when there was
    one; with a stop string, up to the token that completed it); `text` excludes EOS and the stop
    string; `logprobs[i]` is log p(token_ids[i]) under the model (before temperature and filters)."""

    token_ids: list[int]
    text: str
    finish_reason: str  # one of FINISH_REASONS
    logprobs: list[float] = field(default_factory=list)
    tool_calls: int = 0

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)


def sample_seed(seed: int, *indices: int) -> int:
    """The seed of one sample, e.g. sample_seed(run_seed, prompt_index, sample_index): the package's one
    seed scheme, so a completion depends on these numbers and never on batching, slots or resuming."""
    key = "/".join(str(int(i)) for i in (seed, *indices)).encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=4).digest(), "little")
