"""The contract between data sources and the trainer: batch fields and a resumable iterator.

A batch is a dict of int32/float32 numpy arrays, each (rows, seq_len), holding only this host's
rows. `tokens[t]` is the input at slot t and `targets[t]` the token to predict there;
`loss_weights` is 1.0 on target (solution) tokens and 0.0 on prompt and padding tokens. Packed
rows carry several examples: `segment_ids` numbers them 1, 2, ... (0 = padding) and `positions`
restarts at 0 for each one. The one packer that fills this layout is `data/packing.py`.
"""

from __future__ import annotations

from typing import Iterator, Protocol

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
