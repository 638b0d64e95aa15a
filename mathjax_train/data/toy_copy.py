"""A learnable toy task that needs no tokenizer, so trainer tests run without data files."""

from __future__ import annotations

import numpy as np

from mathjax_train.data.packing import RowPlanner
from mathjax_train.errors import InputError


class ToyCopyIterator:
    """`a b c ... SEP` -> `a b c ... END` (copy), a `BatchIterator` (data/batches.py).

    Prompts are random tokens from [3, vocab_size); 1 is the separator and 2 ends the target.
    Rows are packed with examples of random lengths, so every trainer test exercises packing.
    The state is the number of batches drawn; batch i depends only on (seed, shard, i).
    """

    SEP, END = 1, 2

    def __init__(
        self,
        vocab_size: int,
        rows: int,
        seq_len: int,
        seed: int = 0,
        shard_index: int = 0,
        min_len: int = 2,
        max_len: int | None = None,
    ):
        if vocab_size < 8:
            raise InputError(f"toy_copy needs vocab_size >= 8, got {vocab_size}")
        self.vocab_size, self.rows, self.seq_len = vocab_size, rows, seq_len
        self.seed, self.shard_index = seed, shard_index
        self.min_len = min_len
        self.max_len = max_len or max(min_len, min(16, (seq_len - 2) // 2))
        self.index = 0

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([self.seed, self.shard_index, self.index])
        self.index += 1
        plan = RowPlanner(self.rows, self.seq_len)
        while True:  # examples of random length until one does not fit
            n = int(rng.integers(self.min_len, self.max_len + 1))
            if plan.row_for(2 * n + 1) is None:  # prompt n + SEP, target n + END, minus the shift
                return plan.batch()
            body = rng.integers(3, self.vocab_size, n).tolist()
            plan.try_add(body + [self.SEP], body + [self.END])

    def get_state(self) -> dict:
        return {"kind": "toy_copy", "index": self.index}

    def set_state(self, state: dict) -> None:
        if state.get("kind") != "toy_copy":
            raise InputError(f"data iterator state {state!r} is not a toy_copy state")
        self.index = int(state["index"])

    def stats(self) -> dict:
        return {"batches": self.index}
