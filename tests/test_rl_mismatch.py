"""Sampler/learner mismatch: the measurement and the corrections against hand-computed examples, the engine's
log-probabilities against the learner's recomputation within a float32 bound derived from the rounding, and in
exact mode (rl.exact_logprobs) equal to them bit for bit."""

import dataclasses
import math

import jax
import numpy as np
import pytest

from hf_fixtures import import_random_model
from mathjax_train.config import Config, ConfigError, EngineConfig, MeshConfig, RlConfig, load_config
from mathjax_train.infer.engine import Engine
from mathjax_train.infer.exact import ExactRows
from mathjax_train.infer.loading import load_for_inference
from mathjax_train.infer.params import SamplingParams
from mathjax_train.model import Decoder
from mathjax_train.parallel.mesh import make_mesh
from mathjax_train.parallel.rules import axis_rules
from mathjax_train.rl.batch import build_batch
from mathjax_train.rl.learner import learner_devices, make_reference_logprobs
from mathjax_train.rl.mismatch import correct, correct_batch, mismatch_metrics
from precision import float32_logprob_tolerance

# ratios r = p_learner / p_sampler; row 1 token 2 is padding (mask 0), its ratio 7 must count nowhere
RATIOS = np.array([[1.0, 2.0, 0.9], [1.1, 0.5, 7.0]])
MASK = np.array([[1, 1, 1], [1, 1, 0]], np.float32)
# the float32 inputs are rounded at 2^-24 relative, |log p| <= 3.0 (learner) and 2.31 (sampler): d is off by at most
# 2^-24 (3.0 + 2.31) < 6 x 2^-24, and so are |d|, its mean, k3 (slope e^d - 1 <= 1 for d <= log 2) and r (relative)
ROUNDING = 6 * 2**-24


def _logps():
    sampler = np.log(np.array([[0.5, 0.25, 0.4], [0.2, 0.1, 0.1]])).astype(np.float32)
    return (sampler + np.log(RATIOS)).astype(np.float32), sampler


def _rl(**kw) -> RlConfig:
    return dataclasses.replace(RlConfig(), **kw)


def test_measurement_matches_the_hand_computed_example():
    learner, sampler = _logps()
    m = mismatch_metrics(learner, sampler, MASK)
    # five sampled tokens, |log r| = 0, log 2, -log 0.9, log 1.1, log 2; k3 = r - 1 - log r
    k3 = (2 - 1 - math.log(2)) + (0.9 - 1 - math.log(0.9)) + (1.1 - 1 - math.log(1.1)) + (0.5 - 1 - math.log(0.5))
    want = {
        "mismatch_max_abs": math.log(2),
        "mismatch_mean_abs": (2 * math.log(2) - math.log(0.9) + math.log(1.1)) / 5,
        "mismatch_kl_k3": k3 / 5,
        "mismatch_out_of_band": 2 / 5,  # r = 2 and r = 0.5 leave [0.8, 1.25]; the padding's 7 is not counted
    }
    assert m.keys() == want.keys()
    for k, v in want.items():
        assert m[k] == pytest.approx(v, abs=ROUNDING), k
    assert mismatch_metrics(learner, sampler, np.zeros_like(MASK)) == {}  # nothing sampled: no figure


def test_token_mask_drops_the_tokens_outside_the_band():
    learner, sampler = _logps()
    weight, mask, m = correct(learner, sampler, MASK, _rl(mismatch_mask="token"))
    np.testing.assert_array_equal(mask, [[1, 0, 1], [1, 0, 0]])  # r = 2 and r = 0.5 leave [0.8, 1.25]
    np.testing.assert_array_equal(weight, np.ones_like(MASK))
    assert m == {"mismatch_masked": 2 / 5, "tis_truncated": 0.0}


def test_sequence_mask_drops_rows_by_their_geometric_mean_ratio():
    learner, sampler = _logps()
    # row 0: (1 x 2 x 0.9)^(1/3) = 1.216, inside [0.8, 1.25]; row 1: (1.1 x 0.5)^(1/2) = 0.742, outside
    _, mask, m = correct(learner, sampler, MASK, _rl(mismatch_mask="sequence"))
    np.testing.assert_array_equal(mask, [[1, 1, 1], [0, 0, 0]])
    assert m["mismatch_masked"] == 2 / 5
    _, mask, _ = correct(learner, sampler, MASK, _rl(mismatch_mask="sequence", mismatch_high=1.2))
    np.testing.assert_array_equal(mask, np.zeros_like(MASK))  # 1.216 > 1.2: row 0 goes too


def test_truncated_importance_weights_are_the_ratio_capped():
    learner, sampler = _logps()
    weight, mask, m = correct(learner, sampler, MASK, _rl(tis_cap=1.5))
    # min(r, 1.5) on sampled tokens; the padding keeps weight 1 (its mask is 0 anyway)
    np.testing.assert_allclose(
        weight, [[1.0, 1.5, 0.9], [1.1, 0.5, 1.0]], rtol=ROUNDING + 2**-24
    )  # + the cast to float32
    np.testing.assert_array_equal(mask, MASK)
    assert m == {"mismatch_masked": 0.0, "tis_truncated": 1 / 5}


def test_correcting_a_batch_takes_the_learners_logprobs_as_the_denominator():
    learner, sampler = _logps()
    batch = {"learner_logp": learner, "old_logp": sampler, "loss_mask": MASK}
    off = dict(batch)
    assert correct_batch(off, _rl()) == {}
    assert off["old_logp"] is sampler and off["loss_mask"] is MASK  # off: the sampler's ratio, as before
    np.testing.assert_array_equal(off["is_weight"], np.ones_like(MASK))
    on = dict(batch)
    assert correct_batch(on, _rl(tis_cap=1.5, mismatch_mask="token"))["tis_truncated"] == 1 / 5
    assert on["old_logp"] is learner
    np.testing.assert_array_equal(on["loss_mask"], [[1, 0, 1], [1, 0, 0]])
    assert on["is_weight"][0, 1] == np.float32(1.5)


def test_bad_correction_settings_name_the_field():
    with pytest.raises(ConfigError, match="rl.tis_cap must be 0 .off. or >= 1"):
        load_config(None, ["rl.tis_cap=0.5"])
    with pytest.raises(ConfigError, match="rl.mismatch_mask: 'row' is not one of 'none', 'token', 'sequence'"):
        load_config(None, ["rl.mismatch_mask=row"])
    with pytest.raises(ConfigError, match="rl.mismatch_low / mismatch_high"):
        load_config(None, ["rl.mismatch_low=1.1"])
    with pytest.raises(ConfigError, match="rl.exact_logprobs: not with tools='python'"):
        load_config(None, ["rl.exact_logprobs=true", "rl.tools=python"])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return load_for_inference(import_random_model(tmp_path_factory.mktemp("mismatch"), seed=7)[1])


@pytest.mark.parametrize("attention", ["cpu", "xla"])  # the C++ paged kernel and the plain-JAX path
def test_engine_and_learner_logprobs_agree_within_float32_rounding(tiny, attention):
    """Rows of different lengths in 2 slots (admitted as others end), chunked prefill, 4-token pages: the engine's
    log-probabilities of what it sampled, against the learner's forward over the whole rows."""
    m = tiny
    rng = np.random.RandomState(0)
    prompts = [rng.randint(3, 300, n).tolist() for n in (5, 23, 11, 40)]
    eng = Engine(m, EngineConfig(num_slots=2, attention=attention, page_size=4, decode_steps=4, prefill_budget=16))
    sps = [SamplingParams(max_tokens=n, temperature=1.0, ignore_eos=True) for n in (14, 6, 20, 9)]
    comps = [c for (c,) in eng.generate(prompts, sps, [[i] for i in range(4)])]
    seq_len = 64
    batch = build_batch(prompts, comps, [0.0] * 4, seq_len, 4)
    cfg = Config(mesh=MeshConfig(data=1))  # the learner on the engine's one device
    mesh = make_mesh(cfg.mesh, learner_devices(cfg))
    with jax.set_mesh(mesh):
        learner = np.asarray(make_reference_logprobs(m.cfg, axis_rules(cfg.mesh.rules), mesh)(m.params, batch))
    logits = np.asarray(
        Decoder(m.cfg).apply({"params": m.params}, batch["tokens"], batch["positions"], batch["segment_ids"])[0]
    )
    on = batch["loss_mask"] > 0
    assert on.sum() == 14 + 6 + 20 + 9
    mc = m.cfg
    widest = max(mc.hidden_size, mc.intermediate_size, seq_len)  # attention's sum over positions counts too
    bound = float32_logprob_tolerance(logits[on], learner[on], mc.num_layers, widest)
    got = mismatch_metrics(learner, batch["old_logp"], batch["loss_mask"])
    assert all(math.isfinite(v) for v in got.values())
    assert got["mismatch_max_abs"] <= bound, (got, bound)
    assert 0 <= got["mismatch_mean_abs"] <= got["mismatch_max_abs"] and got["mismatch_kl_k3"] >= 0
    assert bound < -math.log(0.8)  # so no token's ratio may leave [0.8, 1.25]
    assert got["mismatch_out_of_band"] == 0.0


def test_exact_mode_learner_logprobs_equal_the_engines_bit_for_bit(tiny):
    """rl.exact_logprobs: rows of different lengths sampled in 2 slots (admitted as others end, 4-token pages, chunked
    prefill) and the learner's scoring of the whole rows give the same float32 numbers, difference exactly 0.0."""
    m, seq_len = tiny, 64
    rng = np.random.RandomState(1)
    prompts = [rng.randint(3, 300, n).tolist() for n in (5, 23, 11, 40)]
    sps = [SamplingParams(max_tokens=n, temperature=1.0, ignore_eos=True) for n in (14, 6, 20, 9)]
    small = EngineConfig(num_slots=2, page_size=4, decode_steps=4, prefill_budget=16)
    eng = Engine(m, small, max_seq_len=seq_len + 1, exact=True)
    comps = [c for (c,) in eng.generate(prompts, sps, [[i] for i in range(4)])]
    batch = build_batch(prompts, comps, [0.0] * 4, seq_len, 4)
    learner = ExactRows(m.cfg, seq_len).target_logprobs(m.params, batch)
    on = batch["loss_mask"] > 0
    assert on.sum() == 14 + 6 + 20 + 9
    assert np.abs(learner[on] - batch["old_logp"][on]).max() == 0.0
    assert mismatch_metrics(learner, batch["old_logp"], batch["loss_mask"])["mismatch_max_abs"] == 0.0
    # the last row alone in another engine (one slot, 16-token pages, one prefill): the same tokens and numbers
    alone = Engine(m, EngineConfig(num_slots=1), max_seq_len=seq_len + 1, exact=True)
    ((c,),) = alone.generate([prompts[3]], sps[3], [[3]])
    assert c.token_ids == comps[3].token_ids and c.logprobs == comps[3].logprobs
