"""Record sources for SFT tasks, all normalised to {id, question, solution, answer, source, level}.

Finite sources (GSM8K, MATH, synthetic JSONL) load a split once and hand out a host's share
(`records[shard.index::shard.num_shards]`: disjoint and covering). The procedural source is unlimited and
random-access: record i is `procedural.generate(i)`, host k of n takes indices k, k+n, ...
"""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

from mathjax_train.data import problems
from mathjax_train.data.jsonl_source import ReadStats, read_sft_jsonl
from mathjax_train.data.problems import Problem
from mathjax_train.errors import ConfigError, InputError


def _record(p: Problem) -> dict:
    return {
        "id": p.id,
        "question": p.question,
        "solution": p.solution,
        "answer": p.answer,
        "source": p.source,
        "level": p.level or 0,
    }


def gsm8k_records(data_dir: str, split: str) -> Iterable[dict]:
    """GSM8K rows (data/problems.py, the reader the TFDS builder uses)."""
    return map(_record, problems.load_named("gsm8k", split, data_dir or None))


def math_records(data_dir: str, split: str) -> Iterable[dict]:
    """Hendrycks MATH rows (train, test or math500; data/problems.py, the reader the TFDS builder uses)."""
    return map(_record, problems.load_named("math", split, data_dir or None))


def jsonl_records(paths: Sequence[str], stats: ReadStats) -> Iterable[dict]:
    """Synthetic SFT rows from JSONL files (strict: path:line:field errors; blank lines counted)."""
    if not paths:
        raise ConfigError("data.jsonl: the `synthetic` task needs at least one JSONL file (data.jsonl=[a.jsonl])")
    for f, path in enumerate(paths):
        for i, rec in enumerate(read_sft_jsonl(path, stats=stats)):
            yield {
                "id": str(rec.get("id", f"{path}#{i}")),
                "question": rec["question"],
                "solution": rec["solution"],
                "answer": rec["answer"],
                "source": rec["source"] or "synthetic",
                "level": rec["level"],
            }


class FiniteRecords:
    """A dataset read once per split; `shard(split, index, num_shards)` is one host's share."""

    unlimited = False

    def __init__(
        self,
        name: str,
        loaders: dict[str, Callable[[], Iterable[dict]]],
        read_stats: ReadStats | None = None,
        min_level: int = 0,
    ):
        self.name, self.loaders, self.read_stats = name, loaders, read_stats
        self.min_level = min_level
        self.below_min_level: dict[str, int] = {}  # rows left out by data.min_level, per split (counted)
        self._cache: dict[str, list[dict]] = {}

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(self.loaders)

    def check_split(self, split: str) -> None:
        if split not in self.loaders:
            raise InputError(f"task {self.name!r} has no split {split!r}; valid: {list(self.loaders)}")

    def all(self, split: str) -> list[dict]:
        self.check_split(split)
        if split not in self._cache:
            rows = list(self.loaders[split]())
            kept = [r for r in rows if r["level"] >= self.min_level]
            self.below_min_level[split] = len(rows) - len(kept)
            if rows and not kept:
                raise ConfigError(
                    f"data.min_level={self.min_level}: no {self.name} {split} row has a level that high "
                    f"({len(rows)} rows; unknown levels count as 0)"
                )
            self._cache[split] = kept
        return self._cache[split]

    def shard(self, split: str, index: int, num_shards: int) -> list[dict]:
        return self.all(split)[index::num_shards]


class ProceduralRecords:
    """Unlimited procedural problems: record i of a split is `procedural.generate(i, ...)`."""

    unlimited = True
    splits = ("train", "heldout")

    def __init__(self, name: str, templates: Sequence[str] | None, levels: Sequence[int], seed: int):
        from mathjax_train.data import procedural

        self.name, self.seed = name, seed
        try:
            self.templates = procedural.select_templates(templates)
        except ValueError as e:
            raise ConfigError(f"task {name}: {e}") from None
        bad = [lv for lv in levels if lv not in procedural.LEVELS]
        if bad or not levels:
            raise ConfigError(
                f"data.procedural_levels: must be a non-empty subset of {list(procedural.LEVELS)}, got {list(levels)}"
            )
        self.levels = tuple(levels)

    def check_split(self, split: str) -> None:
        if split not in self.splits:
            raise InputError(f"task {self.name!r} has no split {split!r}; valid: {list(self.splits)}")

    def get(self, split: str, index: int) -> dict:
        from mathjax_train.data import procedural

        rec = procedural.generate(index, seed=self.seed, split=split, templates=self.templates, levels=self.levels)
        return {k: rec[k] for k in ("id", "question", "solution", "answer", "source", "level")}
