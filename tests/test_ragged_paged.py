"""The ragged paged attention path (model/ragged_paged.py) against plain references: JAX's Pallas TPU kernel in
interpret mode on CPU, over a pool in the kernel's layout (layers, pages, page_size, 2 * kv_heads, head_dim)."""

import dataclasses

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from mathjax_train.config import ModelConfig
from mathjax_train.model.attention import PagedKV, paged_attention, paged_masks, paged_read
from mathjax_train.model.ragged_paged import (
    init_ragged_pages,
    ragged_attention,
    ragged_page_bytes,
    supported,
    write_kv,
)

# One batch of every kind of row: (q_len, kv_len). Several pages per row (page_size 4), query and key blocks
# of the kernel crossed (8 queries, 2 pages a block in interpret mode), an empty slot before a prefill row.
ROWS = [
    (1, 7),  # decode
    (0, 0),  # empty slot
    (6, 6),  # first prefill chunk
    (4, 17),  # later prefill chunk, 5 pages
    (0, 9),  # a slot holding a sequence, with nothing to run this step
    (1, 1),  # decode of a one-token sequence
]
LAYERS, LAYER, NUM_PAGES, PAGE_SIZE, HEADS, HEAD_DIM, T = 3, 1, 32, 4, 4, 128, 6
TABLE_PAGES = 5


def page_tables(rng, rows, num_pages: int, page_size: int, width: int) -> np.ndarray:
    """Distinct, shuffled pages (never the trash page 0) for each row's tokens; unused entries 0."""
    free = list(rng.permutation(np.arange(1, num_pages)))
    table = np.zeros((len(rows), width), np.int32)
    for r, (_, kv_len) in enumerate(rows):
        for c in range(-(-kv_len // page_size)):
            table[r, c] = free.pop()
    return table


def random_pool(rng, layers: int, num_pages: int, page_size: int, kv_heads: int, head_dim: int, layer: int):
    """A pool of random keys/values; the layers other than `layer` far off (mean 10), so a leak shows."""
    pool = rng.standard_normal((layers, num_pages, page_size, 2 * kv_heads, head_dim)).astype(np.float32)
    others = [i for i in range(layers) if i != layer]
    pool[others] = pool[others] * 3 + 10
    return pool


def reference(q, pool, layer: int, table, kv_lens, q_lens, window: int) -> np.ndarray:
    """Straightforward causal GQA attention in float64: each row's keys gathered token by token from its pages;
    query j of row b at cache index kv_lens[b] - q_lens[b] + j. Padding queries are 0."""
    q, pool = np.asarray(q, np.float64), np.asarray(pool, np.float64)
    b, t, h, d = q.shape
    page_size, kv_heads = pool.shape[2], pool.shape[3] // 2
    kv_of_head = np.arange(h) // (h // kv_heads)
    out = np.zeros((b, t, h, d))
    for r in range(b):
        n, m = int(kv_lens[r]), int(q_lens[r])
        keys_at = np.arange(n)
        tokens = pool[layer, table[r, keys_at // page_size], keys_at % page_size]  # (n, 2 * kv_heads, head_dim)
        k = tokens[:, 0::2, :d][:, kv_of_head]  # (n, h, d)
        v = tokens[:, 1::2, :d][:, kv_of_head]
        for j in range(m):
            i = n - m + j
            visible = keys_at <= i
            if window:
                visible &= i - keys_at < window
            scores = np.einsum("hd,nhd->hn", q[r, j], k) / np.sqrt(d)
            scores = np.where(visible[None], scores, -np.inf)
            p = np.exp(scores - scores.max(axis=1, keepdims=True))
            out[r, j] = np.einsum("hn,nhd->hd", p / p.sum(axis=1, keepdims=True), v)
    return out


def batch(kv_heads: int, seed: int = 0):
    """q (b, T, heads, head_dim), pool, page table, kv_lens, q_lens for ROWS."""
    rng = np.random.default_rng(seed)
    table = page_tables(rng, ROWS, NUM_PAGES, PAGE_SIZE, TABLE_PAGES)
    pool = random_pool(rng, LAYERS, NUM_PAGES, PAGE_SIZE, kv_heads, HEAD_DIM, LAYER)
    q = rng.standard_normal((len(ROWS), T, HEADS, HEAD_DIM)).astype(np.float32)
    q_lens = np.array([r[0] for r in ROWS], np.int32)
    kv_lens = np.array([r[1] for r in ROWS], np.int32)
    return q, pool, table, kv_lens, q_lens


def check_padding(out, q_lens) -> None:
    """Padding queries (j >= q_lens[b]) come back as exact zeros."""
    out = np.asarray(out)
    for r, m in enumerate(q_lens):
        assert not out[r, m:].any(), f"row {r}: padding queries are not zero"


def test_write_kv_places_tokens_and_sends_padding_to_trash_page():
    rng = np.random.default_rng(1)
    layers, num_pages, page_size, kv_heads, d = 2, 12, 4, 2, 8
    pool = rng.standard_normal((layers, num_pages, page_size, 2 * kv_heads, d)).astype(np.float32)
    table = np.array([[3, 7, 1], [5, 2, 9], [4, 0, 0]], np.int32)
    start = np.array([1, 9, 0], np.int32)  # row 1's padding runs past its table (index 13 -> column 3)
    count = np.array([5, 2, 0], np.int32)  # row 2 writes nothing
    t = 5
    k = rng.standard_normal((3, t, kv_heads, d)).astype(np.float32)
    v = rng.standard_normal((3, t, kv_heads, d)).astype(np.float32)

    out = np.asarray(write_kv(jnp.asarray(pool), 1, jnp.asarray(k), jnp.asarray(v), table, start, count))

    expected = pool.copy()
    for r in range(3):
        for j in range(count[r]):
            i = start[r] + j
            expected[1, table[r, i // page_size], i % page_size, 0::2] = k[r, j]
            expected[1, table[r, i // page_size], i % page_size, 1::2] = v[r, j]
    np.testing.assert_array_equal(out[:, 1:], expected[:, 1:])  # every real page, both layers
    np.testing.assert_array_equal(out[0], pool[0])  # the other layer, trash page included
    assert (out[1, 0] != pool[1, 0]).any(), "padding tokens were not written to the trash page"


def test_write_kv_pads_head_dim_with_zeros():
    cfg = ModelConfig(num_layers=2, num_heads=2, num_kv_heads=1, hidden_size=2 * 64, dtype="float32")
    pool = init_ragged_pages(cfg, 4, 2, pad_head_dim=True)
    assert pool.shape == (2, 4, 2, 2, 128)
    assert ragged_page_bytes(cfg, 2, pad_head_dim=True) == pool[:, 0].size * 4
    k, v = jnp.ones((1, 2, 1, 64)), jnp.full((1, 2, 1, 64), 2.0)
    out = np.asarray(write_kv(pool, 0, k, v, np.array([[3]], np.int32), np.array([0]), np.array([2])))
    np.testing.assert_array_equal(out[0, 3, :, 0, :64], 1.0)
    np.testing.assert_array_equal(out[0, 3, :, 1, :64], 2.0)
    assert not out[..., 64:].any() and not out[1].any()


@pytest.mark.parametrize("kv_heads, window", [(2, 0), (1, 0), (2, 5)])
def test_ragged_attention_matches_reference(kv_heads, window):
    """Decode and prefill rows in one batch, GQA (4 query heads on 2 or 1 kv heads), a window shorter than the
    longest context, layer 1 of 3 with the others far off."""
    q, pool, table, kv_lens, q_lens = batch(kv_heads)
    out = ragged_attention(jnp.asarray(q), jnp.asarray(pool), LAYER, table, kv_lens, q_lens, sliding_window=window)
    assert out.shape == q.shape and out.dtype == jnp.float32
    assert not np.isnan(np.asarray(out)).any()
    expected = reference(q, pool, LAYER, table, kv_lens, q_lens, window)
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-5, atol=1e-5)
    check_padding(out, q_lens)


def test_ragged_attention_matches_plain_paged_attention():
    """The same answers as the engine's plain path (attention.paged_attention): earlier tokens in pages of its
    layout (layers, kv_heads, pages, page_size, head_dim), this step's tokens in its side buffer."""
    window = 5
    q, pool, table, kv_lens, q_lens = batch(kv_heads=2)
    out = np.asarray(
        ragged_attention(jnp.asarray(q), jnp.asarray(pool), LAYER, table, kv_lens, q_lens, sliding_window=window)
    )

    pages_k = jnp.asarray(pool[:, :, :, 0::2].transpose(0, 3, 1, 2, 4))
    pages_v = jnp.asarray(pool[:, :, :, 1::2].transpose(0, 3, 1, 2, 4))
    start = kv_lens - q_lens
    side = np.zeros((2, 2, len(ROWS), T, HEAD_DIM), np.float32)  # (k/v, kv_heads, batch, T, head_dim)
    for r, m in enumerate(q_lens):
        for s in range(m):
            i = start[r] + s
            token = pool[LAYER, table[r, i // PAGE_SIZE], i % PAGE_SIZE]
            side[0, :, r, s], side[1, :, r, s] = token[0::2], token[1::2]
    kv = PagedKV(pages_k, pages_v, jnp.asarray(table), jnp.asarray(start), jnp.int32(0))
    pages = (paged_read(pages_k, LAYER, kv.page_table), paged_read(pages_v, LAYER, kv.page_table))
    masks = paged_masks(kv, T, pages[0].shape[2], T, window)
    plain = np.asarray(paged_attention(jnp.asarray(q), pages, (jnp.asarray(side[0]), jnp.asarray(side[1])), masks))
    for r, m in enumerate(q_lens):
        np.testing.assert_allclose(out[r, :m], plain[r, :m], rtol=1e-5, atol=1e-5)


def test_ragged_attention_bfloat16_cache():
    """A bf16 cache takes the kernel's packed path; q is cast to bf16 for it. Off the float64 answer on the same
    bf16 inputs by the output's bf16 rounding only (half a unit in the last place: 2**-8 relative)."""
    q, pool, table, kv_lens, q_lens = batch(kv_heads=2, seed=2)
    q16, pool16 = q.astype(ml_dtypes.bfloat16), pool.astype(ml_dtypes.bfloat16)
    out = ragged_attention(jnp.asarray(q), jnp.asarray(pool16), LAYER, table, kv_lens, q_lens)
    assert out.dtype == jnp.float32
    expected = reference(q16, pool16, LAYER, table, kv_lens, q_lens, 0)
    np.testing.assert_allclose(np.asarray(out), expected, rtol=2**-8, atol=1e-5)
    check_padding(out, q_lens)


def test_write_then_attend_under_jit_with_traced_layer():
    """The decoder's use: inside jit, a fori_loop over layers (layer traced) writes each layer's new keys/values
    and attends over them; head_dim 64 padded to the kernel's 128 in the cache."""
    cfg = ModelConfig(num_layers=3, num_heads=4, num_kv_heads=2, hidden_size=4 * 64, dtype="float32")
    num_pages, page_size, t = 16, 4, 5
    rng = np.random.default_rng(3)
    start = np.array([6, 0, 0], np.int32)  # decode after 6 tokens, prefill of 5, empty slot
    count = np.array([1, 5, 0], np.int32)
    table = np.array([[3, 9, 0], [12, 5, 0], [0, 0, 0]], np.int32)
    pool = np.zeros(init_ragged_pages(cfg, num_pages, page_size, pad_head_dim=True).shape, np.float32)
    pool[..., :64] = rng.standard_normal(pool[..., :64].shape)
    q = rng.standard_normal((cfg.num_layers, 3, t, 4, 64)).astype(np.float32)
    k = rng.standard_normal((cfg.num_layers, 3, t, 2, 64)).astype(np.float32)
    v = rng.standard_normal((cfg.num_layers, 3, t, 2, 64)).astype(np.float32)

    @jax.jit
    def layers(pages, q, k, v):
        def one(layer, carry):
            pages, outs = carry
            pages = write_kv(pages, layer, k[layer], v[layer], table, start, count)
            out = ragged_attention(q[layer], pages, layer, table, start + count, count)
            return pages, outs.at[layer].set(out)

        return jax.lax.fori_loop(0, cfg.num_layers, one, (pages, jnp.zeros_like(q)))

    pages, outs = layers(jnp.asarray(pool), q, k, v)

    expected_pool = pool.copy()
    for layer in range(cfg.num_layers):
        for r in range(3):
            for j in range(count[r]):
                i = start[r] + j
                slot = expected_pool[layer, table[r, i // page_size], i % page_size]
                slot[0::2, :64], slot[1::2, :64] = k[layer, r, j], v[layer, r, j]
    np.testing.assert_array_equal(np.asarray(pages)[:, 1:], expected_pool[:, 1:])
    for layer in range(cfg.num_layers):
        expected = reference(q[layer], expected_pool, layer, table, start + count, count, 0)
        np.testing.assert_allclose(np.asarray(outs[layer]), expected, rtol=1e-5, atol=1e-5)
    check_padding(outs[0], count)


def test_supported_names_what_the_kernel_refuses():
    base = ModelConfig(num_layers=2, num_heads=32, num_kv_heads=8, hidden_size=32 * 128)
    assert supported(base, 16, "bfloat16") is None  # LLaMA/Mistral 7B-class
    assert supported(base, 16, "float32") is None
    smollm2 = dataclasses.replace(base, num_heads=9, num_kv_heads=3, hidden_size=9 * 64)
    assert "kv heads" in supported(smollm2, 16, "bfloat16", pad_head_dim=True)
    assert "head_dim 64" in supported(smollm2, 16, "bfloat16")
    qwen2_small = dataclasses.replace(base, num_heads=14, num_kv_heads=2, hidden_size=14 * 64)
    assert "head_dim 64" in supported(qwen2_small, 16, "bfloat16")
    assert supported(qwen2_small, 16, "bfloat16", pad_head_dim=True) is None
    twelve = dataclasses.replace(base, num_heads=24, num_kv_heads=12, hidden_size=24 * 128)
    assert "12 kv heads" in supported(twelve, 16, "bfloat16")  # 24 combined heads: 12 packed bf16 rows
    assert supported(twelve, 16, "float32") is None
    assert "float16" in supported(base, 16, "float16")

    # What supported() refuses, the kernel refuses too (both fail while tracing; nothing runs).
    q = jnp.zeros((2, 1, 9, 128))
    with pytest.raises(ValueError, match="Not implemented"):
        ragged_attention(q, jnp.zeros((1, 4, 4, 6, 128)), 0, np.ones((2, 1), np.int32), np.ones(2), np.ones(2))
    with pytest.raises(AssertionError):  # head_dim 64
        q = jnp.zeros((2, 1, 4, 64))
        ragged_attention(q, jnp.zeros((1, 4, 4, 4, 64)), 0, np.ones((2, 1), np.int32), np.ones(2), np.ones(2))


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    from hf_fixtures import import_random_model
    from mathjax_train.infer.loading import load_for_inference

    hf, ckpt = import_random_model(tmp_path_factory.mktemp("ragged"), "llama", seed=3)
    return hf, load_for_inference(ckpt)


@pytest.mark.slow
def test_the_engine_on_the_ragged_kernel_matches_transformers_and_the_xla_engine(tiny_llama):
    """The whole engine with engine.attention=pallas (interpret mode): greedy rows of mixed prompt lengths,
    admitted as slots free up, prefilled in chunks, equal transformers token for token; the samples of one
    prompt (its partial page copied in the pool's layout) equal the XLA engine's."""
    from mathjax_train.config import EngineConfig
    from mathjax_train.infer.engine import Engine
    from mathjax_train.infer.params import SamplingParams
    from test_engine import hf_greedy

    hf, m = tiny_llama
    small = dict(page_size=4, decode_steps=3, prefill_budget=16)
    prompts = [[5, 6, 7, 8, 9, 10, 11], [20, 21, 22], list(range(30, 51))]  # the last prefills in two chunks
    lengths = (5, 7, 4)
    eng = Engine(m, EngineConfig(num_slots=2, attention="pallas", **small))
    assert eng.kernel.name == "pallas" and set(eng.cache) == {"pool"}
    out = eng.generate(prompts, [SamplingParams(max_tokens=n, ignore_eos=True) for n in lengths], [[0]] * 3)
    for p, n, (c,) in zip(prompts, lengths, out):
        assert c.token_ids == hf_greedy(hf, p, n)
    assert eng.stats.prefill_calls > len(prompts)

    sp = SamplingParams(max_tokens=5, temperature=1.0, ignore_eos=True)
    prompt = list(range(40, 50))  # 9 cached tokens: two full pages and a partial one for each sample
    got = Engine(m, EngineConfig(num_slots=3, attention="pallas", **small)).generate([prompt], sp, [[1, 2, 3]])[0]
    want = Engine(m, EngineConfig(num_slots=3, attention="xla", **small)).generate([prompt], sp, [[1, 2, 3]])[0]
    assert [c.token_ids for c in got] == [c.token_ids for c in want]
    np.testing.assert_allclose([c.logprobs for c in got], [c.logprobs for c in want], atol=1e-5)


@pytest.mark.slow
def test_the_engine_on_the_ragged_kernel_applies_qwen3s_qk_norm(tmp_path):
    """Qwen3 (QK-norm, head_dim 32 != hidden / heads) on engine.attention=pallas (interpret mode): greedy rows,
    one prefilled in two chunks, equal transformers token for token."""
    from hf_fixtures import import_random_model
    from mathjax_train.config import EngineConfig
    from mathjax_train.infer.engine import Engine
    from mathjax_train.infer.loading import load_for_inference
    from mathjax_train.infer.params import SamplingParams
    from test_engine import hf_greedy

    hf, ckpt = import_random_model(tmp_path, "qwen3", seed=3)
    small = dict(page_size=4, decode_steps=3, prefill_budget=16)
    eng = Engine(load_for_inference(ckpt), EngineConfig(num_slots=2, attention="pallas", **small))
    assert eng.kernel.name == "pallas"
    prompts, lengths = [[20, 21, 22], list(range(30, 51))], (6, 5)
    out = eng.generate(prompts, [SamplingParams(max_tokens=n, ignore_eos=True) for n in lengths], [[0]] * 2)
    for p, n, (c,) in zip(prompts, lengths, out):
        assert c.token_ids == hf_greedy(hf, p, n)
    assert eng.stats.prefill_calls > len(prompts)
