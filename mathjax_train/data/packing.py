"""Fitting examples to the sequence length, and planning which examples share a batch's rows.

An example (prompt ids, target ids) occupies len(prompt) + len(target) - 1 slots (inputs are
shifted by one). Overlong examples are truncated (target cut at the end) or dropped, by config;
the caller counts both. `RowPlanner` places examples first-fit one at a time, so a caller (the SeqIO
mixture iterator, the toy task) can stop when the batch is full and keep the misfits; `pack_examples`
packs a list that must fit (hand-made batches). Both lay rows out with `RowPlanner.batch`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from mathjax_train.data.batches import empty_batch
from mathjax_train.errors import InputError

OK, TRUNCATED, DROPPED = "ok", "truncated", "dropped"


def slots(prompt: Sequence[int], target: Sequence[int]) -> int:
    return len(prompt) + len(target) - 1


def fit_example(prompt: list[int], target: list[int], seq_len: int, overflow: str):
    """(prompt, target, status): status is ok, truncated or dropped (then prompt/target are None).

    Truncation keeps the prompt whole and cuts the target; an example whose prompt alone leaves no
    target token inside seq_len is dropped even in truncate mode (it would carry no loss).
    """
    if slots(prompt, target) <= seq_len:
        return prompt, target, OK
    if overflow == "drop" or len(prompt) > seq_len:
        return None, None, DROPPED
    if overflow != "truncate":
        raise InputError(f"data.overflow: {overflow!r} is not one of truncate, drop")
    return prompt, target[: seq_len + 1 - len(prompt)], TRUNCATED


class RowPlanner:
    """First-fit placement of examples into `rows` rows of `seq_len` slots (one per row if not `pack`)."""

    def __init__(self, rows: int, seq_len: int, pack: bool = True):
        self.seq_len, self.pack = seq_len, pack
        self.room = [seq_len] * rows
        self.used = [False] * rows
        self.placed: list[tuple[int, list[int], list[int]]] = []  # (row, prompt, target)
        self.tags: list = []  # the caller's label for each placed example

    def row_for(self, n: int) -> int | None:
        """The first row with room for an example of `n` slots, if any."""
        return next((r for r, room in enumerate(self.room) if room >= n and (self.pack or not self.used[r])), None)

    def try_add(self, prompt: list[int], target: list[int], tag=None) -> bool:
        n = slots(prompt, target)
        r = self.row_for(n)
        if r is None:
            return False
        self.room[r] -= n
        self.used[r] = True
        self.placed.append((r, prompt, target))
        self.tags.append(tag)
        return True

    @property
    def full(self) -> bool:
        return all(self.used) if not self.pack else max(self.room) == 0

    @property
    def tokens(self) -> int:
        return sum(self.seq_len - r for r in self.room)

    def batch(self) -> dict[str, np.ndarray]:
        """The planned rows as a batch in the layout of data/batches.py: each example is tokens = prompt +
        target[:-1], targets = (prompt + target)[1:], loss weight on the slots that predict target tokens."""
        batch = empty_batch(len(self.room), self.seq_len)
        fill = [0] * len(self.room)
        segs = [0] * len(self.room)
        for r, prompt, target in self.placed:
            seq = np.asarray([*prompt, *target], np.int32)
            n, s = len(seq) - 1, fill[r]
            segs[r] += 1
            batch["tokens"][r, s : s + n] = seq[:-1]
            batch["targets"][r, s : s + n] = seq[1:]
            batch["positions"][r, s : s + n] = np.arange(n)
            batch["segment_ids"][r, s : s + n] = segs[r]
            batch["loss_weights"][r, s + max(len(prompt) - 1, 0) : s + n] = 1.0  # slots predicting target tokens
            fill[r] += n
        return batch


def pack_examples(examples, rows: int, seq_len: int) -> dict[str, np.ndarray]:
    """Pack (prompt_ids, target_ids) pairs first-fit into `rows` rows of `seq_len`; they must fit
    (callers fit or drop the long ones first). Raises ValueError when one does not."""
    plan = RowPlanner(rows, seq_len)
    for prompt, target in examples:
        n = slots(prompt, target)
        if n < 1 or n > seq_len:
            raise ValueError(f"an example of {n + 1} tokens does not fit seq_len {seq_len}")
        if not plan.try_add(list(prompt), list(target)):
            raise ValueError(f"the examples do not fit in {rows} rows of {seq_len}")
    return plan.batch()
