"""The trainer's iterator over a SeqIO mixture: per-host, packed, deterministic, exactly resumable.

Tasks and rates come from data/tasks.py (the SeqIO tasks built for this config, not registered);
examples are read by index, not streamed through tf.data, so the state is a few integers: the
mixture slot, how many examples each task has given, and the examples that did not fit the last batch. Slot k picks a task from a
seeded draw; a finite task's j-th example is record perm(seed, task, shard, epoch)[j % size] of this
host's shard, a procedural task's is problem j * num_shards + shard_index.
"""

from __future__ import annotations

import numpy as np
import seqio

from mathjax_train.config import Config, ConfigError, InputError
from mathjax_train.data import cache_reader, tasks as task_lib
from mathjax_train.data.packing import DROPPED, TRUNCATED, RowPlanner, fit_example, slots
from mathjax_train.data.run_dir import SettingsMismatchError, diff_settings
from mathjax_train.data.seqio_vocab import TokenizerVocabulary, tokenizer_dir

STATE_KIND = "sft_mixture"
MAX_MISSES = 8  # examples that did not fit before a batch is closed (they open the next one)
MAX_DROPPED_IN_A_ROW = 10_000  # then the config cannot work: say so instead of spinning
_BLOCK = 4096  # mixture choices drawn per RNG block


class TaskReader:
    """One task's examples on this host, by index j = 0, 1, ...: tokenized (prompt, target, has_answer).
    With `cached` (data/cache_reader.py) the rows come pre-tokenized from `data cache`, in the same order."""

    def __init__(
        self,
        name: str,
        source: task_lib.SftDataSource,
        vocab: TokenizerVocabulary,
        split: str,
        shard: seqio.ShardInfo,
        seed: int,
        cached=None,
    ):
        self.name, self.source, self.vocab, self.split, self.shard = name, source, vocab, split, shard
        self.records, self.cached = source.records, cached
        self.origin = f"cache:{cached.directory}" if cached is not None else "source"
        self._seed = [seed, task_lib.stable_hash(name), shard.index]
        self._perms: dict[int, np.ndarray] = {}
        self._tokens: dict[int, tuple] = {}
        self.size: int | None
        if self.records.unlimited:
            self.records.check_split(split)
            self.size = None
        else:
            self.rows = cached if cached is not None else self.records.shard(split, shard.index, shard.num_shards)
            self.size = len(self.rows)
            if not self.size:
                total = "" if cached is not None else f" ({len(self.records.all(split))} examples in all)"
                raise InputError(
                    f"task {name!r} split {split!r}: shard {shard.index} of {shard.num_shards} is empty{total}"
                )

    def _perm(self, epoch: int) -> np.ndarray:
        assert self.size is not None, "only a task of known size is permuted"
        if epoch not in self._perms:
            if len(self._perms) > 2:
                self._perms.pop(min(self._perms))
            self._perms[epoch] = np.random.default_rng([*self._seed, epoch]).permutation(self.size)
        return self._perms[epoch]

    def _tokenize(self, record: dict) -> tuple[list[int], list[int], bool]:
        text = self.source.formatter(record)
        return self.vocab.encode_prompt(text.prompt), self.vocab.encode_target(text.target), text.has_answer

    def example(self, j: int) -> tuple[list[int], list[int], bool]:
        if self.size is None:
            return self._tokenize(self.records.get(self.split, j * self.shard.num_shards + self.shard.index))
        i = int(self._perm(j // self.size)[j % self.size])
        if self.cached is not None:
            return self.cached.example(i)
        if i not in self._tokens:
            self._tokens[i] = self._tokenize(self.rows[i])
        return self._tokens[i]


class MixtureSampler:
    """Which task mixture slot k draws from: a seeded choice by rate, in blocks of _BLOCK slots."""

    def __init__(self, rates: dict[str, float], seed: int, shard_index: int):
        self.names = list(rates)
        total = sum(rates.values())
        self.p = np.asarray([rates[n] / total for n in self.names])
        self._seed = [seed, shard_index, 0x6D6978]
        self._block: int | None = None
        self._choices: np.ndarray | None = None

    def task_at(self, slot: int) -> str:
        if len(self.names) == 1:
            return self.names[0]
        block = slot // _BLOCK
        if block != self._block:
            rng = np.random.default_rng([*self._seed, block])
            self._choices, self._block = rng.choice(len(self.names), size=_BLOCK, p=self.p), block
        assert self._choices is not None  # drawn above for the first block
        return self.names[self._choices[slot % _BLOCK]]


def _zero_counters(names) -> dict:
    task = {"examples": 0, "packed_examples": 0, "tokens": 0, "truncated": 0, "dropped": 0, "no_answer": 0}
    return {
        "batches": 0,
        "examples": 0,
        "packed_examples": 0,
        "tokens": 0,
        "target_tokens": 0,
        "truncated": 0,
        "dropped": 0,
        "no_answer": 0,
        "tasks": {n: dict(task) for n in names},
    }


class SftMixtureIterator:
    """Packed batches from a mixture of tasks; see the module docstring for how it is addressed.

    `num_epochs` (stats only): finite tasks stop after that many passes and the stream ends when all
    are done; `max_examples` caps the examples drawn (needed for unlimited tasks in that mode).
    """

    def __init__(
        self,
        readers: dict[str, TaskReader],
        rates: dict[str, float],
        *,
        rows: int,
        seq_len: int,
        overflow: str,
        pack: bool,
        seed: int,
        shard: seqio.ShardInfo,
        identity: dict,
        num_epochs: int | None = None,
        max_examples: int | None = None,
    ):
        self.readers, self.rates = readers, rates
        self.rows, self.seq_len, self.overflow, self.pack = rows, seq_len, overflow, pack
        self.identity, self.num_epochs, self.max_examples = identity, num_epochs, max_examples
        unlimited = [n for n, r in readers.items() if r.size is None]
        if num_epochs is not None and unlimited and not max_examples:
            raise InputError(
                f"task(s) {', '.join(unlimited)} are unlimited: give a maximum number of examples (--max-examples N)"
            )
        self.sampler = MixtureSampler(rates, seed, shard.index)
        self.slot, self.counts = 0, {n: 0 for n in readers}
        self.pending: list[tuple[str, int]] = []  # drawn (task, j) that fitted seq_len but not the last batch
        # fitted pending examples, so they are not re-made
        self._cache: dict[tuple[str, int], tuple[list[int], list[int]]] = {}
        self.counters = _zero_counters(readers)

    def __iter__(self):
        return self

    def _exhausted(self, name: str) -> bool:
        size = self.readers[name].size
        return self.num_epochs is not None and size is not None and self.counts[name] >= size * self.num_epochs

    def _draw(self) -> tuple[str, int] | None:
        if self.max_examples is not None and self.counters["examples"] >= self.max_examples:
            return None
        if all(self._exhausted(n) for n in self.readers):
            return None
        while True:
            name = self.sampler.task_at(self.slot)
            self.slot += 1
            if not self._exhausted(name):
                j = self.counts[name]
                self.counts[name] += 1
                return name, j

    def _fitted(self, ref: tuple[str, int], count: bool) -> tuple[list[int], list[int]] | None:
        """The example `ref` fitted to seq_len, or None when dropped; counted once, when first drawn."""
        if ref in self._cache:
            return self._cache.pop(ref)
        prompt, target, has_answer = self.readers[ref[0]].example(ref[1])
        prompt, target, status = fit_example(prompt, target, self.seq_len, self.overflow)
        if count:
            c, t = self.counters, self.counters["tasks"][ref[0]]
            for d in (c, t):
                d["examples"] += 1
                d["truncated"] += status == TRUNCATED
                d["dropped"] += status == DROPPED
                d["no_answer"] += not has_answer
        return None if status == DROPPED else (prompt, target)

    def __next__(self) -> dict[str, np.ndarray]:
        plan, kept, misses = RowPlanner(self.rows, self.seq_len, self.pack), [], 0
        for held in self.pending:
            ex = self._fitted(held, count=False)
            assert ex is not None, "pending holds only examples that fitted seq_len"
            if not plan.try_add(ex[0], ex[1], tag=held[0]):
                kept.append(held)
                self._cache[held] = ex
                misses += 1
        dropped = 0
        while misses < MAX_MISSES and not plan.full:
            ref = self._draw()
            if ref is None:
                break
            ex = self._fitted(ref, count=True)
            if ex is None:
                dropped += 1
                if dropped >= MAX_DROPPED_IN_A_ROW and not plan.placed:
                    raise InputError(
                        f"data: {dropped} examples in a row were dropped as longer than train.seq_len "
                        f"({self.seq_len}); raise train.seq_len or use data.overflow=truncate"
                    )
                continue
            if not plan.try_add(ex[0], ex[1], tag=ref[0]):
                kept.append(ref)
                self._cache[ref] = ex
                misses += 1
        self.pending = kept
        if not plan.placed:
            raise StopIteration
        batch = plan.batch()
        c = self.counters
        c["batches"] += 1
        c["packed_examples"] += len(plan.placed)
        c["tokens"] += plan.tokens
        c["target_tokens"] += int(batch["loss_weights"].sum())
        for (_, prompt, target), name in zip(plan.placed, plan.tags):
            t = c["tasks"][name]
            t["packed_examples"] += 1
            t["tokens"] += slots(prompt, target)
        return batch

    def get_state(self) -> dict:
        return {
            "kind": STATE_KIND,
            "identity": dict(self.identity),
            "slot": self.slot,
            "counts": dict(self.counts),
            "pending": [list(r) for r in self.pending],
            "counters": _copy(self.counters),
        }

    def set_state(self, state: dict) -> None:
        if not isinstance(state, dict) or state.get("kind") != STATE_KIND:
            raise InputError(f"data iterator state is not a {STATE_KIND} state: {str(state)[:200]}")
        diff = diff_settings(state.get("identity", {}), self.identity, self.identity)
        if diff:
            raise SettingsMismatchError(
                "the checkpoint's data state",
                "it belongs to a different data stream",
                diff,
                "resume with the data settings it was saved with, or use a new output_dir",
                sides=("saved", "now"),
            )
        self.slot = int(state["slot"])
        self.counts = {n: int(state["counts"].get(n, 0)) for n in self.readers}
        self.pending = [(str(t), int(j)) for t, j in state["pending"]]
        self._cache.clear()
        self.counters = _copy(state["counters"])

    def stats(self) -> dict:
        c = _copy(self.counters)
        capacity = c["batches"] * self.rows * self.seq_len
        c["packing_efficiency"] = round(c["tokens"] / capacity, 4) if capacity else 0.0
        for name, t in c["tasks"].items():
            size = self.readers[name].size
            t["epochs"] = round(self.counts[name] / size, 4) if size else None
            t["read_from"] = self.readers[name].origin
        return c


def _copy(counters: dict) -> dict:
    return {k: ({n: dict(t) for n, t in v.items()} if k == "tasks" else v) for k, v in counters.items()}


def make_iterator(
    cfg: Config,
    *,
    rows: int,
    shard_index: int = 0,
    num_shards: int = 1,
    split: str = "train",
    num_epochs: int | None = None,
    max_examples: int | None = None,
) -> SftMixtureIterator:
    """An iterator over `cfg.data.mixture` for one host (any split; see make_train_iterator)."""
    d = cfg.data
    if rows < 1:
        raise InputError(f"rows must be >= 1, got {rows}")
    if not 0 <= shard_index < num_shards:
        raise InputError(f"shard_index {shard_index} is not in [0, {num_shards})")
    rates = task_lib.mixture_rates(d.mixture, d.rates)  # validates the name and data.rates early
    vocab = TokenizerVocabulary(tokenizer_dir(d.tokenizer, cfg.init_from))
    if 0 < cfg.model.vocab_size < vocab.vocab_size and not cfg.init_from:
        raise ConfigError(
            f"model.vocab_size ({cfg.model.vocab_size}) is smaller than the tokenizer's "
            f"({vocab.vocab_size}, {vocab.directory}); raise it, or leave it unset to take the "
            "tokenizer's"
        )
    built = task_lib.build_tasks(d, vocab, list(rates))
    shard = seqio.ShardInfo(index=shard_index, num_shards=num_shards)
    cached = cache_reader.find_cached(d, vocab.fingerprint, list(rates), split) if d.cache_dir else {}
    readers = {}
    for name in rates:
        source = built[name].source
        pre_tokenized = cache_reader.CachedShard(cached[name], split, shard) if name in cached else None
        readers[name] = TaskReader(name, source, vocab, split, shard, d.seed, cached=pre_tokenized)
    identity = {
        "mixture": d.mixture,
        "split": split,
        "seed": d.seed,
        "shard_index": shard_index,
        "num_shards": num_shards,
        "seq_len": cfg.train.seq_len,
        "tasks": sorted(rates),
    }
    return SftMixtureIterator(
        readers,
        rates,
        rows=rows,
        seq_len=cfg.train.seq_len,
        overflow=d.overflow,
        pack=d.pack,
        seed=d.seed,
        shard=shard,
        identity=identity,
        num_epochs=num_epochs,
        max_examples=max_examples,
    )


def make_train_iterator(
    cfg: Config, *, rows: int, shard_index: int = 0, num_shards: int = 1, split: str = "train"
) -> SftMixtureIterator:
    """The trainer's entry point (via data/sources.py): an unending stream; never a test split."""
    if split in task_lib.EVAL_ONLY_SPLITS:
        raise InputError(f"split {split!r} is a benchmark test set: evaluation only, never trained on")
    return make_iterator(cfg, rows=rows, shard_index=shard_index, num_shards=num_shards, split=split)
