"""The train iterator: deterministic, exactly resumable from JSON state, rates held, host shards
disjoint and covering."""

import json

import numpy as np
import pytest

from data_fixtures import config, packed_ids, segments_of, setup_data
from mathjax_train.data import pipeline

QA = "data.template=question_answer"


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    return setup_data(tmp_path_factory.mktemp("data"))


def _take(it, n):
    return [next(it) for _ in range(n)]


def _same(a, b):
    return len(a) == len(b) and all(all(np.array_equal(x[k], y[k]) for k in x) for x, y in zip(a, b))


MIXES = [("procedural_mix", ()), ("gsm8k_math_synthetic", ()), ("synthetic", ("data.rates={synthetic: 2.0}",))]


@pytest.mark.parametrize("mixture,extra", MIXES)
def test_same_config_and_seed_give_the_same_batches(paths, mixture, extra):
    cfg = config(paths, f"data.mixture={mixture}", QA, *extra)
    a, b = _take(pipeline.make_iterator(cfg, rows=3), 6), _take(pipeline.make_iterator(cfg, rows=3), 6)
    assert _same(a, b)
    other = _take(
        pipeline.make_iterator(config(paths, f"data.mixture={mixture}", QA, "data.seed=1", *extra), rows=3), 6
    )
    assert not _same(a, other)


@pytest.mark.parametrize("mixture,extra", MIXES)
def test_resume_from_json_state_continues_the_same_stream(paths, mixture, extra):
    cfg = config(paths, f"data.mixture={mixture}", QA, *extra, seq_len=160)
    straight = pipeline.make_iterator(cfg, rows=2)
    states, batches = [], []
    for _ in range(30):  # the 40-row synthetic file wraps into later epochs here
        states.append(json.loads(json.dumps(straight.get_state())))
        batches.append(next(straight))
    assert any(s["pending"] for s in states)  # resuming with examples carried over is exercised
    for k in (1, 7, 19, 29):
        resumed = pipeline.make_iterator(cfg, rows=2)
        resumed.set_state(states[k])
        assert _same(_take(resumed, 30 - k), batches[k:]), k
        assert resumed.stats() == straight.stats()
    if mixture == "synthetic":
        assert straight.stats()["tasks"]["synthetic"]["epochs"] > 1


def test_state_from_another_stream_is_refused(paths):
    it = pipeline.make_iterator(config(paths, "data.mixture=procedural_mix", QA), rows=2)
    next(it)
    state = it.get_state()
    for override in ("data.seed=3", "data.mixture=procedural", "train.seq_len=256"):
        other = pipeline.make_iterator(config(paths, "data.mixture=procedural_mix", QA, override), rows=2)
        with pytest.raises(ValueError, match="different data stream"):
            other.set_state(state)
    with pytest.raises(ValueError, match="not a sft_mixture state"):
        it.set_state({"kind": "toy_copy", "index": 3})
    shard = pipeline.make_iterator(
        config(paths, "data.mixture=procedural_mix", QA), rows=2, shard_index=1, num_shards=2
    )
    with pytest.raises(ValueError, match=r"\(saved -> now: shard_index: 0 -> 1; num_shards: 1 -> 2\)"):
        shard.set_state(state)


def test_mixture_rates_hold_over_10k_examples(paths):
    cfg = config(paths, "data.mixture=gsm8k_math_synthetic", QA, "data.rates={gsm8k_sft: 1, math_sft: 1, synthetic: 6}")
    it = pipeline.make_iterator(cfg, rows=16)
    while it.stats()["examples"] < 10_000:
        next(it)
    s = it.stats()
    total = s["examples"]
    for task, want in (("gsm8k_sft", 0.125), ("math_sft", 0.125), ("synthetic", 0.75)):
        got = s["tasks"][task]["examples"] / total
        assert abs(got - want) < 0.02, (task, got)
    cfg = config(paths, "data.mixture=procedural_mix", QA, "data.rates={procedural_gsm: 1, procedural_math: 3}")
    it = pipeline.make_iterator(cfg, rows=8, max_examples=10_000, num_epochs=1)
    for _ in it:
        pass
    s = it.stats()
    assert s["examples"] == 10_000
    assert abs(s["tasks"]["procedural_math"]["examples"] / 10_000 - 0.75) < 0.02


def _ids_seen(it):
    """Decoded prompts of every example packed in one pass of the iterator."""
    vocab, seen = it.readers[next(iter(it.readers))].vocab, []
    for b in it:
        for r, idx in segments_of(b):
            prompt_slots = idx[b["loss_weights"][r, idx] == 0]
            seen.append(vocab.decode(packed_ids(b, r, prompt_slots)))
    return seen


def test_host_shards_are_disjoint_and_cover_the_data(paths):
    cfg = config(paths, "data.mixture=synthetic", QA, seq_len=256)
    whole = _ids_seen(pipeline.make_iterator(cfg, rows=4, num_epochs=1))
    assert len(whole) == len(set(whole)) == 40
    parts = [
        _ids_seen(pipeline.make_iterator(cfg, rows=2, shard_index=k, num_shards=3, num_epochs=1)) for k in range(3)
    ]
    assert sorted(len(p) for p in parts) == [13, 13, 14]
    assert sorted(sum(parts, [])) == sorted(whole)  # disjoint (no repeats) and covering
    # unlimited procedural stream: host k of n gets problems k, k+n, ... of the same global stream
    cfg = config(paths, "data.mixture=procedural", QA, seq_len=256)
    one = _ids_seen(pipeline.make_iterator(cfg, rows=2, max_examples=24, num_epochs=1))
    two = [
        _ids_seen(pipeline.make_iterator(cfg, rows=2, shard_index=k, num_shards=2, max_examples=12, num_epochs=1))
        for k in range(2)
    ]
    assert not set(two[0]) & set(two[1])
    assert sorted(two[0] + two[1]) == sorted(one)


def test_unlimited_tasks_need_a_cap_for_one_pass(paths):
    with pytest.raises(ValueError, match="unlimited"):
        pipeline.make_iterator(config(paths, "data.mixture=procedural_mix"), rows=2, num_epochs=1)
