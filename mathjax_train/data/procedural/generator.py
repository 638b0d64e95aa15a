"""Seeded, unlimited stream of procedural problems (GSM8K-style and MATH-style), split-aware.

Example ``index`` of (``seed``, ``split``) depends only on those three values, never on what was
generated before. Train and held-out are disjoint by construction: each question text hashes to a
bucket, held-out keeps only bucket 0 of ``PARTITION`` and train only the others (retrying with
fresh per-attempt RNGs), and the two splits also draw from different seed streams.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
from typing import Callable, Iterable, Iterator, Mapping, Sequence

from mathjax_train.config import InputError, ProblemsStageConfig
from mathjax_train.data.procedural import gsm_style, math_style
from mathjax_train.data.procedural.gsm_style import Resample
from mathjax_train.data.procedural.methods import all_methods

# a template: (rng, level) -> (question, solution, answer[, verification])
FAMILIES: Mapping[str, Mapping[str, Callable[[random.Random, int], tuple]]] = {
    "gsm_style": gsm_style.TEMPLATES,
    "math_style": math_style.TEMPLATES,
}
TEMPLATES = {f"{fam}/{name}": fn for fam, table in FAMILIES.items() for name, fn in table.items()}
SPLITS = ("train", "heldout")
LEVELS = (1, 2, 3, 4, 5)
PARTITION = 8  # held-out owns 1/PARTITION of the question-text space
MAX_ATTEMPTS = 2000


class GenerationError(RuntimeError):
    """No valid problem was found for an index within MAX_ATTEMPTS (a template bug)."""


def _stable_int(*parts: object) -> int:
    """A 64-bit integer from the parts, stable across processes and Python versions."""
    key = "\x1f".join(map(str, parts)).encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little")


def question_bucket(question: str) -> int:
    """Which of the PARTITION buckets a question text belongs to (0 = held-out)."""
    return int.from_bytes(hashlib.blake2b(question.encode(), digest_size=4).digest(), "little") % PARTITION


def in_split(question: str, split: str) -> bool:
    """Whether this question text may appear in ``split``."""
    return (question_bucket(question) == 0) == (split == "heldout")


def select_templates(templates: Iterable[str] | None = None) -> list[str]:
    """Expand names or family prefixes ("gsm_style", "math_style/gcd_lcm") to template names."""
    if templates is None:
        return sorted(TEMPLATES)
    out: list[str] = []
    for t in templates:
        hits = sorted(n for n in TEMPLATES if n == t or n.startswith(t.rstrip("/") + "/"))
        if not hits:
            raise InputError(f"unknown procedural template {t!r}; valid: {sorted(FAMILIES)} or {sorted(TEMPLATES)}")
        out.extend(h for h in hits if h not in out)
    return out


def _check_args(split: str, levels: Sequence[int]) -> None:
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}; valid: {list(SPLITS)}")
    bad = [lv for lv in levels if lv not in LEVELS]
    if bad or not levels:
        raise InputError(f"levels must be a non-empty subset of {list(LEVELS)}, got {list(levels)}")


def generate(
    index: int,
    *,
    seed: int = 0,
    split: str = "train",
    templates: Iterable[str] | None = None,
    levels: Sequence[int] = LEVELS,
) -> dict:
    """The problem at ``index``: dict with id, question, solution (by the method shown, of those the
    template knows), answer, level, source, check, method (its index in `worked_methods`)."""
    names = select_templates(templates)
    levels = tuple(levels)
    _check_args(split, levels)
    pick = random.Random(_stable_int("pick", split, seed, index))
    name, level = pick.choice(names), pick.choice(levels)
    question, methods, answer, check = _draw(name, level, split, seed, index)
    method = random.Random(_stable_int("method", split, seed, index)).randrange(len(methods))
    return {
        "id": f"procedural/{split}/{seed}/{index}",
        "question": question,
        "solution": methods[method],
        "answer": answer,
        "level": level,
        "source": f"procedural/{name}",
        "check": check,
        "method": method,
    }


def _draw(name: str, level: int, split: str, seed: int, index: int) -> tuple[str, list[str], str, str]:
    """(question, its worked solutions by every method the template knows, answer, check) of one index."""
    fn = TEMPLATES[name]
    for attempt in range(MAX_ATTEMPTS):
        rng = random.Random(_stable_int("draw", split, seed, index, attempt))
        try:
            out = fn(rng, level)
        except Resample:
            continue
        if not in_split(out[0], split):
            continue
        if name.startswith("gsm_style/"):
            question, lines, value = out
            solutions = ["\n".join(m) + f"\n#### {value}" for m in all_methods(lines)]
            return question, solutions, str(value), ""
        question, solution, answer, check_obj = out
        return question, all_methods(solution), answer, json.dumps(check_obj, sort_keys=True)
    raise GenerationError(f"{name} level {level}: no valid problem in {MAX_ATTEMPTS} attempts (index {index})")


def worked_methods(problem: dict) -> list[str]:
    """Every worked solution the generator knows for a procedural problem record (id, source, level and
    question as `generate` wrote them), regenerated from its id; an error names a record it did not write."""
    parts = str(problem.get("id", "")).split("/")
    name = str(problem.get("source", "")).removeprefix("procedural/")
    if len(parts) != 4 or parts[0] != "procedural" or name not in TEMPLATES or problem.get("level") not in LEVELS:
        raise InputError(f"{problem.get('id')!r}: not a procedural problem (id procedural/<split>/<seed>/<index>)")
    _, split, seed, index = parts
    question, methods, _, _ = _draw(name, problem["level"], split, int(seed), int(index))
    if question != problem.get("question"):
        raise InputError(f"{problem['id']!r}: its question is not the one the generator writes for that id")
    return methods


def iterate(
    *,
    seed: int = 0,
    split: str = "train",
    start: int = 0,
    stop: int | None = None,
    templates: Iterable[str] | None = None,
    levels: Sequence[int] = LEVELS,
    shard_index: int = 0,
    num_shards: int = 1,
) -> Iterator[dict]:
    """Problems ``start, start+1, ...`` (unbounded unless ``stop``); with ``num_shards`` > 1 only
    indices ``i % num_shards == shard_index`` (one host's share of the same global stream)."""
    if not 0 <= shard_index < num_shards:
        raise InputError(f"shard_index {shard_index} not in [0, {num_shards})")
    names = select_templates(templates)
    _check_args(split, tuple(levels))
    first = start + (shard_index - start) % num_shards
    indices = itertools.count(first, num_shards) if stop is None else range(first, stop, num_shards)
    for i in indices:
        yield generate(i, seed=seed, split=split, templates=names, levels=levels)


def write_problems(path, cfg: ProblemsStageConfig) -> int:
    """Write the problems `cfg` names (`data procedural`, a pipeline `problems` stage) as JSONL; their count.
    Questions found in `cfg.exclude` are skipped and later indices drawn in their place."""
    from mathjax_train.data.jsonl_source import read_jsonl, write_jsonl

    cfg.validate()
    excluded = {row["question"] for f in cfg.exclude for row in read_jsonl(f, {"question": str})}
    problems = iterate(seed=cfg.seed, split=cfg.split, templates=cfg.templates or None, levels=cfg.levels)
    if not excluded:
        return write_jsonl(path, itertools.islice(problems, cfg.count))
    return write_jsonl(path, list(_outside(problems, excluded, cfg)))  # all drawn first: an error leaves no file


MAX_EXCLUDED_RUN = 5000  # consecutive excluded draws taken to mean `exclude` covers the whole question space


def _outside(problems: Iterator[dict], excluded: set[str], cfg: ProblemsStageConfig) -> Iterator[dict]:
    kept = run = 0
    for problem in problems:
        if kept == cfg.count:
            return
        if problem["question"] not in excluded:
            kept, run = kept + 1, 0
            yield problem
            continue
        run += 1
        if run == MAX_EXCLUDED_RUN:
            raise InputError(
                f"exclude {cfg.exclude}: {MAX_EXCLUDED_RUN} draws in a row are all in it ({kept} of {cfg.count} "
                "problems written): it covers these levels and templates; give more of them"
            )
