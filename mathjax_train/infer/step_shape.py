"""What the engine's next decode step looks like: how many tokens a chunk runs, whether it ends early,
and whether it verifies speculative drafts instead. Pure policy over the running rows; no device work."""

from __future__ import annotations

from typing import Sequence

from mathjax_train.infer.rows import SeqState

SMALL_BATCH = 8  # rows at or below which decode chunks adapt to stops and waiting rows, and drafts are verified


def chunk_limits(running: Sequence[SeqState], pending: bool, decode_steps: int) -> tuple[int, bool]:
    """(steps, exit_on_end) of the next chunk. Stop strings are checked, and waiting rows admitted, between
    chunks; a row that has met its stop string, or a slot a waiting row could take, idles until the chunk
    ends. In a small batch (at most SMALL_BATCH rows: a server's few clients, a job's tail) that idle row
    is a large share of the work and a chunk boundary is cheap, so chunks there are a quarter of
    `decode_steps` when a row has stop strings or rows wait (`pending`), and with rows waiting a chunk
    also ends as soon as any row ends."""
    if len(running) > SMALL_BATCH:
        return decode_steps, False
    short = pending or any(r.params.stop for r in running)
    return (max(1, decode_steps // 4) if short else decode_steps), pending


def speculates(running: Sequence[SeqState], speculative_tokens: int, exact: bool, ragged_pool: bool) -> bool:
    """Whether the next step verifies drafts (infer/speculate.py): a small batch of greedy rows, on a kernel
    that reads pages by table (not the in-place ragged pool) and outside the exact (batch-invariant) mode."""
    return (
        speculative_tokens > 0
        and not exact
        and not ragged_pool
        and len(running) <= SMALL_BATCH
        and all(r.params.temperature == 0 for r in running)
    )
