"""Sampling filters with per-row settings, and the `generate` command on the engine (rows, seeds, order)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hf_fixtures import import_random_model
from mathjax_train.cli import main
from mathjax_train.infer.sampling import filter_logits, sample


def test_top_k_and_top_p_filters_per_row():
    logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]] * 4))
    kept = np.isfinite(np.asarray(filter_logits(logits, jnp.array([1.0, 0.7, 0.1, 0.9]), jnp.array([2, 0, 0, 0]))))
    assert kept.tolist() == [
        [True, True, False, False],
        [True, True, False, False],
        [True, False, False, False],
        [True, True, True, False],
    ]
    keys = jax.vmap(jax.random.PRNGKey)(jnp.arange(2000))
    ones = jnp.ones(2000)
    draws = np.asarray(sample(jnp.repeat(logits[:1], 2000, 0), keys, ones, 0.7 * ones, jnp.zeros(2000, jnp.int32)))
    freq = np.bincount(draws, minlength=4) / 2000
    assert freq[2] == freq[3] == 0 and abs(freq[0] - 0.5 / 0.8) < 0.04
    mixed = sample(logits[:2], keys[:2], jnp.array([0.0, 1.0]), jnp.array([1.0, 0.1]), jnp.array([0, 0]))
    assert np.asarray(mixed).tolist() == [0, 0]  # a greedy row and a top-p 0.1 row in one batch


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    d = tmp_path_factory.mktemp("gen")
    return import_random_model(d, seed=3)[1]


def run_generate(ckpt, tmp_path, name, rows, *flags):
    prompts = tmp_path / f"{name}_in.jsonl"
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / f"{name}.jsonl"
    assert main(["generate", "--checkpoint", str(ckpt), "--prompts", str(prompts), "--output", str(out), *flags]) == 0
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_generate_writes_every_row_in_order_and_slots_do_not_change_samples(ckpt, tmp_path):
    rows = [{"prompt": p, "id": i} for i, p in enumerate(["a b c", "def add(a, b):", "x", "The answer is 4" * 3])]
    flags = ("--max-new-tokens", "12", "--num-samples", "3", "--temperature", "0.9", "--seed", "5")
    one = run_generate(ckpt, tmp_path, "one", rows, *flags, "--batch-size", "1")
    many = run_generate(ckpt, tmp_path, "many", rows, *flags, "--batch-size", "8")
    assert [r["id"] for r in many] == [0, 1, 2, 3]
    assert [r["token_ids"] for r in one] == [r["token_ids"] for r in many]
    assert all(len(r["completions"]) == 3 and len(set(map(tuple, r["token_ids"]))) > 1 for r in many)
    assert all(f in ("eos", "length") for r in many for f in r["finish_reasons"])


def test_draw_follows_the_distribution_across_blocks_and_never_picks_filtered_tokens():
    from mathjax_train.infer.sampling import BLOCK, draw

    v = 3 * BLOCK + 17  # several blocks and a partial last one
    probs = np.zeros(v)
    picks = [0, BLOCK - 1, BLOCK, 2 * BLOCK + 5, v - 1]
    probs[picks] = [0.1, 0.2, 0.3, 0.15, 0.25]
    logits = jnp.log(jnp.asarray(np.repeat(probs[None], 20000, 0), jnp.float32))  # zeros -> -inf
    u = jax.random.uniform(jax.random.PRNGKey(0), (20000,))
    got = np.asarray(draw(logits, u))
    assert set(got.tolist()) <= set(picks)
    freq = np.bincount(got, minlength=v)[picks] / len(got)
    np.testing.assert_allclose(freq, probs[picks], atol=0.012)
    edge = np.asarray(draw(logits[:2], jnp.asarray([0.0, 1.0 - 1e-7])))
    assert edge.tolist() == [0, v - 1]
