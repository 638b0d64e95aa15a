"""Packed batches: attention never crosses segments, and the loss covers target tokens only (on hand-made
batches and on one the SeqIO mixture pipeline packs; its loss layout: tests/test_data_packing.py)."""

import jax
import jax.numpy as jnp
import numpy as np

from data_fixtures import config, packed_ids, segments_of, setup_data
from mathjax_train.data import pipeline
from mathjax_train.data.packing import pack_examples
from mathjax_train.model import Decoder
from mathjax_train.train.loss import weighted_cross_entropy
from train_helpers import tiny_config


def _model_and_params(*overrides):
    cfg = tiny_config("/tmp/unused", *overrides).model
    model = Decoder(cfg)
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 1), jnp.int32))["params"]
    return model, jax.tree_util.tree_map(
        lambda x: getattr(x, "value", x), params, is_leaf=lambda x: hasattr(x, "value")
    )


def test_no_attention_across_segments():
    model, params = _model_and_params()
    a = ([5, 6, 7, 8], [9, 10, 11])
    b = ([12, 13], [14, 15, 16, 17, 18])
    packed = pack_examples([a, b], rows=1, seq_len=16)
    logits, _ = model.apply({"params": params}, packed["tokens"], packed["positions"], packed["segment_ids"])
    for ex, start in ((a, 0), (b, 6)):
        alone = pack_examples([ex], rows=1, seq_len=16)
        ref, _ = model.apply({"params": params}, alone["tokens"], alone["positions"], alone["segment_ids"])
        n = len(ex[0]) + len(ex[1]) - 1
        np.testing.assert_allclose(np.asarray(logits[0, start : start + n]), np.asarray(ref[0, :n]), atol=1e-5)
    # and a change inside segment 1 leaves segment 2's logits untouched
    changed = dict(packed, tokens=packed["tokens"].copy())
    changed["tokens"][0, 1] = 40
    logits2, _ = model.apply({"params": params}, changed["tokens"], changed["positions"], changed["segment_ids"])
    np.testing.assert_array_equal(np.asarray(logits2[0, 6:12]), np.asarray(logits[0, 6:12]))
    assert not np.allclose(np.asarray(logits2[0, 1:6]), np.asarray(logits[0, 1:6]))


def test_loss_only_on_target_tokens():
    model, params = _model_and_params()
    packed = pack_examples([([5, 6, 7, 8], [9, 10, 11]), ([12, 13], [14, 15, 16])], rows=1, seq_len=16)
    w = packed["loss_weights"][0]
    # example 1: slots 0..5, predicting 6,7,8,9,10,11 -> targets 9,10,11 at slots 3,4,5
    assert w.tolist()[:6] == [0, 0, 0, 1, 1, 1] and w.tolist()[6:10] == [0, 1, 1, 1] and w[10:].sum() == 0

    def loss(p, targets):
        logits, _ = model.apply({"params": p}, packed["tokens"], packed["positions"], packed["segment_ids"])
        s = weighted_cross_entropy(logits, targets, packed["loss_weights"])
        return s["loss"] / s["weight"]

    base = float(loss(params, packed["targets"]))
    prompt_changed = packed["targets"].copy()
    prompt_changed[0, [0, 1, 2, 6]] = 33  # targets at prompt slots
    assert float(loss(params, prompt_changed)) == base
    target_changed = packed["targets"].copy()
    target_changed[0, 3] = 33
    assert float(loss(params, target_changed)) != base
    # the mean is over the 6 target tokens exactly
    logits, _ = model.apply({"params": params}, packed["tokens"], packed["positions"], packed["segment_ids"])
    logp = jax.nn.log_softmax(np.asarray(logits[0]), axis=-1)
    idx = np.nonzero(w)[0]
    manual = -np.mean([logp[i, packed["targets"][0, i]] for i in idx])
    np.testing.assert_allclose(base, manual, rtol=1e-5)


def test_no_attention_across_segments_of_a_pipeline_batch(tmp_path):
    """Rows the real data pipeline packs (tokenizer, template, several examples a row): each example's
    logits are those it has alone."""
    paths = setup_data(tmp_path)
    cfg = config(paths, "data.mixture=synthetic", "data.template=question_answer", seq_len=256, batch=2)
    batch = next(pipeline.make_iterator(cfg, rows=2))
    assert (batch["segment_ids"].max(axis=1) >= 2).all()  # every row holds more than one example
    model, params = _model_and_params("model.vocab_size=320")
    logits, _ = model.apply({"params": params}, batch["tokens"], batch["positions"], batch["segment_ids"])
    checked = 0
    for r, idx in segments_of(batch):
        ids, k = packed_ids(batch, r, idx), int(batch["loss_weights"][r, idx].sum())
        alone = pack_examples([(ids[:-k], ids[-k:])], rows=1, seq_len=256)
        ref, _ = model.apply({"params": params}, alone["tokens"], alone["positions"], alone["segment_ids"])
        np.testing.assert_allclose(np.asarray(logits[r, idx]), np.asarray(ref[0, : len(idx)]), atol=1e-5)
        checked += 1
    assert checked >= 4
