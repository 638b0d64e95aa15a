"""The SeqIO cache job (Apache Beam, DirectRunner) on a small synthetic JSONL task: SeqIO's cache files,
the same ids as the uncached path (through SeqIO and through the trainer's iterator, per host), and
2 training steps from the cache through the real trainer."""

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import seqio

from data_fixtures import MATH_TRAIN, synthetic_rows, write_jsonl, write_manual_dir
from hf_fixtures import write_tokenizer
from mathjax_train.cli import main
from mathjax_train.config import ConfigError, load_config
from mathjax_train.data import cache_reader, pipeline, tasks
from mathjax_train.data.seqio_vocab import TokenizerVocabulary

pytestmark = pytest.mark.slow
ROWS, FILES = 300, 4
SMOKE = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"


def _overrides(paths, *extra):
    return [
        f"data.tokenizer={paths['tok']}",
        f"data.jsonl=[{paths['synth']}]",
        f"data.data_dir={paths['manual']}",
        "data.mixture=synthetic",
        "train.seq_len=256",
        "train.batch_size=4",
        *extra,
    ]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    write_tokenizer(root / "tok")
    write_jsonl(root / "synth.jsonl", synthetic_rows(ROWS))
    write_manual_dir(root / "manual")  # MATH train has a row without an answer: has_answer must survive
    paths = {
        "tok": str(root / "tok"),
        "synth": str(root / "synth.jsonl"),
        "cache": str(root / "cache"),
        "manual": str(root / "manual"),
    }
    code = main(
        [
            "data",
            "cache",
            "--task",
            "synthetic",
            "--task",
            "math_sft",
            "--output-dir",
            paths["cache"],
            "--num-files",
            str(FILES),
            *_overrides(paths),
            "--",
            "--direct_num_workers=1",
        ]
    )
    assert code == 0
    return paths


def _cfg(paths, *extra, cached=True):
    return load_config(None, _overrides(paths, *extra, *([f"data.cache_dir={paths['cache']}"] if cached else [])))


def test_cache_job_writes_seqio_cache_files(built):
    d = Path(built["cache"]) / "synthetic"
    shards = sorted(p.name for p in d.glob("train.tfrecord-*"))
    assert shards == [f"train.tfrecord-{k:05d}-of-{FILES:05d}" for k in range(FILES)]
    assert (d / "COMPLETED").exists() and not list(d.glob("*incomplete*"))
    info, stats = json.loads((d / "info.train.json").read_text()), json.loads((d / "stats.train.json").read_text())
    assert info["num_shards"] == FILES
    assert info["features"]["inputs"] == {"dtype": "int32", "shape": [None]}
    assert info["features"]["targets"] == {"dtype": "int32", "shape": [None]}
    assert info["features"]["index"] == {"dtype": "int64", "shape": []}
    assert stats["examples"] == ROWS and stats["targets_tokens"] > 0
    meta = json.loads((d / cache_reader.META_FILE).read_text())
    assert meta["splits"]["train"]["examples"] == ROWS and meta["source_read"] == {"records": ROWS, "blank_lines": 0}
    assert meta["example_settings"]["jsonl"] == [built["synth"]]


def _ids(ds):
    return sorted(
        (e["inputs"].tolist(), e["targets"].tolist(), e["inputs_pretokenized"], e["targets_pretokenized"], e["id"])
        for e in ds.as_numpy_iterator()
    )


def test_seqio_reads_the_cache_with_the_uncached_ids(built):
    vocab = TokenizerVocabulary(built["tok"])
    before = list(seqio.utils.get_global_cache_dirs())
    try:
        seqio.add_global_cache_dirs([built["cache"]])
        tasks.register(_cfg(built, cached=False).data, vocab)
        task = seqio.get_mixture_or_task("synthetic")
        assert task.cache_dir == str(Path(built["cache"]) / "synthetic")
        for shard in (None, seqio.ShardInfo(index=1, num_shards=2)):
            kw = dict(sequence_length=None, split="train", shuffle=False, shard_info=shard)
            cached, uncached = _ids(task.get_dataset(use_cached=True, **kw)), _ids(task.get_dataset(**kw))
            assert len(cached) == (ROWS if shard is None else ROWS // 2)
            assert cached == uncached
    finally:
        seqio.utils.set_global_cache_dirs(before)


@pytest.mark.parametrize("index,num_shards", [(0, 1), (1, 2), (2, 3)])
def test_cached_reader_gives_the_uncached_examples_in_order(built, index, num_shards):
    vocab = TokenizerVocabulary(built["tok"])
    tasks.register(_cfg(built).data, vocab)
    source = seqio.get_mixture_or_task("synthetic").source
    shard = seqio.ShardInfo(index=index, num_shards=num_shards)
    rows = cache_reader.CachedShard(str(Path(built["cache"]) / "synthetic"), "train", shard)
    assert rows.read_all_files == (FILES % num_shards != 0)  # 3 hosts on 4 files: every file, filtered
    plain = pipeline.TaskReader("synthetic", source, vocab, "train", shard, seed=5)
    cached = pipeline.TaskReader("synthetic", source, vocab, "train", shard, seed=5, cached=rows)
    assert cached.size == plain.size == len(range(index, ROWS, num_shards))
    for j in range(2 * plain.size + 3):  # two shuffled epochs and then some
        assert cached.example(j) == plain.example(j), j


def test_cached_math_rows_keep_has_answer(built):
    vocab = TokenizerVocabulary(built["tok"])
    tasks.register(_cfg(built).data, vocab)
    shard = seqio.ShardInfo(index=0, num_shards=1)
    rows = cache_reader.CachedShard(str(Path(built["cache"]) / "math_sft"), "train", shard)
    plain = pipeline.TaskReader("math_sft", seqio.get_mixture_or_task("math_sft").source, vocab, "train", shard, 0)
    assert [rows.example(i) for i in range(len(rows))] == [plain._tokenize(r) for r in plain.rows]
    assert len(rows) == len(MATH_TRAIN) and [rows.example(i)[2] for i in range(len(rows))].count(False) == 1


def _batches(cfg, n, **kw):
    it = pipeline.make_iterator(cfg, rows=cfg.train.batch_size, **kw)
    return [next(it) for _ in range(n)], it


def test_iterator_from_cache_equals_uncached_and_resumes(built):
    for kw in ({}, {"shard_index": 1, "num_shards": 2}):
        a, it_a = _batches(_cfg(built, "data.overflow=drop", "train.seq_len=224", cached=False), 12, **kw)
        b, it_b = _batches(_cfg(built, "data.overflow=drop", "train.seq_len=224"), 12, **kw)
        for x, y in zip(a, b):
            assert x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x)
        sa, sb = it_a.stats(), it_b.stats()
        assert sb["tasks"]["synthetic"].pop("read_from") == "cache:" + str(Path(built["cache"]) / "synthetic")
        assert sa["tasks"]["synthetic"].pop("read_from") == "source"
        assert sa == sb and sa["dropped"] > 0  # same packing and overflow counts
    state = it_b.get_state()
    resumed = pipeline.make_iterator(
        _cfg(built, "data.overflow=drop", "train.seq_len=224"), rows=4, shard_index=1, num_shards=2
    )
    resumed.set_state(state)
    later, _ = _batches(
        _cfg(built, "data.overflow=drop", "train.seq_len=224", cached=False), 15, shard_index=1, num_shards=2
    )
    for x, y in zip([next(resumed) for _ in range(3)], later[12:]):
        assert all(np.array_equal(x[k], y[k]) for k in x)


def test_train_two_steps_from_the_cache(built, tmp_path):
    from mathjax_train.train.trainer import train

    jsonl = Path(built["synth"])
    hidden = jsonl.with_suffix(".away")
    jsonl.rename(hidden)  # proves training reads the cache: the source file is not there
    try:
        cfg = load_config(
            str(SMOKE),
            [
                f"output_dir={tmp_path / 'run'}",
                "model.vocab_size=320",
                "model.bos_token_id=1",
                "model.eos_token_id=[2]",
                "train.steps=2",
                "train.log_every_steps=1",
                "checkpoint.every_steps=2",
                *_overrides(built),
                f"data.cache_dir={built['cache']}",
                "train.batch_size=8",
            ],
        )
        summary = train(cfg, log=lambda *_: None)
    finally:
        hidden.rename(jsonl)
    assert summary["status"] == "finished" and summary["step"] == 2
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2] and all(math.isfinite(m["loss"]) for m in metrics)
    assert (tmp_path / "run" / "checkpoints" / "2").is_dir()
    assert summary["data_state"]["counters"]["tasks"]["synthetic"]["examples"] > 0


def test_cache_errors_are_clear(built, tmp_path, capsys):
    with pytest.raises(
        ConfigError,
        match=r"mathjax_cache.json: the cache was built .*\(cached -> now: data\.template: 'alpaca_rft' -> 'question_answer'",
    ):
        pipeline.make_iterator(_cfg(built, "data.template=question_answer"), rows=4)
    with pytest.raises(ConfigError, match="none of the tasks synthetic is cached there"):
        pipeline.make_iterator(load_config(None, _overrides(built, f"data.cache_dir={tmp_path}")), rows=4)
    broken = tmp_path / "broken"
    shutil.copytree(built["cache"], broken)
    (broken / "synthetic" / f"train.tfrecord-00002-of-{FILES:05d}").unlink()
    with pytest.raises(ConfigError, match="1 of 4 cache files are missing"):
        pipeline.make_iterator(load_config(None, _overrides(built, f"data.cache_dir={broken}")), rows=4)
    shutil.rmtree(broken)
    shutil.copytree(built["cache"], broken)
    damaged = broken / "synthetic" / f"train.tfrecord-00001-of-{FILES:05d}"
    damaged.write_bytes(damaged.read_bytes()[:-100])  # cut inside the last record
    with pytest.raises(ValueError, match="cannot read the cached split 'train'"):
        pipeline.make_iterator(load_config(None, _overrides(built, f"data.cache_dir={broken}")), rows=4)
    for task, out, message in (
        ("synthetic", built["cache"], "already cached (COMPLETED exists); pass --overwrite"),
        ("procedural", tmp_path / "p", "only finite tasks can be cached"),
        ("gsm8k_math", tmp_path / "m", "'gsm8k_math' is not a task"),
        ("synthetic --split test", tmp_path / "t", "task 'synthetic' has splits train"),
    ):
        argv = ["data", "cache", "--task", *task.split(), "--output-dir", str(out), *_overrides(built)]
        assert main(argv) == 2
        assert message in capsys.readouterr().err
    argv = ["data", "cache", "--task", "synthetic", "--output-dir", str(tmp_path / "r"), "--", "--runner=Flink"]
    assert main(argv) == 2 and "give the runner once, as --runner before `--`" in capsys.readouterr().err
    argv = [
        "data",
        "cache",
        "--task",
        "synthetic",
        "--output-dir",
        "gs://bucket/cache",
        "--runner",
        "DataflowRunner",
        *_overrides(built),
    ]  # refused before anything reaches GCP: workers cannot see this machine's files
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "DataflowRunner workers cannot read or write local paths" in err and f"data.jsonl={built['synth']!r}" in err
