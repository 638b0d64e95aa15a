"""Per-host batches: each host loads only its own rows, and the global batch is assembled from them."""

from __future__ import annotations

import jax

from mathjax_train.errors import InputError
import numpy as np


def host_rows(global_batch: int) -> int:
    """Rows this host loads per step (the global batch split evenly over processes)."""
    n = jax.process_count()
    if global_batch % n:
        raise InputError(f"train.batch_size ({global_batch}) must be a multiple of the number of hosts ({n})")
    return global_batch // n


def global_batch(local: dict[str, np.ndarray], sharding) -> dict[str, jax.Array]:
    """Process-local numpy rows -> global jax arrays laid out by `sharding` (no host sees others' rows)."""
    n = jax.process_count()
    out = {}
    for k, v in local.items():
        shape = (v.shape[0] * n,) + v.shape[1:]
        out[k] = jax.make_array_from_process_local_data(sharding, v, shape)
    return out


def whole_batch(rows: dict[str, np.ndarray], sharding) -> dict[str, jax.Array]:
    """A batch every host holds whole (rl's rollouts, gathered) -> global arrays laid out by `sharding`, each
    host placing the rows its devices hold."""

    def place(v: np.ndarray) -> jax.Array:
        return jax.make_array_from_callback(v.shape, sharding, lambda idx: v[idx])

    return {k: place(v) for k, v in rows.items()}
