"""Rollouts -> fixed-shape learner arrays: inputs/targets of prompt + completion, a loss mask that is 1
only on sampled completion tokens (never prompt, tool output or padding), the sampler's
log-probabilities and each row's advantage (repeated per token). The batch is padded to a fixed row
count and its rows to a multiple of `BUCKET` tokens (at most `seq_len`), so the learner compiles a
handful of shapes and does not spend its time on padding when completions are short."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

BUCKET = 32  # row widths the learner compiles for: multiples of this, up to train.seq_len


def build_batch(
    prompt_ids: Sequence[Sequence[int]],
    completions: Sequence,
    advantages: Sequence[float],
    seq_len: int,
    rows: int,
    drop: Sequence[bool] = (),
) -> dict[str, np.ndarray]:
    """One row per completion (prompt_ids[i] before completions[i]), then zero rows up to `rows`.
    `drop[i]` trains nothing on row i (e.g. an overlong completion under rl.overlong=filter)."""
    if len(completions) > rows:
        raise ValueError(f"{len(completions)} completions do not fit a batch of {rows} rows")
    out = {
        "tokens": np.zeros((rows, seq_len), np.int32),
        "targets": np.zeros((rows, seq_len), np.int32),
        "positions": np.tile(np.arange(seq_len, dtype=np.int32), (rows, 1)),
        "segment_ids": np.zeros((rows, seq_len), np.int32),
        "loss_mask": np.zeros((rows, seq_len), np.float32),
        "old_logp": np.zeros((rows, seq_len), np.float32),
        "advantages": np.zeros((rows, seq_len), np.float32),
    }
    for i, (prompt, c) in enumerate(zip(prompt_ids, completions)):
        seq = list(prompt) + list(c.token_ids)
        if len(seq) - 1 > seq_len:
            raise ValueError(
                f"row {i}: {len(prompt)} prompt + {len(c.token_ids)} completion tokens exceed "
                f"train.seq_len + 1 = {seq_len + 1}"
            )
        n = len(seq) - 1
        out["tokens"][i, :n], out["targets"][i, :n] = seq[:-1], seq[1:]
        out["segment_ids"][i, :n] = 1
        start = len(prompt) - 1  # the target position of the first completion token
        lp = np.asarray(c.logprobs, np.float64)
        if len(lp) != len(c.token_ids):
            raise ValueError(f"row {i}: {len(lp)} logprobs for {len(c.token_ids)} tokens")
        sampled = np.isfinite(lp)  # tool output carries NaN: it was not sampled, so it is not trained
        if not (drop and drop[i]):
            out["loss_mask"][i, start : start + len(lp)] = sampled
        out["old_logp"][i, start : start + len(lp)] = np.where(sampled, lp, 0.0)
        out["advantages"][i] = advantages[i]  # per token, so every array shards along rows alike
    longest = int(out["segment_ids"].sum(axis=1).max(initial=0))
    width = min(seq_len, max(BUCKET, -(-longest // BUCKET) * BUCKET))
    return {k: v[:, :width] for k, v in out.items()}


def split_rows(batch: dict[str, np.ndarray], parts: int) -> list[dict[str, np.ndarray]]:
    """`parts` minibatches of consecutive rows."""
    rows = len(batch["advantages"])
    size = math.ceil(rows / parts)
    return [{k: v[j : j + size] for k, v in batch.items()} for j in range(0, rows, size)]
