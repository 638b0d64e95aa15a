"""The contract between data sources and the trainer: batch fields and a resumable iterator.

A batch is a dict of int32/float32 numpy arrays, each (rows, seq_len), holding only this host's
rows. `tokens[t]` is the input at slot t and `targets[t]` the token to predict there;
`loss_weights` is 1.0 on target (solution) tokens and 0.0 on prompt and padding tokens. Packed
rows carry several examples: `segment_ids` numbers them 1, 2, ... (0 = padding) and `positions`
restarts at 0 for each one.
"""

from __future__ import annotations

from typing import Iterator, Protocol

from mathjax_train.config import InputError

import numpy as np

BATCH_FIELDS = ("tokens", "targets", "positions", "segment_ids", "loss_weights")
BATCH_DTYPES = {
    "tokens": np.int32,
    "targets": np.int32,
    "positions": np.int32,
    "segment_ids": np.int32,
    "loss_weights": np.float32,
}


class BatchIterator(Protocol):
    """Deterministic stream of per-host batches whose position can be saved and restored.

    `get_state()` returns a JSON-serializable value; after `set_state(s)` the iterator yields
    exactly what it yielded after the call to `get_state()` that returned `s`.
    """

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]: ...

    def __next__(self) -> dict[str, np.ndarray]: ...

    def get_state(self) -> dict: ...

    def set_state(self, state: dict) -> None: ...

    def stats(self) -> dict: ...


def empty_batch(rows: int, seq_len: int) -> dict[str, np.ndarray]:
    return {k: np.zeros((rows, seq_len), BATCH_DTYPES[k]) for k in BATCH_FIELDS}


def check_batch(batch: dict, rows: int, seq_len: int, where: str = "batch") -> None:
    """Raise ValueError naming the field when a batch does not match the contract."""
    for k in BATCH_FIELDS:
        if k not in batch:
            raise ValueError(f"{where}: field {k!r} is missing")
        if tuple(batch[k].shape) != (rows, seq_len):
            raise ValueError(f"{where}: field {k!r} has shape {tuple(batch[k].shape)}, expected {(rows, seq_len)}")


def pack_examples(examples, rows: int, seq_len: int) -> dict[str, np.ndarray]:
    """Greedy first-fit packing of (prompt_ids, target_ids) pairs into `rows` rows of `seq_len`.

    Each example becomes tokens = prompt + target[:-1], targets = (prompt + target)[1:], with loss
    weight on the positions that predict target tokens. Examples must already fit (callers count
    and truncate or drop the long ones). Raises ValueError when the examples do not fit the rows.
    """
    batch = empty_batch(rows, seq_len)
    fill = [0] * rows
    segs = [0] * rows
    for prompt, target in examples:
        seq = list(prompt) + list(target)
        n = len(seq) - 1
        if n < 1 or n > seq_len:
            raise ValueError(f"an example of {len(seq)} tokens does not fit seq_len {seq_len}")
        r = next((i for i in range(rows) if fill[i] + n <= seq_len), None)
        if r is None:
            raise ValueError("the examples do not fit in the batch")
        s, segs[r] = fill[r], segs[r] + 1
        batch["tokens"][r, s : s + n] = seq[:-1]
        batch["targets"][r, s : s + n] = seq[1:]
        batch["positions"][r, s : s + n] = np.arange(n)
        batch["segment_ids"][r, s : s + n] = segs[r]
        # slot j predicts seq[j+1]; it is a target token when j+1 >= len(prompt)
        batch["loss_weights"][r, s + max(len(prompt) - 1, 0) : s + n] = 1.0
        fill[r] += n
    return batch


class ToyCopyIterator:
    """A learnable toy task that needs no tokenizer: `a b c ... SEP` -> `a b c ...` (copy).

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

    def _examples(self, rng: np.random.Generator):
        out: list[tuple[list[int], list[int]]] = []
        room = [self.seq_len] * self.rows
        while True:
            n = int(rng.integers(self.min_len, self.max_len + 1))
            need = 2 * n + 1  # prompt n + SEP, target n + END, minus the shift
            r = next((i for i in range(self.rows) if room[i] >= need), None)
            if r is None:
                return out
            room[r] -= need
            body = rng.integers(3, self.vocab_size, n).tolist()
            out.append((body + [self.SEP], body + [self.END]))

    def __next__(self) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([self.seed, self.shard_index, self.index])
        self.index += 1
        return pack_examples(self._examples(rng), self.rows, self.seq_len)

    def get_state(self) -> dict:
        return {"kind": "toy_copy", "index": self.index}

    def set_state(self, state: dict) -> None:
        if state.get("kind") != "toy_copy":
            raise InputError(f"data iterator state {state!r} is not a toy_copy state")
        self.index = int(state["index"])

    def stats(self) -> dict:
        return {"batches": self.index}
