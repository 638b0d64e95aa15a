"""The sampling engine: greedy equals transformers under continuous batching, seeds ignore batching,
shared prompts prefill once, pages come back, preemption recomputes exactly, stops, holds, cancels."""

import dataclasses

import jax
import numpy as np
import pytest
import torch

from hf_fixtures import import_random_model
from mathjax_train.config import EngineConfig
from mathjax_train.infer.engine import Engine
from mathjax_train.infer.loading import load_for_inference
from mathjax_train.infer.pages import OutOfPages, PagePool
from mathjax_train.infer.params import SamplingParams
from mathjax_train.infer.programs import page_bucket

# small pages, chunks and budgets so that page boundaries, chunked prefill and admission all happen
SMALL = dict(page_size=4, decode_steps=4, prefill_budget=16)


_MODELS: dict[str, tuple] = {}  # one model per family for the module's tests, whichever asks first


def _tiny(tmp_path_factory, variant):
    if variant not in _MODELS:
        hf, ckpt = import_random_model(tmp_path_factory.mktemp(variant), variant, seed=3)
        _MODELS[variant] = hf, load_for_inference(ckpt)
    return _MODELS[variant]


@pytest.fixture(scope="module", params=["llama", "mistral", "qwen2", "qwen3"])
def tiny(request, tmp_path_factory):
    return _tiny(tmp_path_factory, request.param)


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return _tiny(tmp_path_factory, "llama")


def hf_greedy(model, prompt, n, eos=None):
    out = model.generate(torch.tensor([prompt]), max_new_tokens=n, do_sample=False, eos_token_id=eos, pad_token_id=0)
    return out[0, len(prompt) :].tolist()


def with_eos(m, eos: int):
    return dataclasses.replace(m, cfg=dataclasses.replace(m.cfg, eos_token_id=[eos]))


def prompts_of(lengths, seed=0):
    rng = np.random.RandomState(seed)
    return [rng.randint(3, 300, n).tolist() for n in lengths]


def test_greedy_matches_transformers_with_admission_mid_run(tiny):
    """Every family on the C++ paged-attention kernel (the CPU default)."""
    _greedy_with_admission_mid_run(*tiny, "cpu")


# The plain-JAX paged path takes 4-5x the C++ kernel's time here (a program per chunk shape). Its only
# family-dependent part is Mistral's sliding window; the other families run it in the slow set.
XLA_FAMILIES = ["mistral", *(pytest.param(f, marks=pytest.mark.slow) for f in ("llama", "qwen2", "qwen3"))]


@pytest.mark.parametrize("family", XLA_FAMILIES)
def test_the_plain_jax_path_matches_transformers_with_admission_mid_run(tmp_path_factory, family):
    _greedy_with_admission_mid_run(*_tiny(tmp_path_factory, family), "xla")


def _greedy_with_admission_mid_run(hf, m, attention):
    prompts = prompts_of((5, 17, 40, 64, 3, 29))
    eng = Engine(m, EngineConfig(num_slots=2, attention=attention, **SMALL))  # 6 prompts, 2 slots: admitted as rows end
    assert eng.kernel.name == attention
    lengths = [40, 12, 33, 7, 40, 21]  # rows end at different steps
    out = eng.generate(prompts, [SamplingParams(max_tokens=n, ignore_eos=True) for n in lengths], [[0]] * 6)
    for p, n, (c,) in zip(prompts, lengths, out):
        assert c.token_ids == hf_greedy(hf, p, n) and c.finish_reason == "length"
    assert eng.stats.prefill_calls > len(prompts)  # the 40- and 64-token prompts were prefilled in chunks
    assert eng.pages_held_by_rows() == 0


def test_eos_ends_rows_at_different_steps(tiny):
    hf, m = tiny
    prompts = prompts_of((6, 11, 23), seed=1)
    free = [hf_greedy(hf, p, 20) for p in prompts]
    eos = free[0][5]  # a token the first row emits; other rows may or may not
    eng = Engine(with_eos(m, eos), EngineConfig(num_slots=4, **SMALL))
    out = eng.generate(prompts, SamplingParams(max_tokens=20), [[0]] * 3)
    for p, (c,) in zip(prompts, out):
        want = hf_greedy(hf, p, 20, eos=eos)
        assert c.token_ids == want
        assert c.finish_reason == ("eos" if want[-1] == eos else "length")
    assert out[0][0].finish_reason == "eos" and len(out[0][0].token_ids) <= 6


def test_logprobs_are_the_models(llama):
    hf, m = llama
    p = prompts_of((9,), seed=2)[0]
    ((c,),) = Engine(m, EngineConfig(num_slots=1, **SMALL)).generate(
        [p], SamplingParams(max_tokens=6, ignore_eos=True), [[0]]
    )
    with torch.no_grad():
        logits = hf(torch.tensor([p + c.token_ids])).logits[0, len(p) - 1 : -1]
    want = torch.log_softmax(logits, -1)[torch.arange(6), torch.tensor(c.token_ids)].numpy()
    np.testing.assert_allclose(c.logprobs, want, atol=1e-4)


# batch invariance is the engine's, whatever the family: Mistral by default, the rest in the slow set
SEED_FAMILIES = ["mistral", *(pytest.param(f, marks=pytest.mark.slow) for f in ("llama", "qwen2", "qwen3"))]


@pytest.mark.parametrize("family", SEED_FAMILIES)
def test_a_seed_gives_the_same_completion_whatever_runs_beside_it(tmp_path_factory, family):
    _, m = _tiny(tmp_path_factory, family)
    sp = SamplingParams(max_tokens=16, temperature=1.0, top_p=0.9, ignore_eos=True)
    p = [4, 5, 6, 7, 8]
    alone = Engine(m, EngineConfig(num_slots=1, **SMALL)).generate([p], sp, [[11]])[0][0]
    eng = Engine(m, EngineConfig(num_slots=8, **SMALL))
    others = prompts_of((3, 30, 12), seed=4)
    greedy = SamplingParams(max_tokens=9, ignore_eos=True)
    rows = [
        eng.submit(others[0], greedy, [0]),
        eng.submit(others[1], sp, [5, 6]),
        eng.submit(p, sp, [12, 11]),
        eng.submit(others[2], SamplingParams(max_tokens=3, temperature=0.5, top_k=5), [1]),
    ]
    eng.run()
    assert rows[2][1].completion.token_ids == alone.token_ids  # another slot, other rows, other settings
    assert rows[2][0].completion.token_ids != alone.token_ids  # a different seed samples differently


def test_samples_of_one_prompt_prefill_it_once(llama):
    _, m = llama
    p = prompts_of((23,), seed=5)[0]
    sp = SamplingParams(max_tokens=10, temperature=1.0, ignore_eos=True)
    eng = Engine(m, EngineConfig(num_slots=3, **SMALL))
    shared = eng.generate([p], sp, [list(range(7))])[0]
    assert eng.stats.prompt_prefills == 1 and eng.stats.prefill_tokens == len(p) - 1
    single = Engine(m, EngineConfig(num_slots=1, **SMALL))
    for seed, c in enumerate(shared):
        assert c.token_ids == single.generate([p], sp, [[seed]])[0][0].token_ids
    assert eng.pages_held_by_rows() == 0


def test_a_thousand_requests_give_every_page_back(llama):
    _, m = llama
    eng = Engine(m, EngineConfig(num_slots=16, **SMALL))
    rng = np.random.RandomState(6)
    rows = []
    for i in range(1000):
        sp = SamplingParams(
            max_tokens=int(rng.randint(1, 4)),
            temperature=float(rng.choice([0.0, 0.8])),
            stop=("x",) if i % 7 == 0 else (),
        )
        rows += eng.submit(rng.randint(3, 300, int(rng.randint(1, 12))).tolist(), sp, [i, i + 1] if i % 5 == 0 else [i])
        if i % 100 == 99:
            eng.step()
            eng.cancel(rows[-1])
    eng.run()
    assert all(r.completion is not None for r in rows)
    assert eng.pages_held_by_rows() == 0
    eng.clear_prefix_cache()  # the pages it kept are all it still holds
    assert eng.pool.free == eng.pool.usable and all(eng.pool.refs(p) == 0 for p in range(eng.num_pages))
    assert eng.stats.finished == len(rows)
    kinds = {k: sorted(sh[1:] for sh in eng.shapes if sh[0] == k) for k in ("prefill", "decode")}
    assert len(kinds["decode"]) <= 3 * 4 and len(kinds["prefill"]) <= 2 * 4, kinds  # few compilations: rows x pages


def test_running_out_of_pages_preempts_and_recomputes_exactly(llama):
    _, m = llama
    prompts = prompts_of((10, 14, 7, 19), seed=7)
    sp = SamplingParams(max_tokens=24, temperature=0.9, ignore_eos=True)
    seeds = [[3], [4], [5], [6]]
    roomy = Engine(m, EngineConfig(num_slots=4, **SMALL)).generate(prompts, sp, seeds)
    tight = Engine(m, EngineConfig(num_slots=4, num_pages=14, **SMALL))  # 13 pages: not enough for 4 rows
    out = tight.generate(prompts, sp, seeds)
    assert tight.stats.preemptions > 0
    assert [c.token_ids for (c,) in out] == [c.token_ids for (c,) in roomy]
    assert tight.pages_held_by_rows() == 0


def test_stop_strings_cut_text_and_tokens(llama):
    _, m = llama
    eng = Engine(m, EngineConfig(num_slots=2, **SMALL))
    full = eng.generate([[5, 6, 7]], SamplingParams(max_tokens=24, ignore_eos=True), [[0]])[0][0]
    stop = full.text[len(full.text) // 2 :][:3]
    cut = eng.generate([[5, 6, 7]], SamplingParams(max_tokens=24, stop=(stop,), ignore_eos=True), [[0]])[0][0]
    assert cut.finish_reason == "stop" and cut.text == full.text[: full.text.find(stop)]
    assert cut.token_ids == full.token_ids[: len(cut.token_ids)] and len(cut.token_ids) < len(full.token_ids)
    assert stop in m.tokenizer.decode(cut.token_ids) and stop not in m.tokenizer.decode(cut.token_ids[:-1])


def test_a_held_row_resumes_in_its_pages(tiny):
    hf, m = tiny
    p = prompts_of((13,), seed=8)[0]
    free = hf_greedy(hf, p, 30)
    stop = m.tokenizer.decode(free[:8])[-2:]
    eng = Engine(m, EngineConfig(num_slots=2, **SMALL))
    (row,) = eng.submit(p, SamplingParams(max_tokens=30, stop=(stop,), ignore_eos=True), [0], hold_on_stop=True)
    eng.run()
    assert row.state == "paused" and row.completion.finish_reason == "stop"
    kept = row.completion.token_ids[:-1]
    appended = [7, 8, 9]
    eng.extend(row, len(kept), appended, SamplingParams(max_tokens=10, ignore_eos=True), seed=0)
    eng.run()
    assert row.completion.token_ids == hf_greedy(hf, p + kept + appended, 10)
    assert eng.pages_held_by_rows() == 0


def test_cancel_frees_the_row(llama):
    _, m = llama
    eng = Engine(m, EngineConfig(num_slots=2, **SMALL))
    (row,) = eng.submit([5, 6, 7], SamplingParams(max_tokens=200, ignore_eos=True), [0])
    eng.step()
    assert row.state == "running"
    eng.cancel(row)
    eng.run()
    assert row.completion.finish_reason == "aborted" and eng.pages_held_by_rows() == 0


def test_an_isolated_row_fails_alone_and_its_batch_mates_finish_as_alone(llama):
    """isolate_rows (a server): a row whose settings the batch cannot hold, and a row whose token callback
    raises, finish with reason "error"; the rows beside them give what they give without them."""
    _, m = llama
    prompts = prompts_of((6, 11, 9, 14), seed=4)
    params = SamplingParams(max_tokens=12, ignore_eos=True)
    alone = Engine(m, EngineConfig(num_slots=4, **SMALL)).generate(prompts[:2], params, [[0], [0]])
    eng = Engine(m, EngineConfig(num_slots=4, **SMALL), isolate_rows=True)
    (a,) = eng.submit(prompts[0], params, [0])
    overflowing = SamplingParams(max_tokens=12, temperature=1.0, top_k=5)
    object.__setattr__(overflowing, "top_k", 2**31)  # past validation: what the old server let through
    (bad_k,) = eng.submit(prompts[2], overflowing, [0])

    def explode(row, new):
        raise RuntimeError("a callback that fails")

    (bad_cb,) = eng.submit(prompts[3], params, [0], on_tokens=explode)
    (b,) = eng.submit(prompts[1], params, [0])
    eng.run()
    assert [a.result().token_ids, b.result().token_ids] == [alone[0][0].token_ids, alone[1][0].token_ids]
    assert (bad_k.completion.finish_reason, type(bad_k.error)) == ("error", OverflowError)
    assert bad_cb.completion.finish_reason == "error" and "a callback that fails" in str(bad_cb.error)
    assert eng.pages_held_by_rows() == 0 and not eng.running
    plain = Engine(m, EngineConfig(num_slots=4, **SMALL))  # a batch job: the failure ends the step
    plain.submit(prompts[2], overflowing, [0])
    with pytest.raises(OverflowError):
        plain.run()


def test_bad_requests_are_refused_with_the_numbers(llama):
    _, m = llama
    eng = Engine(m, EngineConfig(num_slots=2, **SMALL))
    with pytest.raises(ValueError, match="no tokens"):
        eng.submit([], SamplingParams(), [0])
    with pytest.raises(ValueError, match=r"prompt of \d+ tokens: with max_tokens=10 that exceeds"):
        eng.submit([5] * m.cfg.max_position_embeddings, SamplingParams(max_tokens=10), [0])
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(top_p=0.0)
    with pytest.raises(ValueError, match=r"top_k must be in \[0, 2147483647\]"):
        SamplingParams(top_k=2**31)
    with pytest.raises(ValueError, match=r"token id 9999999, outside the vocabulary"):
        eng.submit([5, 9999999], SamplingParams(), [0])
    assert not eng.busy


def test_page_pool_counts_references():
    pool = PagePool(5)
    a = pool.allocate(2)
    assert 0 not in a and pool.free == 2
    pool.share(a)
    pool.release(a)
    assert pool.free == 2  # still held once
    pool.release(a)
    assert pool.free == 4
    with pytest.raises(OutOfPages):
        pool.allocate(5)
    with pytest.raises(RuntimeError):
        pool.release(a)


def test_page_buckets_are_few_and_cover():
    buckets = {page_bucket(n, 10_000) for n in range(1, 2049)}
    assert len(buckets) <= 24
    assert all(page_bucket(n, 10_000) >= n for n in range(1, 2049))
    assert all(page_bucket(n, 10_000) <= max(2, n * 3 // 2) for n in range(1, 2049))
    assert page_bucket(500, 37) == 37


def test_compiling_ahead_covers_every_shape_a_run_needs(llama):
    """What a server does at start-up: afterwards no batch size or prompt length compiles anything new, and the
    trash-page runs changed no result."""
    _, m = llama
    cfg = EngineConfig(num_slots=16, page_size=4, decode_steps=4, prefill_budget=64)
    eng = Engine(m, cfg)
    assert eng.kernel.name == "cpu"  # one page-table width: every shape is known ahead
    ran = eng.compile_ahead()
    programs = eng.programs
    every = (programs._prefill, programs._decode, programs._copy, programs._verify)
    compiled = [f._cache_size() for f in every]
    # prefill calls of 16 tokens for 1 and 4 rows (4 x 16 = the 64-token budget) and of 32/64 tokens for 1, decode
    # for 1/4/16 rows, the speculative step for 1/4/16 rows (up to SMALL_BATCH rows: bucket 16), the page copy
    assert ran == 4 + 3 + 3 + 1
    prompts = prompts_of((3, 9, 70, 33, 5, 100, 12, 64, 17, 2, 45, 8, 30, 6, 21, 50, 11), seed=9)
    sp = SamplingParams(max_tokens=7, temperature=0.7, ignore_eos=True)
    seeds = [[i, i + 100] for i in range(len(prompts))]
    out = eng.generate(prompts, sp, seeds)
    greedy = [p * 3 for p in prompts[:6]]  # repeated text: prompt lookup drafts, the speculative step runs
    eng.generate(greedy, SamplingParams(max_tokens=9, ignore_eos=True), [[0]] * len(greedy))
    assert eng.stats.verify_calls > 0
    assert [f._cache_size() for f in every] == compiled
    fresh = Engine(m, dataclasses.replace(cfg, prefix_cache=False)).generate(prompts, sp, seeds)
    assert [[c.token_ids for c in g] for g in out] == [[c.token_ids for c in g] for g in fresh]


def test_a_program_that_fails_after_taking_the_cache_leaves_a_working_engine(llama):
    """The cache is donated to every program: one that fails midway takes it along. The engine starts a fresh
    cache, the error reaches the caller, and the rows still queued finish exactly as they would have."""
    _, m = llama
    prompts = prompts_of((9, 14, 6), seed=11)
    sp = SamplingParams(max_tokens=10, temperature=0.8, ignore_eos=True)
    want = Engine(m, EngineConfig(num_slots=4, **SMALL)).generate(prompts, sp, [[1], [2], [3]])
    eng = Engine(m, EngineConfig(num_slots=4, **SMALL))
    rows = [eng.submit(p, sp, [i + 1])[0] for i, p in enumerate(prompts)]
    eng.step()  # prefilled, one chunk decoded
    real = eng.programs.decode

    def fails_midway(params, cache, *args, **kwargs):
        jax.tree.map(lambda x: x.delete(), cache)  # what a failed run of a donating program leaves
        raise RuntimeError("injected failure")

    eng.programs.decode = fails_midway
    try:
        with pytest.raises(RuntimeError, match="injected failure"):
            eng.step()
    finally:
        eng.programs.decode = real
    assert eng.stats.cache_losses == 1 and not any(x.is_deleted() for x in jax.tree.leaves(eng.cache))
    eng.run()
    assert [r.completion.token_ids for r in rows] == [c.token_ids for (c,) in want]
    assert eng.pages_held_by_rows() == 0


def test_small_batches_take_short_chunks_and_admit_as_soon_as_a_slot_frees(llama):
    _, m = llama
    cfg = EngineConfig(num_slots=2, page_size=4, decode_steps=16, prefill_budget=64)
    long, short = SamplingParams(max_tokens=30, ignore_eos=True), SamplingParams(max_tokens=2, ignore_eos=True)
    prompts = prompts_of((5, 7, 6), seed=12)
    eng = Engine(m, cfg)
    a, b, c = (eng.submit(p, sp, [0])[0] for p, sp in zip(prompts, (long, short, long)))
    eng.step()  # a and b admitted, c waits: a chunk of 16 // 4 steps, ended when b ends after 2
    assert b.completion is not None and len(a.generated) == 2 and c.state == "waiting"
    eng.step()  # c takes b's slot
    assert c.state == "running"
    eng.run()
    alone = Engine(m, dataclasses.replace(cfg, num_slots=1))  # one row at a time: full 16-step chunks
    assert [r.completion.token_ids for r in (a, b, c)] == [
        alone.generate([p], sp, [[0]])[0][0].token_ids for p, sp in zip(prompts, (long, short, long))
    ]
    big = Engine(m, dataclasses.replace(cfg, num_slots=10))
    rows = [big.submit(p, long, [i])[0] for i, p in enumerate(prompts_of([5] * 12, seed=13))]
    big.step()  # 10 rows run, above SMALL_BATCH: a whole chunk although two rows wait
    assert [len(r.generated) for r in rows] == [16] * 10 + [0, 0]
