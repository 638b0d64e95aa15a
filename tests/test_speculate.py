"""Speculative decoding by prompt lookup (infer/speculate.py): the drafts, and greedy text that stays the model's
own (equal to transformers and to the engine without speculation) while drafted tokens are kept."""

import dataclasses

import numpy as np
import pytest
import torch

from hf_fixtures import import_random_model
from mathjax_train.config import ConfigError, EngineConfig
from mathjax_train.infer.engine import Engine
from mathjax_train.infer.loading import load_for_inference
from mathjax_train.infer.params import SamplingParams
from mathjax_train.infer.speculate import draft, draft_table
from mathjax_train.infer.step_shape import SMALL_BATCH
from precision import float32_logprob_tolerance

SMALL = dict(page_size=4, decode_steps=4, prefill_budget=16)


def test_draft_follows_the_latest_occurrence_of_the_longest_suffix():
    # suffix (7, 8) occurs at 1 and 5; the latest (5) is followed by 4, 4
    assert draft([9, 7, 8, 1, 2, 7, 8, 4, 4, 3, 7, 8], 2) == [4, 4]
    # the 3-gram (1, 7, 8) occurs once, followed by 5: it wins over the later 2-gram (7, 8) -> 6
    assert draft([1, 7, 8, 5, 0, 7, 8, 6, 1, 7, 8], 3) == [5, 0, 7]
    assert draft([5, 6, 7, 5], 4) == [6, 7, 5]  # only a 1-gram; the draft may run into the suffix itself
    assert draft([1, 2, 3], 2) == []  # nothing repeats
    assert draft([4, 4], 3) == [4]
    assert draft([4], 3) == [] and draft([1, 1, 1], 0) == []


def test_draft_table_pads_short_drafts():
    table, drafted = draft_table([[1, 2, 1], [3, 4], [5, 5, 5, 5]], 4, 2)
    assert table.tolist() == [[2, 1], [-1, -1], [5, -1], [-1, -1]] and drafted == 3


def test_speculative_tokens_out_of_range_is_named():
    with pytest.raises(ConfigError, match="engine.speculative_tokens must be in"):
        EngineConfig(speculative_tokens=-1).validate()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    hf, ckpt = import_random_model(tmp_path_factory.mktemp("spec"), "llama", seed=3)
    return hf, load_for_inference(ckpt)


def _prompts():
    rng = np.random.RandomState(4)
    # repeated phrases, as a question's numbers recur in its answer: the lookup has something to draft
    return [(rng.randint(3, 300, n).tolist() * 3)[: 3 * n - 1] for n in (5, 9, 14)]


# the plain-JAX path (a program per page-table width) in the slow set, as in tests/test_engine.py
@pytest.mark.parametrize("attention", ["cpu", pytest.param("xla", marks=pytest.mark.slow)])
def test_greedy_with_speculation_is_the_models_greedy(tiny, attention):
    """Rows of different lengths, one cut by max_tokens inside a speculative step: the tokens equal transformers'
    greedy and the engine's without speculation, drafted tokens were kept, and the log-probabilities are the
    model's within two float32 implementations' budget (tests/precision.py)."""
    hf, m = tiny
    prompts = _prompts()
    lengths = [30, 11, 23]
    params = [SamplingParams(max_tokens=n, ignore_eos=True) for n in lengths]
    spec = Engine(m, EngineConfig(num_slots=4, attention=attention, speculative_tokens=3, **SMALL))
    out = spec.generate(prompts, params, [[0]] * 3)
    plain = Engine(m, EngineConfig(num_slots=4, attention=attention, speculative_tokens=0, **SMALL))
    want = plain.generate(prompts, params, [[0]] * 3)
    assert plain.stats.verify_calls == 0
    assert spec.stats.verify_calls > 0 and spec.stats.accepted_tokens > 0
    assert spec.stats.verify_calls + spec.stats.decode_chunks < plain.stats.decode_chunks * SMALL["decode_steps"]
    cfg = m.cfg
    for p, n, (c,), (w,) in zip(prompts, lengths, out, want):
        assert c.token_ids == w.token_ids and len(c.token_ids) == n and c.finish_reason == "length"
        ref = hf.generate(torch.tensor([p]), max_new_tokens=n, do_sample=False, eos_token_id=None, pad_token_id=0)
        assert c.token_ids == ref[0, len(p) :].tolist()
        with torch.no_grad():
            logits = hf(torch.tensor([p + c.token_ids])).logits[0, len(p) - 1 : -1].double().numpy()
        logp = (
            logits
            - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True))
            - logits.max(-1, keepdims=True)
        )
        want_lp = logp[np.arange(n), c.token_ids]
        tol = float32_logprob_tolerance(logits, want_lp, cfg.num_layers, cfg.intermediate_size)
        np.testing.assert_allclose(c.logprobs, want_lp, rtol=0, atol=tol)
    assert spec.pages_held_by_rows() == 0


def test_eos_inside_a_speculative_step_ends_the_row_there(tiny):
    hf, m = tiny
    prompts = _prompts()
    free = Engine(m, EngineConfig(num_slots=4, speculative_tokens=0, **SMALL)).generate(
        prompts, SamplingParams(max_tokens=20, ignore_eos=True), [[0]] * 3
    )
    eos = free[2][0].token_ids[7]
    m_eos = dataclasses.replace(m, cfg=dataclasses.replace(m.cfg, eos_token_id=[eos]))
    eng = Engine(m_eos, EngineConfig(num_slots=4, speculative_tokens=4, **SMALL))
    out = eng.generate(prompts, SamplingParams(max_tokens=20), [[0]] * 3)
    assert eng.stats.verify_calls > 0
    for (c,), (f,) in zip(out, free):
        cut = f.token_ids.index(eos) + 1 if eos in f.token_ids else 20
        assert c.token_ids == f.token_ids[:cut]
        assert c.finish_reason == ("eos" if eos in f.token_ids else "length")


def test_sampled_rows_and_large_batches_do_not_speculate(tiny):
    _, m = tiny
    prompts = _prompts()
    # the whole batch is admitted in one step (budget 512 tokens), so it runs as SMALL_BATCH + 1 rows
    eng = Engine(m, EngineConfig(num_slots=16, speculative_tokens=2, page_size=4, decode_steps=4, prefill_budget=512))
    eng.generate(prompts, SamplingParams(max_tokens=6, temperature=0.7, ignore_eos=True), [[1]] * 3)
    many = (prompts * 3)[: SMALL_BATCH + 1]
    eng.generate(many, SamplingParams(max_tokens=3, ignore_eos=True), [[0]] * len(many))
    assert eng.stats.verify_calls == 0
