"""`data cache`: pre-tokenize finite SeqIO tasks once with Apache Beam (DirectRunner here, Dataflow on GCP).

Writes SeqIO's cache format under OUTPUT_DIR/<task>/ ({split}.tfrecord-K-of-N, info.{split}.json,
stats.{split}.json, COMPLETED), so `get_dataset(use_cached=True)` reads it, plus mathjax_cache.json
(the settings it was built from). Work item k tokenizes the source's shard k of N (records[k::N])
through the task's pre-cache preprocessors and writes file k in index order, each example with its
record `index`: that layout is what lets training hosts read exactly their share (cache_reader.py).
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
import uuid

import apache_beam as beam
import numpy as np
import seqio
import tensorflow as tf
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.runner import PipelineState
from seqio import beam_utils

from mathjax_train.config import Config, ConfigError, DataConfig, InputError, is_remote
from mathjax_train.data import tasks as task_lib
from mathjax_train.data.cache_reader import HAS_ANSWER, INDEX, LAYOUT, META_FILE, example_settings, shard_path, task_dir
from mathjax_train.data.seqio_vocab import TokenizerVocabulary, tokenizer_dir as choose_tokenizer_dir

DEFAULT_NUM_FILES = 64  # files per split: any host count dividing it reads only its own files
_WORKER_TASKS: dict[tuple, seqio.Task] = {}  # per process: the DoFn instances (threads) share one parsed source
_WORKER_LOCK = threading.Lock()


def _worker_task(data: DataConfig, tokenizer_dir: str, name: str, split: str) -> seqio.Task:
    """Task `name` built from the config once in this worker process, its split loaded once and shared
    by all threads."""
    key = (json.dumps(dataclasses.asdict(data), sort_keys=True), tokenizer_dir, name)
    with _WORKER_LOCK:
        if key not in _WORKER_TASKS:
            _WORKER_TASKS[key] = task_lib.build_tasks(data, TokenizerVocabulary(tokenizer_dir), [name])[name]
        _WORKER_TASKS[key].source.records.all(split)
        return _WORKER_TASKS[key]


def to_tf_example(ex: dict) -> tf.train.Example:
    """A cached example as a tf.train.Example, as `seqio.dict_to_tfexample` stores it (ints as int64,
    text as bytes) but built from numpy directly: seqio's version goes through TF ops, ~20x slower."""
    features = {}
    for key, value in ex.items():
        value = np.asarray(value)
        if value.dtype.kind in "iub":
            features[key] = tf.train.Feature(int64_list=tf.train.Int64List(value=value.reshape(-1).tolist()))
        elif value.dtype.kind == "f":
            features[key] = tf.train.Feature(float_list=tf.train.FloatList(value=value.reshape(-1).tolist()))
        elif value.dtype.kind in "SO":
            features[key] = tf.train.Feature(bytes_list=tf.train.BytesList(value=value.reshape(-1).tolist()))
        else:
            raise TypeError(f"cache: feature {key!r} has dtype {value.dtype}, which tf.train.Example cannot hold")
    return tf.train.Example(features=tf.train.Features(feature=features))


class TokenizeShard(beam.DoFn):
    """(split, k) -> the examples of source shard k of N, pre-tokenized; writes them to cache file k.

    The file is written under a temporary name and renamed when complete, and its content depends
    only on (split, k), so a retried work item rewrites the same file."""

    def __init__(self, data: DataConfig, tokenizer_dir: str, task: str, directory: str, num_files: int):
        self.data, self.tokenizer_dir, self.task_name = data, tokenizer_dir, task
        self.directory, self.num_files = directory, num_files

    def process(self, item):
        split, k = item
        n = self.num_files
        task = _worker_task(self.data, self.tokenizer_dir, self.task_name, split)
        source = task.source
        records = source.records.shard(split, k, n)
        ds = source.get_dataset(split, shuffle=False, shard_info=seqio.ShardInfo(index=k, num_shards=n))
        ds = task.preprocess_precache(ds)
        path = shard_path(self.directory, split, k, n)
        partial = f"{path}.incomplete-{uuid.uuid4().hex}"
        count = 0
        with tf.io.TFRecordWriter(partial) as writer:
            for ex in ds.as_numpy_iterator():
                if count >= len(records) or ex["id"].decode() != records[count]["id"]:
                    raise RuntimeError(
                        f"task {self.task_name!r} split {split!r} file {k}: example {count} does not "
                        f"match source record {count} (a preprocessor added, dropped or reordered "
                        "examples); such tasks cannot be cached by index"
                    )
                ex[INDEX] = np.int64(k + count * n)
                ex[HAS_ANSWER] = int(source.formatter(records[count]).has_answer)
                writer.write(to_tf_example(ex).SerializeToString())
                count += 1
                yield ex
        if count != len(records):
            raise RuntimeError(
                f"task {self.task_name!r} split {split!r} file {k}: {count} examples for {len(records)} source records"
            )
        tf.io.gfile.rename(partial, path, overwrite=True)


def _prepare_dir(directory: str, overwrite: bool) -> None:
    if tf.io.gfile.exists(os.path.join(directory, "COMPLETED")) and not overwrite:
        raise InputError(f"{directory}: already cached (COMPLETED exists); pass --overwrite to rebuild it")
    if tf.io.gfile.exists(directory):  # an old cache, or what a failed run left behind
        tf.io.gfile.rmtree(directory)
    tf.io.gfile.makedirs(directory)


def _check_remote(cfg: Config, names, output_dir: str, tokenizer_dir: str) -> None:
    """Dataflow workers see no local files: every path they open must be a URL (gs://...)."""
    paths = {"--output-dir": [output_dir], "data.tokenizer": [tokenizer_dir]}
    if "synthetic" in names:
        paths["data.jsonl"] = list(cfg.data.jsonl)
    if {"gsm8k_sft", "math_sft"} & set(names):
        paths["data.data_dir"] = [cfg.data.data_dir or os.environ.get("MATHJAX_DATA_DIR", "")]
    local = [f"{key}={p!r}" for key, ps in paths.items() for p in ps if not is_remote(p)]
    if local:
        raise InputError("DataflowRunner workers cannot read or write local paths; use gs:// for " + ", ".join(local))


def _plan(tasks: dict[str, seqio.Task], names, splits, num_files: int) -> list[dict]:
    """Per task and split: the source size (read and validated here, before any worker starts) and N."""
    plans = []
    for name in names:
        if name not in task_lib.TASKS:
            raise ConfigError(
                f"--task: {name!r} is not a task; tasks: {', '.join(task_lib.TASKS)} (mixtures are "
                "read from their tasks' caches: cache each finite task)"
            )
        task = tasks[name]
        if not task.supports_caching:
            raise ConfigError(
                f"--task {name}: its examples are generated on the fly without end (procedural); "
                "only finite tasks can be cached"
            )
        for split in splits:
            if split not in task.splits:
                raise ConfigError(f"--split {split}: task {name!r} has splits {', '.join(task.splits)}")
            size = len(task.source.records.all(split))
            if not size:
                raise InputError(f"task {name!r} split {split!r} has no examples to cache")
            plans.append(
                {
                    "task": name,
                    "split": split,
                    "examples": size,
                    "files": min(num_files, size),
                    "records": task.source.records,
                }
            )
    return plans


def cache_tasks(
    cfg: Config,
    names,
    output_dir: str,
    *,
    splits=("train",),
    num_files: int = DEFAULT_NUM_FILES,
    pipeline_args=(),
    overwrite: bool = False,
    log=print,
) -> dict:
    """Run the cache job for tasks `names` of this config; returns a summary per task and split."""
    if not output_dir:
        raise InputError("--output-dir: required (a local directory or gs://bucket/path)")
    if num_files < 1:
        raise InputError(f"--num-files must be >= 1, got {num_files}")
    tok_dir = choose_tokenizer_dir(cfg.data.tokenizer, cfg.init_from)  # the trainer's choice
    with _WORKER_LOCK:  # an in-process runner must not reuse what an earlier job parsed (files may have changed)
        _WORKER_TASKS.clear()
    vocab = TokenizerVocabulary(tok_dir)
    tasks = task_lib.build_tasks(cfg.data, vocab)
    options = PipelineOptions(list(pipeline_args))
    if options.get_all_options().get("runner") == "DataflowRunner":
        _check_remote(cfg, names, output_dir, tok_dir)
    plans = _plan(tasks, list(dict.fromkeys(names)), list(dict.fromkeys(splits)), num_files)
    for name in dict.fromkeys(p["task"] for p in plans):
        _prepare_dir(task_dir(output_dir, name), overwrite)
    start = time.perf_counter()
    pipeline = beam.Pipeline(options=options)
    for p in plans:
        name, split, n = p["task"], p["split"], p["files"]
        directory, label = task_dir(output_dir, name), f"{name}_{split}"
        examples = (
            pipeline
            | f"{label}_work" >> beam.Create([(split, k) for k in range(n)])
            | f"{label}_spread" >> beam.Reshuffle()  # one work item per worker, not all on one
            | f"{label}_tokenize" >> beam.ParDo(TokenizeShard(cfg.data, tok_dir, name, directory, n))
        )
        _ = (
            examples
            | f"{label}_info" >> beam_utils.GetInfo(n)
            | f"{label}_write_info" >> beam_utils.WriteJson(seqio.get_cached_info_path(directory, split))
        )
        _ = (
            examples
            | f"{label}_stats" >> beam_utils.GetStats(tasks[name].output_features)
            | f"{label}_write_stats" >> beam_utils.WriteJson(seqio.get_cached_stats_path(directory, split))
        )
    state = pipeline.run().wait_until_finish()
    seconds = time.perf_counter() - start
    if state != PipelineState.DONE:
        raise RuntimeError(f"the cache pipeline ended in state {state}; nothing was marked COMPLETED")
    return _finish(cfg, vocab, output_dir, plans, seconds, log)


def _finish(cfg: Config, vocab: TokenizerVocabulary, output_dir: str, plans: list[dict], seconds: float, log) -> dict:
    """Check every split's stats against its source size, then write mathjax_cache.json and COMPLETED."""
    tasks: dict[str, dict] = {}
    summary: dict[str, object] = {"output_dir": output_dir, "seconds": round(seconds, 2), "tasks": tasks}
    for name in dict.fromkeys(p["task"] for p in plans):
        directory = task_dir(output_dir, name)
        splits = {}
        for p in (p for p in plans if p["task"] == name):
            with tf.io.gfile.GFile(seqio.get_cached_stats_path(directory, p["split"])) as f:
                stats = json.load(f)
            if stats.get("examples") != p["examples"]:
                raise RuntimeError(
                    f"{directory}: split {p['split']!r} cached {stats.get('examples')} examples, the "
                    f"source has {p['examples']}"
                )
            splits[p["split"]] = {
                "examples": p["examples"],
                "files": p["files"],
                "inputs_tokens": stats.get("inputs_tokens"),
                "targets_tokens": stats.get("targets_tokens"),
            }
        records = next(p["records"] for p in plans if p["task"] == name)  # as read here, not by a worker
        read = dataclasses.asdict(records.read_stats) if records.read_stats else None
        left_out = dict(getattr(records, "below_min_level", {}))  # data.min_level, where that exists
        meta = {
            "task": name,
            "created_by": "mathjax-train data cache",
            "layout": LAYOUT,
            "splits": splits,
            "example_settings": example_settings(name, cfg.data, vocab.fingerprint),
            "source_read": read,
            "below_min_level": left_out,
            "seqio_version": seqio.__version__,
        }
        with tf.io.gfile.GFile(os.path.join(directory, META_FILE), "w") as f:
            f.write(json.dumps(meta, indent=1))
        with tf.io.gfile.GFile(os.path.join(directory, "COMPLETED"), "w") as f:
            f.write("")
        tasks[name] = {"dir": directory, "splits": splits, "source_read": read, "below_min_level": left_out}
        log(json.dumps({"event": "cached", "task": name, "dir": directory, "splits": splits}))
    total = sum(p["examples"] for p in plans)
    summary["examples"] = total
    summary["examples_per_second"] = round(total / seconds, 1) if seconds > 0 else None
    return summary
