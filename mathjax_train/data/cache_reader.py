"""Reading a task cache written by `mathjax-train data cache` (data/cache.py) for the trainer.

The cache is SeqIO's format (TFRecord shards + info/stats JSON + COMPLETED) with one layout rule:
file k of N holds the split's records i with i % N == k, in index order, each carrying its `index`.
A host (shard h of n) reads only files h, h+n, ... when n divides N (else every file, keeping
i % n == h), so it gets records[h::n] in order: exactly the uncached TaskReader's rows, pre-tokenized.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import seqio
import tensorflow as tf

from mathjax_train.config import ConfigError, DataConfig, InputError
from mathjax_train.data.run_dir import SettingsMismatchError, diff_settings

META_FILE = "mathjax_cache.json"  # what the cache was built from (checked before training reads it)
INDEX, HAS_ANSWER = "index", "has_answer"  # features added to SeqIO's: record index, answer present
LAYOUT = "file k of N holds records i with i % N == k, in index order"
_NOT_IN_EXAMPLES = (
    "mixture",
    "tokenizer",
    "pack",
    "overflow",
    "rates",
    "procedural_levels",
    "procedural_templates",
    "seed",
    "cache_dir",
)
_TASK_INPUTS = {"synthetic": "jsonl", "gsm8k_sft": "data_dir", "math_sft": "data_dir"}
_READ_BATCH = 1024


def example_settings(task: str, data: DataConfig, tokenizer_sha256: str) -> dict:
    """The data settings a task's cached examples depend on (everything but sampling, packing and the
    other tasks' inputs), plus the tokenizer files' hash; a new DataConfig field counts by default."""
    out = {f.name: getattr(data, f.name) for f in dataclasses.fields(data) if f.name not in _NOT_IN_EXAMPLES}
    for key in set(_TASK_INPUTS.values()) - {_TASK_INPUTS.get(task)}:
        out.pop(key, None)
    if "data_dir" in out:
        out["data_dir"] = data.data_dir or os.environ.get("MATHJAX_DATA_DIR", "")
    out["tokenizer_sha256"] = tokenizer_sha256
    return json.loads(json.dumps(out))  # lists, not tuples: comparable with the JSON on disk


def task_dir(cache_dir: str, task: str) -> str:
    return os.path.join(cache_dir, seqio.get_task_dir_from_name(task))


def shard_path(directory: str, split: str, k: int, num_files: int) -> str:
    """SeqIO's cached file name (`{split}.tfrecord-00003-of-00064`)."""
    return f"{seqio.get_cached_tfrecord_prefix(directory, split)}-{k:05d}-of-{num_files:05d}"


def read_meta(directory: str) -> dict | None:
    """The cache's metadata, or None when the task is not (completely) cached in `directory`."""
    if not tf.io.gfile.exists(os.path.join(directory, "COMPLETED")):
        return None
    path = os.path.join(directory, META_FILE)
    if not tf.io.gfile.exists(path):
        raise ConfigError(
            f"{directory}: has COMPLETED but no {META_FILE}; it was not written by `mathjax-train data "
            "cache` (re-run that command with --overwrite)"
        )
    with tf.io.gfile.GFile(path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from None


def check_settings(directory: str, meta: dict, expected: dict) -> None:
    """A clear error when the cache was built from other files or settings than this run's."""
    diff = diff_settings(meta.get("example_settings", {}), expected)
    if diff:
        raise SettingsMismatchError(
            f"data.cache_dir: {os.path.join(directory, META_FILE)}",
            "the cache was built with other settings than this run's",
            diff,
            "re-run `mathjax-train data cache ... --overwrite`, or fix the config",
            prefix="data.",
            sides=("cached", "now"),
        )


def find_cached(data: DataConfig, tokenizer_sha256: str, tasks, split: str) -> dict[str, str]:
    """task -> cache directory, for the tasks of `tasks` cached under `data.cache_dir` with `split`.
    An error if none of them is there at all (a wrong path should not silently mean "read the source")."""
    found, cached_other_splits = {}, []
    for name in tasks:
        directory = task_dir(data.cache_dir, name)
        meta = read_meta(directory)
        if meta is None:
            continue
        check_settings(directory, meta, example_settings(name, data, tokenizer_sha256))
        if split in meta.get("splits", {}):
            found[name] = directory
        else:
            cached_other_splits.append(name)
    if not found and not cached_other_splits:
        raise ConfigError(
            f"data.cache_dir={data.cache_dir}: none of the tasks {', '.join(tasks)} is cached there "
            f"(expected <cache_dir>/<task>/COMPLETED); write one with `mathjax-train data cache "
            f"--task synthetic --output-dir {data.cache_dir}`"
        )
    return found


class CachedShard:
    """One host's share of a cached split, in record-index order: `example(i)` -> (prompt ids,
    target ids, has_answer) of record h + i*n, the same ids the uncached path tokenizes."""

    def __init__(self, directory: str, split: str, shard: seqio.ShardInfo):
        self.directory, self.split = directory, split
        meta = read_meta(directory)
        if meta is None or split not in meta.get("splits", {}):
            raise ConfigError(f"{directory}: split {split!r} is not cached there")
        info = meta["splits"][split]
        total, num_files = int(info["examples"]), int(info["files"])
        files = [shard_path(directory, split, k, num_files) for k in range(num_files)]
        missing = [f for f in files if not tf.io.gfile.exists(f)]
        if missing:
            raise ConfigError(f"{directory}: {len(missing)} of {num_files} cache files are missing, e.g. {missing[0]}")
        h, n = shard.index, shard.num_shards
        self.read_all_files = num_files % n != 0  # then each host reads every file and keeps its records
        mine = files if self.read_all_files else files[h::n]
        try:
            index, self._prompts, self._targets, has_answer = self._load(mine, h, n)
        except tf.errors.OpError as e:  # a truncated or foreign file
            raise InputError(f"{directory}: cannot read the cached split {split!r}: {e.message}") from None
        order = np.argsort(index, kind="stable")
        expected = np.arange(h, total, n)
        if len(index) != len(expected) or not np.array_equal(index[order], expected):
            raise InputError(
                f"{directory}: split {split!r} shard {h} of {n}: the cache holds {len(index)} of the "
                f"{len(expected)} expected records (indices {h}, {h + n}, ... < {total}); it is "
                "incomplete or corrupt: re-run `mathjax-train data cache ... --overwrite`"
            )
        self._order, self._has_answer = order, has_answer

    @staticmethod
    def _load(files: list[str], h: int, n: int):
        spec = {
            INDEX: tf.io.FixedLenFeature([], tf.int64),
            HAS_ANSWER: tf.io.FixedLenFeature([], tf.int64),
            "inputs": tf.io.RaggedFeature(tf.int64),
            "targets": tf.io.RaggedFeature(tf.int64),
        }

        def parse(batch):
            ex = tf.io.parse_example(batch, spec)
            for key in ("inputs", "targets"):
                ex[key] = (ex[key].flat_values, ex[key].row_lengths())
            return ex

        ds = tf.data.TFRecordDataset(files).batch(_READ_BATCH).map(parse)
        index, has_answer, prompts, targets = [], [], _Ragged(), _Ragged()
        for batch in ds.as_numpy_iterator():
            keep = batch[INDEX] % n == h
            index.append(batch[INDEX][keep])
            has_answer.append(batch[HAS_ANSWER][keep].astype(bool))
            prompts.add(batch["inputs"], keep)
            targets.add(batch["targets"], keep)
        return _concat(index, np.int64), prompts.done(), targets.done(), _concat(has_answer, bool)

    def __len__(self) -> int:
        return len(self._order)

    def example(self, i: int) -> tuple[list[int], list[int], bool]:
        o = self._order[i]
        return self._prompts.row(o), self._targets.row(o), bool(self._has_answer[o])


def _concat(parts: list[np.ndarray], dtype) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, dtype)


class _Ragged:
    """Rows of token ids as one flat int32 array and row offsets (compact for millions of rows)."""

    def __init__(self):
        self._values, self._lengths = [], []

    def add(self, ragged: tuple[np.ndarray, np.ndarray], keep: np.ndarray) -> None:
        values, lengths = ragged  # a batch's rows: flat values and row lengths
        self._values.append(values[np.repeat(keep, lengths)].astype(np.int32))
        self._lengths.append(lengths[keep])

    def done(self) -> "_Ragged":
        lengths = _concat(self._lengths, np.int64)
        self.values = _concat(self._values, np.int32)
        self.starts = np.cumsum(lengths) - lengths
        self.lengths = lengths
        del self._values, self._lengths
        return self

    def row(self, i: int) -> list[int]:
        s = self.starts[i]
        return self.values[s : s + self.lengths[i]].tolist()
