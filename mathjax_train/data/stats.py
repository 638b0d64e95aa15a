"""`data stats`: one pass over a mixture's split through the training pipeline, counted.

Finite tasks are read once each (no repeats); unlimited (procedural) tasks need `max_examples`.
The counts are what training sees: examples read, packed, truncated and dropped, tokens, target
tokens and packing efficiency, per task and in total.
"""

from __future__ import annotations

import time
from typing import Any

from mathjax_train.config import Config
from mathjax_train.data.pipeline import make_iterator


def mixture_stats(cfg: Config, split: str = "train", max_examples: int = 0, rows: int = 0) -> dict:
    """Counts for `cfg.data.mixture` on `split`, packed into batches of `rows` (default train.batch_size)."""
    rows = rows or cfg.train.batch_size
    start = time.perf_counter()
    it = make_iterator(cfg, rows=rows, split=split, num_epochs=1, max_examples=max_examples or None)
    for _ in it:
        pass
    seconds = time.perf_counter() - start
    out: dict[str, Any] = {
        "mixture": cfg.data.mixture,
        "split": split,
        "seq_len": cfg.train.seq_len,
        "rows": rows,
        "overflow": cfg.data.overflow,
        "rates": it.rates,
    }
    out.update(it.stats())
    out["seconds"] = round(seconds, 3)
    out["tokens_per_second"] = round(out["tokens"] / seconds, 1) if seconds > 0 else None
    return out
