"""Packing: segments and positions restart per example, loss only on targets, no example split across
rows unless truncated, and every overlong example counted (truncate and drop modes)."""

import numpy as np
import pytest

from data_fixtures import config, segments_of, setup_data
from mathjax_train.data import pipeline
from mathjax_train.data.batches import check_batch
from mathjax_train.data.packing import DROPPED, OK, TRUNCATED, RowPlanner, fit_example, pack_examples, slots


QA = ("data.mixture=synthetic", "data.template=question_answer")  # short prompts for the tiny tokenizer


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    return setup_data(tmp_path_factory.mktemp("data"))


def test_fit_example_truncates_targets_or_drops():
    p, t = [1, 5, 6], [7, 8, 9, 2]
    assert fit_example(p, t, 6, "truncate") == (p, t, OK)  # 6 slots exactly
    assert fit_example(p, t, 5, "truncate") == (p, [7, 8, 9], TRUNCATED)
    assert fit_example(p, t, 3, "truncate") == (p, [7], TRUNCATED)  # one target token still predicted
    assert fit_example(p, t, 2, "truncate") == (None, None, DROPPED)  # the prompt alone fills it
    assert fit_example(p, t, 5, "drop") == (None, None, DROPPED)
    with pytest.raises(ValueError, match="data.overflow"):
        fit_example(p, t, 5, "cut")


def test_row_planner_places_first_fit_and_lays_out_each_example():
    """Each example goes to the first row with room (one example per row without packing); its slots
    hold prompt + target[:-1] as inputs and the next token as target, weighted on the target tokens."""
    rng = np.random.default_rng(0)
    examples = [
        (rng.integers(3, 50, rng.integers(1, 6)).tolist(), rng.integers(3, 50, rng.integers(1, 8)).tolist())
        for _ in range(40)
    ]
    for pack in (True, False):
        plan, room, used, where = RowPlanner(4, 24, pack), [24] * 4, [False] * 4, []
        for prompt, target in examples:
            n = len(prompt) + len(target) - 1
            row = next((r for r in range(4) if room[r] >= n and (pack or not used[r])), None)
            assert plan.try_add(prompt, target) == (row is not None)
            if row is not None:
                where.append((row, 24 - room[row], prompt, target))
                room[row] -= n
                used[row] = True
        assert 0 < len(where) < len(examples)  # some did not fit
        batch = plan.batch()
        check_batch(batch, 4, 24)
        segments = [0] * 4
        for row, start, prompt, target in where:
            seq, n = prompt + target, len(prompt) + len(target) - 1
            segments[row] += 1
            cut = slice(start, start + n)
            assert batch["tokens"][row, cut].tolist() == seq[:-1]
            assert batch["targets"][row, cut].tolist() == seq[1:]
            assert batch["positions"][row, cut].tolist() == list(range(n))
            assert batch["segment_ids"][row, cut].tolist() == [segments[row]] * n
            assert batch["loss_weights"][row, cut].tolist() == [0.0] * (len(prompt) - 1) + [1.0] * len(target)
        assert plan.tokens == int((batch["segment_ids"] > 0).sum()) == sum(24 - r for r in room)
        assert not batch["tokens"][batch["segment_ids"] == 0].any()


def test_pack_examples_refuses_what_does_not_fit():
    assert pack_examples([([5, 6], [7, 2])], 1, 3)["segment_ids"].tolist() == [[1, 1, 1]]
    with pytest.raises(ValueError, match="does not fit seq_len 3"):
        pack_examples([([5, 6], [7, 8, 2])], 1, 3)
    with pytest.raises(ValueError, match="do not fit in 1 rows of 3"):
        pack_examples([([5, 6], [7, 2]), ([5], [2])], 1, 3)


def _segments(batch):
    """(row, slice) of every packed example."""
    for r, idx in segments_of(batch):
        yield r, slice(idx[0], idx[-1] + 1)


def _all_examples(it, name):
    reader = it.readers[name]
    return {tuple(p + t): (p, t) for p, t, _ in (reader.example(j) for j in range(reader.size))}


@pytest.mark.parametrize("seq_len", [100, 200])
def test_batches_segment_position_and_loss_layout(paths, seq_len):
    it = pipeline.make_iterator(config(paths, *QA, seq_len=seq_len, batch=3), rows=3)
    examples = _all_examples(it, "synthetic")
    seen_truncated = 0
    for _ in range(12):
        b = next(it)
        check_batch(b, 3, seq_len)
        pad = b["segment_ids"] == 0
        assert not b["loss_weights"][pad].any() and not b["tokens"][pad].any()
        for r in range(3):  # segments are numbered 1, 2, ... in order, padding only at the end
            seg = b["segment_ids"][r]
            used = seg[seg > 0]
            assert (np.diff(used) >= 0).all() and (np.unique(used) == np.arange(1, used.max() + 1)).all()
            assert not seg[len(used) :].any()
        for r, sl in _segments(b):
            assert (b["positions"][r, sl] == np.arange(sl.stop - sl.start)).all()
            seq = tuple(b["tokens"][r, sl].tolist() + [int(b["targets"][r, sl.stop - 1])])
            assert b["tokens"][r, sl.start] == it.readers["synthetic"].vocab.bos_id  # starts with its prompt
            whole = examples.get(seq)
            if whole is None:  # truncated: a prefix of exactly one example, filling seq_len
                matches = [pt for full, pt in examples.items() if full[: len(seq)] == seq]
                assert len(matches) == 1 and len(seq) - 1 == seq_len
                prompt, target = matches[0][0], seq[len(matches[0][0]) :]
                seen_truncated += 1
            else:
                prompt, target = whole
                assert target[-1] == it.readers["synthetic"].vocab.eos_id
            weights = b["loss_weights"][r, sl]
            want = [0.0] * (len(prompt) - 1) + [1.0] * len(target)
            assert weights.tolist() == want  # loss exactly on the slots that predict target tokens
    if seq_len == 100:
        assert seen_truncated and it.stats()["truncated"] >= seen_truncated
    else:
        assert it.stats()["truncated"] == 0


@pytest.mark.parametrize("mode", ["truncate", "drop"])
def test_overflow_is_counted(paths, mode):
    seq_len = 100
    cfg = config(paths, *QA, f"data.overflow={mode}", seq_len=seq_len, batch=2)
    it = pipeline.make_iterator(cfg, rows=2, num_epochs=1)
    lengths = [slots(p, t) for p, t in _all_examples(it, "synthetic").values()]
    batches = list(it)
    s = it.stats()
    over = sum(n > seq_len for n in lengths)
    assert 0 < over < len(lengths)
    assert s["examples"] == len(lengths) == 40 and s["tasks"]["synthetic"]["examples"] == 40
    if mode == "truncate":
        assert (s["truncated"], s["dropped"], s["packed_examples"]) == (over, 0, 40)
    else:
        assert (s["truncated"], s["dropped"], s["packed_examples"]) == (0, over, 40 - over)
    assert s["tokens"] == sum(int((b["segment_ids"] > 0).sum()) for b in batches)
    assert s["target_tokens"] == sum(int(b["loss_weights"].sum()) for b in batches)
    assert s["packing_efficiency"] == round(s["tokens"] / (len(batches) * 2 * seq_len), 4)
    assert s["batches"] == len(batches)


def test_without_packing_one_example_per_row(paths):
    it = pipeline.make_iterator(config(paths, *QA, "data.pack=false", seq_len=256), rows=4)
    for _ in range(5):
        b = next(it)
        assert (b["segment_ids"].max(axis=1) == 1).all()


def test_a_config_where_everything_is_dropped_says_so(paths):
    it = pipeline.make_iterator(config(paths, *QA, "data.overflow=drop", seq_len=8), rows=2)
    with pytest.raises(ValueError, match="dropped as longer than train.seq_len"):
        next(it)
