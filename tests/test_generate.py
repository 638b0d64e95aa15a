"""Generation: greedy equals transformers token for token; batching, seeds, sampling filters, stops."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from hf_fixtures import make_hf_model
from mathjax_train.cli import main
from mathjax_train.infer import Generator, SamplingParams
from mathjax_train.infer.loading import load_for_inference
from mathjax_train.infer.sampling import filter_top_k, filter_top_p, sample


@pytest.fixture(scope="module", params=["llama", "mistral", "qwen2"])
def tiny(request, tmp_path_factory):
    d = tmp_path_factory.mktemp(request.param)
    hf = make_hf_model(d / "hf", request.param, kv_heads=2, seed=3)
    assert main(["import-hf", str(d / "hf"), str(d / "ckpt"), "--dtype", "float32"]) == 0
    return hf, load_for_inference(d / "ckpt")


def hf_greedy(model, prompt, n):
    out = model.generate(torch.tensor([prompt]), max_new_tokens=n, do_sample=False, eos_token_id=None,
                         pad_token_id=0)
    return out[0, len(prompt):].tolist()


def test_greedy_matches_transformers_and_batching_is_invisible(tiny):
    hf, m = tiny
    rng = np.random.RandomState(0)
    prompts = [rng.randint(3, 300, n).tolist() for n in (5, 17, 40, 64)]
    gen = Generator(m.cfg, m.params, eos_ids=())  # no EOS: compare full 40-token continuations
    sp = SamplingParams(max_new_tokens=40)
    batched = gen.generate(prompts, sp, seeds=[0] * 4)
    for p, g in zip(prompts, batched):
        assert g.token_ids == hf_greedy(hf, p, 40)
        alone = gen.generate([p], sp, seeds=[0], prompt_len=64)[0]
        assert alone.token_ids == g.token_ids


def test_eos_stops_a_row_and_reports_it(tiny):
    hf, m = tiny
    prompt = [5, 6, 7, 8]
    free = Generator(m.cfg, m.params, eos_ids=()).generate([prompt], SamplingParams(max_new_tokens=12), [0])[0]
    eos = free.token_ids[3]  # pretend the 4th greedy token is EOS
    first = free.token_ids.index(eos)
    g = Generator(m.cfg, m.params, eos_ids=[eos]).generate([prompt, [9, 10]], SamplingParams(max_new_tokens=12),
                                                            [0, 0])
    assert g[0].token_ids == free.token_ids[:first + 1] and g[0].finish_reason == "eos"


def test_sampling_is_reproducible_per_row_seed(tiny):
    _, m = tiny
    gen = Generator(m.cfg, m.params, eos_ids=())
    sp = SamplingParams(max_new_tokens=16, temperature=1.0, top_p=0.9)
    p = [4, 5, 6, 7, 8]
    a = gen.generate([p, p, [9, 9, 9]], sp, seeds=[1, 2, 3])
    b = gen.generate([[11, 12], p], sp, seeds=[7, 2])  # same (prompt, seed) in another batch position
    assert a[1].token_ids == b[1].token_ids
    assert a[0].token_ids != a[1].token_ids  # different seeds, different samples


def test_stop_strings_cut_text(tiny):
    _, m = tiny
    gen = Generator(m.cfg, m.params, eos_ids=())
    full = gen.generate([[5, 6, 7]], SamplingParams(max_new_tokens=24), [0], decode_text=m.tokenizer.decode)[0]
    stop = full.text[len(full.text) // 2:][:3]
    assert stop
    cut = gen.generate([[5, 6, 7]], SamplingParams(max_new_tokens=24, stop=[stop], chunk_size=4), [0],
                       decode_text=m.tokenizer.decode)[0]
    assert cut.finish_reason == "stop" and cut.text == full.text[:full.text.find(stop)]
    assert len(cut.token_ids) < len(full.token_ids)  # decoding stopped early, not only the text


def test_top_k_and_top_p_filters():
    logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))
    assert np.isfinite(np.asarray(filter_top_k(logits, 2))).tolist() == [[True, True, False, False]]
    assert np.isfinite(np.asarray(filter_top_p(logits, jnp.float32(0.7)))).tolist() == [[True, True, False, False]]
    assert np.isfinite(np.asarray(filter_top_p(logits, jnp.float32(0.1)))).tolist() == [[True, False, False, False]]
    keys = jax.vmap(jax.random.PRNGKey)(jnp.arange(2000))
    draws = np.asarray(sample(jnp.repeat(logits, 2000, 0), keys, jnp.float32(1.0), jnp.float32(0.7), 0))
    freq = np.bincount(draws, minlength=4) / 2000
    assert freq[2] == freq[3] == 0 and abs(freq[0] - 0.5 / 0.8) < 0.04
    greedy = sample(logits, keys[:1], jnp.float32(0.0), jnp.float32(1.0), 0)
    assert int(greedy[0]) == 0
