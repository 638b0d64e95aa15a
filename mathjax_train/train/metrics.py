"""Training metrics: OUTPUT_DIR/metrics.jsonl, TensorBoard event files, and a progress line.

Only process 0 writes. On resume, rows for steps after the restored checkpoint (written before a
crash) and a line torn by the crash are dropped, so the file keeps one row per step.
"""

from __future__ import annotations

import json
import sys
import time

from etils import epath

from mathjax_train.data.run_dir import JsonlAppender, read_jsonl_repairing

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


def print_line(text: str, stream=None) -> None:
    """`text` and its newline in one write: with unbuffered stdout (PYTHONUNBUFFERED), print() writes
    them apart, and a library logging on the same fd (Gloo on a multi-host run) lands between them."""
    stream = stream or sys.stdout
    stream.write(text + "\n")
    stream.flush()


def format_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def eta_seconds(started: float, done: int, remaining: int) -> float:
    """Time left for `remaining` steps at the pace of the `done` steps since `started` (0 before the first)."""
    return (time.time() - started) / done * remaining if done > 0 else 0.0


class MetricsWriter:
    def __init__(self, output_dir, *, resume_step: int = 0, enabled: bool = True, stream=None):
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.path = epath.Path(output_dir) / METRICS_FILE
        self._tb = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = [r for r in read_jsonl_repairing(self.path).rows if r.get("step", 0) <= resume_step]
        self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        self._out = JsonlAppender(self.path, flush_every_s=0)  # object stores: the file is rewritten each row
        import tensorflow as tf  # TensorBoard's own event format; gs:// paths work through tf.io.gfile

        self._tf = tf
        self._tb = tf.summary.create_file_writer(str(epath.Path(output_dir) / TENSORBOARD_DIR))

    def write(self, row: dict) -> None:
        if not self.enabled:
            return
        self._out.write(json.dumps(row) + "\n")
        assert self._tb is not None  # made in __init__ when enabled
        with self._tb.as_default():
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
                    self._tf.summary.scalar(f"train/{k}", v, step=row["step"])
        self._tb.flush()

    def progress(self, step: int, total: int, row: dict, started: float, start_step: int) -> None:
        if not self.enabled:
            return
        eta = eta_seconds(started, step - start_step, total - step)
        mfu = f" | MFU {100 * row['mfu']:.2f}%" if row.get("mfu") is not None else ""
        print(
            f"step {step}/{total} | loss {row['loss']:.4f} | acc {row['accuracy']:.3f} | "
            f"{row['tokens_per_second']:.0f} tok/s{mfu} | ETA {format_duration(eta)}",
            file=self.stream,
            flush=True,
        )

    def close(self) -> None:
        if self.enabled:
            self._out.close()
        if self._tb is not None:
            self._tb.close()
