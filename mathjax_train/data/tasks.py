"""SeqIO tasks and mixtures of real (GSM8K, MATH), procedural and synthetic (JSONL) math SFT data.

Tasks: gsm8k_sft, math_sft, procedural_gsm, procedural_math, procedural (all templates), synthetic
(the JSONL files in `data.jsonl`). Mixtures: procedural_mix, gsm8k_math, gsm8k_math_synthetic
(real:synthetic = 1:3), gsm8k_math_procedural (real:procedural = 1:3); `data.rates` overrides rates.
Every task yields `inputs` (prompt ids, special tokens as HF adds them) and `targets` (solution ids
ending in EOS). `register(cfg.data, vocab)` (re)registers them all, since the vocabulary, template and
files come from the config at run time. The trainer and the cache job build the tasks they need with
`build_tasks` and never read them back out of the registry.
"""

from __future__ import annotations

import functools
import hashlib

import numpy as np
import seqio
import tensorflow as tf

from mathjax_train.config import ConfigError, DataConfig
from mathjax_train.data.jsonl_source import ReadStats
from mathjax_train.data.seqio_vocab import TokenizerVocabulary
from mathjax_train.data.sft_format import SftFormatter
from mathjax_train.data.sft_records import FiniteRecords, ProceduralRecords, gsm8k_records, jsonl_records, math_records

TASKS = ("gsm8k_sft", "math_sft", "procedural_gsm", "procedural_math", "procedural", "synthetic")
MIXTURES: dict[str, dict[str, float]] = {
    "procedural_mix": {"procedural_gsm": 1.0, "procedural_math": 1.0},
    "gsm8k_math": {"gsm8k_sft": 1.0, "math_sft": 1.0},
    "gsm8k_math_synthetic": {"gsm8k_sft": 0.5, "math_sft": 0.5, "synthetic": 3.0},
    "gsm8k_math_procedural": {"gsm8k_sft": 0.5, "math_sft": 0.5, "procedural": 3.0},
}
EVAL_ONLY_SPLITS = ("test", "math500")  # benchmark test sets: evaluation only, never trained on
_TEXT_FEATURES = ("inputs", "targets", "id", "answer", "source")


def stable_hash(text: str) -> int:
    """A 32-bit integer from a string, the same in every process (unlike hash())."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=4).digest(), "little")


def build_records(name: str, data: DataConfig):
    """The record source of task `name` under this data config."""
    if name == "gsm8k_sft":
        return FiniteRecords(
            name,
            {s: functools.partial(gsm8k_records, data.data_dir, s) for s in ("train", "test")},
            min_level=data.min_level,
        )
    if name == "math_sft":
        return FiniteRecords(
            name,
            {s: functools.partial(math_records, data.data_dir, s) for s in ("train", "test", "math500")},
            min_level=data.min_level,
        )
    if name in ("procedural_gsm", "procedural_math", "procedural"):
        templates = {"procedural_gsm": ["gsm_style"], "procedural_math": ["math_style"]}.get(
            name, list(data.procedural_templates) or None
        )
        return ProceduralRecords(name, templates, data.procedural_levels, data.seed)
    if name == "synthetic":
        stats = ReadStats()
        return FiniteRecords(
            name, {"train": functools.partial(jsonl_records, list(data.jsonl), stats)}, stats, min_level=data.min_level
        )
    raise ConfigError(f"unknown task {name!r}; valid: {', '.join(TASKS)}")


class SftDataSource(seqio.DataSource):
    """Formatted SFT text from a record source; a shard is `records[index::num_shards]`."""

    def __init__(self, records, formatter: SftFormatter):
        # finite sources may be pre-tokenized offline (data/cache.py); procedural ones are unlimited
        super().__init__(splits=records.splits, caching_permitted=not records.unlimited)
        self.records, self.formatter = records, formatter

    @property
    def supports_arbitrary_sharding(self) -> bool:
        return True

    def list_shards(self, split: str) -> list[str]:
        return [split]

    def num_input_examples(self, split: str) -> int | None:
        return None if self.records.unlimited else len(self.records.all(split))

    def text_example(self, record: dict) -> dict:
        text = self.formatter(record)
        return {
            "inputs": text.prompt,
            "targets": text.target,
            "id": record["id"],
            "answer": record["answer"],
            "source": record["source"],
        }

    def get_dataset(
        self,
        split: str = "train",
        shuffle: bool = True,
        seed: int | None = None,
        shard_info: seqio.ShardInfo | None = None,
        *,
        sequence_length=None,
        use_cached=False,
        num_epochs=1,
    ) -> tf.data.Dataset:
        index, n = (shard_info.index, shard_info.num_shards) if shard_info else (0, 1)
        self.records.check_split(split)
        if self.records.unlimited:  # procedural problems are already in random order

            def gen():
                i = index
                while True:
                    yield self.text_example(self.records.get(split, i))
                    i += n
        else:
            rows = self.records.shard(split, index, n)
            order = np.random.default_rng(seed or 0).permutation(len(rows)) if shuffle else range(len(rows))

            def gen():
                for i in order:
                    yield self.text_example(rows[i])

        spec = {k: tf.TensorSpec((), tf.string) for k in _TEXT_FEATURES}
        return tf.data.Dataset.from_generator(gen, output_signature=spec)


def tokenize_sft(dataset: tf.data.Dataset, output_features) -> tf.data.Dataset:
    """Token ids of `inputs` and `targets` from the vocabulary's `encode_prompt` / `encode_target`, the
    functions the trainer's iterator calls, so both paths wrap special tokens one way; the text is kept
    as `*_pretokenized` (as `seqio.preprocessors.tokenize` keeps it)."""
    vocab: TokenizerVocabulary = output_features["targets"].vocabulary

    def fn(ex):
        ex = dict(ex)
        for key, encode in (("inputs", vocab.encode_prompt_tf), ("targets", vocab.encode_target_tf)):
            ex[f"{key}_pretokenized"] = ex[key]
            ex[key] = encode(ex[key])
        return ex

    return dataset.map(fn, num_parallel_calls=1)


def output_features(vocab: TokenizerVocabulary) -> dict[str, seqio.Feature]:
    return {
        "inputs": seqio.Feature(vocab, add_eos=False, dtype=tf.int32),
        "targets": seqio.Feature(vocab, add_eos=True, dtype=tf.int32),
    }


def mixture_rates(name: str, overrides: dict[str, float]) -> dict[str, float]:
    """Task -> rate for mixture or task `name`, with `data.rates` applied; zero-rate tasks left out."""
    if name in MIXTURES:
        rates = dict(MIXTURES[name])
    elif name in TASKS:
        rates = {name: 1.0}
    else:
        raise ConfigError(
            f"data.mixture: {name!r} is not a mixture or task; mixtures: {', '.join(MIXTURES)}; "
            f"tasks: {', '.join(TASKS)}; toy: toy_copy"
        )
    for task, rate in overrides.items():
        if task not in rates:
            raise ConfigError(f"data.rates.{task}: not a task of {name!r} (its tasks: {', '.join(rates)})")
        if rate < 0:
            raise ConfigError(f"data.rates.{task}: must be >= 0, got {rate}")
        rates[task] = float(rate)
    rates = {t: r for t, r in rates.items() if r > 0}
    if not rates:
        raise ConfigError(f"data.rates: every task of {name!r} has rate 0")
    return rates


def build_tasks(data: DataConfig, vocab: TokenizerVocabulary, names=TASKS) -> dict[str, seqio.Task]:
    """The SeqIO tasks `names` for this config and vocabulary (sharing one formatter), not registered:
    the trainer's iterator and the cache job read their sources directly."""
    formatter = SftFormatter(data.template, data.ending, vocab.directory, calculator=data.calculator)
    features = output_features(vocab)
    tasks = {}
    for name in names:
        source = SftDataSource(build_records(name, data), formatter)
        steps: list = [tokenize_sft]
        if source.caching_permitted:  # everything before the placeholder is what `data cache` stores
            steps.append(seqio.CacheDatasetPlaceholder())
        tasks[name] = seqio.Task(
            name, source=source, output_features=features, preprocessors=steps, shuffle_buffer_size=1000
        )
    return tasks


def register(data: DataConfig, vocab: TokenizerVocabulary) -> dict[str, seqio.Task]:
    """(Re)register every task and mixture for this config and vocabulary in SeqIO's registry, for
    code that asks SeqIO by name (`seqio.get_mixture_or_task`); `data.rates` applies to `data.mixture`."""
    tasks = build_tasks(data, vocab)
    for name, task in tasks.items():
        seqio.TaskRegistry.remove(name)
        seqio.TaskRegistry.add_provider(name, task)
    for name in MIXTURES:
        rates = mixture_rates(name, data.rates if name == data.mixture else {})
        seqio.MixtureRegistry.remove(name)
        seqio.MixtureRegistry.add(name, list(rates.items()))
    return tasks
