"""Metrics against hand computation: pass@k vs the binomial formula, maj@k vs counts, ties, tables."""

from fractions import Fraction
from math import comb

import pytest

from mathjax_train.eval import metrics


@pytest.mark.parametrize("n", range(1, 11))
def test_pass_at_k_equals_the_binomial_formula(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            exact = 1 - Fraction(comb(n - c, k), comb(n, k))
            assert metrics.pass_at_k(n, c, k) == pytest.approx(float(exact), abs=1e-12), (n, c, k)


def test_pass_at_k_hand_values_and_large_n():
    assert metrics.pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert metrics.pass_at_k(4, 1, 2) == pytest.approx(0.5)  # 1 - C(3,2)/C(4,2) = 1 - 3/6
    assert metrics.pass_at_k(5, 2, 2) == pytest.approx(0.7)  # 1 - C(3,2)/C(5,2) = 1 - 3/10
    assert metrics.pass_at_k(3, 0, 3) == 0.0 and metrics.pass_at_k(3, 3, 1) == 1.0
    # C(1000, 500) overflows a float; the product form does not
    exact = 1 - Fraction(comb(1000 - 7, 500), comb(1000, 500))
    assert metrics.pass_at_k(1000, 7, 500) == pytest.approx(float(exact), rel=1e-12)
    assert metrics.pass_at_k(1000, 7, 1) == pytest.approx(0.007, rel=1e-12)


@pytest.mark.parametrize("n,c,k", [(0, 0, 1), (3, 4, 1), (3, 1, 0), (3, 1, 4), (3, -1, 1)])
def test_pass_at_k_rejects_impossible_arguments(n, c, k):
    with pytest.raises(ValueError, match="pass@k"):
        metrics.pass_at_k(n, c, k)


def test_ks():
    assert metrics.ks_for(1) == [1]
    assert metrics.ks_for(4) == [1, 2, 4]
    assert metrics.ks_for(6) == [1, 2, 4, 6]


def test_clusters_group_equivalent_answers_and_skip_none():
    answers = ["1/2", "0.5", None, "\\frac{1}{2}", "3", "x=3", "1/2", "4"]
    assert metrics.cluster_ids(answers) == [0, 0, None, 0, 1, 1, 0, 2]


def test_clusters_use_the_equivalence_given():
    calls = []

    def same_length(a, b):
        calls.append((a, b))
        return len(a) == len(b)

    assert metrics.cluster_ids(["ab", "cd", "e", "ab", "fgh"], same_length) == [0, 0, 1, 0, 2]
    assert ("ab", "ab") not in calls  # identical text reuses its cluster without a comparison


def test_majority_vote_counts_and_ties():
    # clusters 0:2 votes, 1:3 votes -> cluster 1, first member at index 1
    assert metrics.majority_index([0, 1, 1, 0, 1], 5) == 1
    # first 4 samples: 2 votes each -> tie, the cluster seen first (0) wins
    assert metrics.majority_index([0, 1, 1, 0, 1], 4) == 0
    assert metrics.majority_index([None, 1, None, 0, 0], 5) == 3
    assert metrics.majority_index([None, None, 0], 2) is None  # no answer among the first 2
    assert metrics.majority_index([None, 2, 0, 0], 2) == 1


def _row(correct, clusters, level=None, subject=None):
    return {
        "correct": correct,
        "clusters": clusters,
        "answers": ["a"] * len(correct),
        "level": level,
        "subject": subject,
    }


def test_aggregate_by_hand():
    rows = [
        _row([True, False, False, True], [0, 1, 1, 0], level=1, subject="Algebra"),  # c=2; maj@4 tie -> 0 (right)
        _row([False, True, True, True], [0, 1, 1, 1], level=2, subject="Algebra"),  # c=3; maj@4 -> 1 (right)
        _row([False, False, False, False], [None, 0, None, 1], level=2, subject=None),  # c=0
    ]
    agg = metrics.aggregate(rows, [1, 2, 4])
    assert agg["n"] == 3
    assert agg["accuracy"] == pytest.approx(1 / 3)
    p2 = [1 - comb(2, 2) / comb(4, 2), 1 - comb(1, 2) / comb(4, 2), 0.0]
    assert agg["pass@k"]["2"] == pytest.approx(sum(p2) / 3)
    assert agg["pass@k"]["1"] == pytest.approx((2 / 4 + 3 / 4 + 0) / 3)
    assert agg["pass@k"]["4"] == pytest.approx(2 / 3)
    # maj@1: first sample's verdict where it has an answer; maj@2: row 1 tie 0 vs 1 -> 0 (right),
    # row 2 tie -> 0 (wrong), row 3 only cluster 0 (wrong)
    assert agg["maj@k"] == {"1": pytest.approx(1 / 3), "2": pytest.approx(1 / 3), "4": pytest.approx(2 / 3)}
    levels = metrics.breakdown(rows, "level", [1, 2, 4])
    assert list(levels) == ["Level 1", "Level 2"]
    assert levels["Level 1"]["n"] == 1 and levels["Level 2"]["n"] == 2
    assert levels["Level 2"]["pass@k"]["4"] == pytest.approx(0.5)
    subjects = metrics.breakdown(rows, "subject", [1, 2, 4])
    assert list(subjects) == ["Algebra"] and subjects["Algebra"]["n"] == 2  # the row without one is left out
    assert metrics.level_name(0) == "Level ?"
