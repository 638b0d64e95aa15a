"""Automatic prefix caching (infer/prefix_cache.py): later prompts that start like earlier ones take their full
pages instead of prefilling them, with the same tokens as a cold engine; cached pages give way when the pool runs
short; new parameters empty the cache."""

import dataclasses

import numpy as np
import pytest

from hf_fixtures import import_random_model
from mathjax_train.config import EngineConfig
from mathjax_train.infer.engine import Engine
from mathjax_train.infer.loading import load_for_inference
from mathjax_train.infer.pages import PagePool
from mathjax_train.infer.params import SamplingParams
from mathjax_train.infer.prefix_cache import PrefixCache
from test_engine import hf_greedy

SMALL = dict(page_size=4, decode_steps=4, prefill_budget=16)
GREEDY = SamplingParams(max_tokens=6, ignore_eos=True)


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    hf, ckpt = import_random_model(tmp_path_factory.mktemp("prefix"), "llama", seed=3)
    return hf, load_for_inference(ckpt)


def test_the_trie_finds_the_longest_run_of_full_pages_and_counts_references():
    pool = PagePool(10)
    cache = PrefixCache(pool, page_size=2)
    a = pool.allocate(3)  # a row's pages for tokens 1..6
    cache.insert([1, 2, 3, 4, 5, 6, 7], a, upto=6)
    assert cache.held == 3 and all(pool.refs(p) == 2 for p in a)
    assert cache.lookup([1, 2, 3, 4, 9, 9, 9], upto=6) == a[:2]  # diverges in the third page
    assert cache.lookup([1, 2, 3], upto=2) == a[:1]  # only full pages within `upto`
    assert cache.lookup([2, 1, 3, 4], upto=4) == []  # a page matches only after the same pages before it
    assert pool.refs(a[0]) == 4 and pool.refs(a[1]) == 3  # two lookups shared the first page, one the second
    pool.release(a + a[:2] + a[:1])  # the row and the lookups let go
    assert [pool.refs(p) for p in a] == [1, 1, 1] and cache.cached_only() == 3


def test_eviction_takes_the_least_recently_used_run_from_its_tail():
    pool = PagePool(10)
    cache = PrefixCache(pool, page_size=1)
    x, y = pool.allocate(3), pool.allocate(2)
    cache.insert([1, 2, 3], x, upto=3)
    cache.insert([7, 8], y, upto=2)
    pool.release(x + y)
    pool.release(cache.lookup([1, 2, 3], upto=3))  # x is now the most recent run
    free = pool.free
    assert cache.evict(1) == 1 and pool.free == free + 1
    assert cache.lookup([7, 8], upto=2) == [y[0]]  # y's tail went first; its head is still cached
    pool.release([y[0]])
    in_use = cache.lookup([1, 2], upto=2)  # a row holds x's first two pages: they cannot be evicted
    assert cache.evict(10) == 2 and cache.held == 2  # y's head and x's tail, not what the row holds
    pool.release(in_use)
    cache.clear()
    assert cache.held == 0 and pool.free == pool.usable


def test_dropping_a_page_forgets_the_pages_cached_after_it():
    pool = PagePool(10)
    cache = PrefixCache(pool, page_size=1)
    pages = pool.allocate(4)
    cache.insert([1, 2, 3, 4], pages, upto=4)
    pool.release(pages)
    row = cache.lookup([1, 2, 3, 4], upto=4)
    pool.release(row[:1])  # the row keeps the last three pages; the first is the cache's alone
    assert cache.evict(1) == 1  # the head goes, and with it everything after it (unreachable now)
    assert cache.held == 0 and all(pool.refs(p) == 1 for p in row[1:])
    pool.release(row[1:])
    assert pool.free == pool.usable


def test_a_prompt_that_starts_like_an_earlier_one_prefills_only_the_rest(llama):
    hf, m = llama
    rng = np.random.RandomState(1)
    first = rng.randint(3, 300, 30).tolist()
    second = first[:22] + rng.randint(3, 300, 10).tolist()
    eng = Engine(m, EngineConfig(num_slots=2, **SMALL))
    (a,) = eng.generate([first], GREEDY, [[0]])[0]
    before = eng.stats.prefill_tokens
    (b,) = eng.generate([second], GREEDY, [[0]])[0]
    assert eng.stats.prefix_hit_tokens == 20  # five full pages of the shared 22 tokens
    assert eng.stats.prefill_tokens - before == len(second) - 1 - 20
    assert a.token_ids == hf_greedy(hf, first, 6) and b.token_ids == hf_greedy(hf, second, 6)
    cold = Engine(m, EngineConfig(num_slots=2, prefix_cache=False, **SMALL))
    assert cold.generate([second], GREEDY, [[0]])[0][0].token_ids == b.token_ids
    assert cold.stats.prefix_hit_tokens == 0 and cold.pool.free == cold.pool.usable
    (again,) = eng.generate([first], GREEDY, [[0]])[0]  # the whole prompt but its last token is cached
    assert again.token_ids == a.token_ids and eng.stats.prefix_hit_tokens == 20 + 28


def test_cached_pages_give_way_when_the_pool_runs_short(llama):
    _, m = llama
    prompts = [np.random.RandomState(i).randint(3, 300, 21).tolist() for i in range(6)]
    sp = SamplingParams(max_tokens=8, temperature=0.8, ignore_eos=True)
    roomy = Engine(m, EngineConfig(num_slots=2, prefix_cache=False, **SMALL)).generate(
        prompts, sp, [[i] for i in range(6)]
    )
    tight = Engine(m, EngineConfig(num_slots=2, num_pages=20, **SMALL))  # 19 pages; each row needs 8
    for i, p in enumerate(prompts):  # one at a time: each leaves 5 cached pages behind
        assert tight.generate([p], sp, [[i]])[0][0].token_ids == roomy[i][0].token_ids
        assert tight.prefix.held <= tight.pool.usable
    assert tight.stats.preemptions == 0 and tight.pages_held_by_rows() == 0
    assert tight.prefix.held < 5 * len(prompts)  # older runs were evicted to make room


def test_new_parameters_empty_the_cache(llama):
    _, m = llama
    m = dataclasses.replace(m)  # its own LoadedModel: the module's fixture keeps its params
    prompt = list(range(10, 40))
    eng = Engine(m, EngineConfig(num_slots=1, **SMALL))
    eng.generate([prompt], GREEDY, [[0]])
    eng.generate([prompt], GREEDY, [[0]])
    hits = eng.stats.prefix_hit_tokens
    assert hits > 0
    m.params = dict(m.params)  # what rl does after an update: the engine samples with the new params
    eng.generate([prompt], GREEDY, [[0]])
    assert eng.stats.prefix_hit_tokens == hits  # nothing was reused from the old parameters' pages


def test_prompts_admitted_together_share_prefill_calls_and_read_what_the_call_before_wrote(llama):
    """Short prompts admitted in one step are prefilled together (fewer program calls than chunks). A prompt
    whose prefix pages another prompt of the same step is still filling, and a prompt longer than the budget
    (its second chunk reads its first), wait for those writes: every row equals transformers' greedy."""
    hf, m = llama
    rng = np.random.RandomState(21)
    shared = rng.randint(3, 300, 12).tolist()  # three full 4-token pages
    # the second shared-prefix prompt prefills 3 tokens after the 12 it takes, in the same 4-row call as the first
    # but for the wait; the last prompt is two chunks (64 + 35)
    prompts = [shared + [17, 18], shared + [19, 20, 21, 22]] + [rng.randint(3, 300, n).tolist() for n in (6, 9, 5, 7)]
    prompts += [rng.randint(3, 300, 100).tolist()]
    eng = Engine(m, EngineConfig(num_slots=8, page_size=4, decode_steps=4, prefill_budget=64))
    out = eng.generate(prompts, GREEDY, [[0]] * len(prompts))
    for p, (c,) in zip(prompts, out):
        assert c.token_ids == hf_greedy(hf, p, GREEDY.max_tokens)
    assert eng.stats.prefix_hit_tokens == 12  # the second shared-prefix prompt took the first one's pages
    assert eng.stats.prefill_programs < eng.stats.prefill_calls
    assert eng.pages_held_by_rows() == 0
