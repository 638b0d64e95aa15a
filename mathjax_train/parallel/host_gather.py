"""What the hosts of a run exchange outside the compiled programs: small JSON values (every process gets every
process's value, in process order: two allgathers, the byte lengths, then the bytes padded to the longest) and
barriers."""

from __future__ import annotations

import json
from typing import Any

import jax
import numpy as np


def allgather_json(value: Any) -> list[Any]:
    """[process 0's value, process 1's, ...]; `[value]` on one process (nothing is exchanged)."""
    if jax.process_count() == 1:
        return [value]
    from jax.experimental import multihost_utils

    raw = np.frombuffer(json.dumps(value, sort_keys=True).encode(), np.uint8)
    sizes = np.asarray(multihost_utils.process_allgather(np.asarray([raw.size], np.int64))).reshape(-1)
    buf = np.zeros(int(sizes.max()), np.uint8)
    buf[: raw.size] = raw
    rows = np.asarray(multihost_utils.process_allgather(buf)).reshape(len(sizes), -1)
    return [json.loads(bytes(row[:n])) for row, n in zip(rows, sizes)]


def barrier(name: str) -> None:
    """Every process waits here until all have arrived (no-op on one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)
