"""Accuracy, unbiased pass@k, maj@k (answers clustered by equivalence), and per-group tables.

Each graded row carries per-sample `answers` (extracted, or None), `correct` (bool) and `clusters`
(cluster id per sample, None where no answer was extracted). Metrics are computed from those
fields only, so a report can be recomputed from its own graded samples.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Mapping, Sequence

from mathjax_train.grading import is_equivalent


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021): 1 - C(n-c, k) / C(n, k), as a running product so that
    large n does not overflow: C(n-c,k)/C(n,k) = prod_{i=n-c+1}^{n} (1 - k/i)."""
    if not (0 <= c <= n) or not (1 <= k <= n):
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    miss = 1.0
    for i in range(n - c + 1, n + 1):
        miss *= 1.0 - k / i
    return 1.0 - miss


def ks_for(n: int) -> list[int]:
    """The k values reported for n samples: powers of two below n, then n."""
    ks, k = [], 1
    while k < n:
        ks.append(k)
        k *= 2
    return ks + [n]


def cluster_ids(
    answers: Sequence[str | None], equivalent: Callable[[str, str], bool] = is_equivalent
) -> list[int | None]:
    """Cluster id per answer: each answer joins the first earlier cluster whose first member it is
    equivalent to (`equivalent(first, answer)`), else opens a new one. None answers get None.

    Because membership depends only on earlier answers, the clusters of the first k answers are
    these ids restricted to them, which is what maj@k over a prefix needs.
    """
    reps: list[str] = []
    by_text: dict[str, int] = {}
    ids: list[int | None] = []
    for a in answers:
        if a is None:
            ids.append(None)
            continue
        key = a.strip()
        if key in by_text:
            ids.append(by_text[key])
            continue
        cid = next((i for i, r in enumerate(reps) if equivalent(r, a)), None)
        if cid is None:
            cid = len(reps)
            reps.append(a)
        by_text[key] = cid
        ids.append(cid)
    return ids


def majority_index(clusters: Sequence[int | None], k: int) -> int | None:
    """Index (among the first k samples) of the first member of the largest cluster; ties go to
    the cluster that appeared first. None when no sample among the first k has an answer."""
    counts: dict[int, int] = {}
    first: dict[int, int] = {}
    for i, c in enumerate(clusters[:k]):
        if c is None:
            continue
        counts[c] = counts.get(c, 0) + 1
        first.setdefault(c, i)
    if not counts:
        return None
    best = max(counts, key=lambda c: (counts[c], -first[c]))
    return first[best]


def row_metrics(row: dict, ks: Iterable[int]) -> dict:
    """pass@k and maj@k of one graded row, plus the first sample's correctness."""
    correct, clusters = row["correct"], row["clusters"]
    n, c = len(correct), sum(bool(x) for x in correct)
    out: dict[str, Any] = {"first": float(bool(correct[0])), "pass": {}, "maj": {}}
    for k in ks:
        out["pass"][k] = pass_at_k(n, c, k)
        m = majority_index(clusters, k)
        out["maj"][k] = float(m is not None and bool(correct[m]))
    return out


def aggregate(rows: Sequence[dict], ks: Sequence[int]) -> dict:
    """Mean first-sample accuracy, pass@k and maj@k over `rows` (k as a string key, for JSON)."""
    if not rows:
        return {"n": 0, "accuracy": None, "pass@k": {}, "maj@k": {}}
    per = [row_metrics(r, ks) for r in rows]
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    return {
        "n": len(rows),
        "accuracy": mean([p["first"] for p in per]),
        "pass@k": {str(k): mean([p["pass"][k] for p in per]) for k in ks},
        "maj@k": {str(k): mean([p["maj"][k] for p in per]) for k in ks},
    }


def level_name(level: int | None) -> str | None:
    if level is None:
        return None
    return "Level ?" if level == 0 else f"Level {level}"


def breakdown(rows: Sequence[dict], key: str, ks: Sequence[int]) -> dict[str, dict]:
    """aggregate() per value of `key` ("level" or "subject"); rows without one are left out (and
    the tables say how many rows they cover). Groups are sorted by name."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        value = level_name(r.get("level")) if key == "level" else r.get(key)
        if value is not None:
            groups.setdefault(str(value), []).append(r)
    return {name: aggregate(groups[name], ks) for name in sorted(groups)}


def binomial_interval(correct: int, n: int, z: float = 1.96) -> list[float]:
    """Wilson 95% interval of an accuracy measured on n problems."""
    if n == 0:
        return [0.0, 1.0]
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [round(centre - half, 4), round(centre + half, 4)]


def paired_difference(before: Sequence[bool], after: Sequence[bool], z: float = 1.96) -> dict:
    """Accuracy change of two models graded on the same problems, with a 95% interval from the
    per-problem differences (paired, so the problems' own difficulty cancels) and the discordant
    counts (problems only one of them solved)."""
    if len(before) != len(after) or not before:
        raise ValueError(f"paired_difference: {len(before)} and {len(after)} results; need the same problems")
    d = [int(b) - int(a) for a, b in zip(before, after)]
    n = len(d)
    mean_d = sum(d) / n
    var = sum((x - mean_d) ** 2 for x in d) / (n - 1) if n > 1 else 0.0
    half = z * math.sqrt(var / n)
    return {
        "problems": n,
        "difference": round(mean_d, 4),
        "interval": [round(mean_d - half, 4), round(mean_d + half, 4)],
        "gained": sum(x > 0 for x in d),
        "lost": sum(x < 0 for x in d),
    }


def paired_by_problem(before: Mapping[str, bool], after: Mapping[str, bool]) -> dict:
    """`paired_difference` of two {problem id: correct} maps, matched by id (every id of `before`)."""
    ids = sorted(before)
    return paired_difference([before[i] for i in ids], [after[i] for i in ids])


# Student's t, 0.975 quantile, by degrees of freedom (1-10): a 95% interval from a few seeds' results
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)


def seed_interval(values: Sequence[float]) -> dict:
    """Mean of one figure over independent runs (seeds) with its 95% t-interval: the spread between seeds
    (initialization, data order, sampling) is what it measures, not the evaluation set's noise alone."""
    n = len(values)
    if not 2 <= n <= len(_T975) + 1:
        raise ValueError(f"seed_interval: 2 to {len(_T975) + 1} runs, got {n}")
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = _T975[n - 2] * sd / math.sqrt(n)
    return {"runs": n, "mean": round(mean, 4), "interval": [round(mean - half, 4), round(mean + half, 4)]}
