"""Gemma 3 (text): a random tiny Gemma3ForCausalLM (5 local layers with a 12-token window : 1 global, QK-norm,
sandwich norms, 1 + w norms, scaled embeddings, GeGLU, query_pre_attn_scalar != head_dim, soft-capped logits)
imports with transformers' logits, exports back, trains on the blocked kernel, and what it cannot hold is refused.
Logits are compared within float32's rounding budget (tests/precision.py), as in test_roundtrip_hf."""

import json

import jax
import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from lora_helpers import assert_matches_peft_float64, export_random_adapter
from hf_fixtures import hf_config, import_random_model, make_hf_model, write_tokenizer
from precision import float32_logit_tolerance
from mathjax_train.cli import main
from mathjax_train.config import ConfigError, EngineConfig, LoraConfig, ModelConfig
from mathjax_train.convert.hf_config import model_config_from_hf, model_config_to_hf
from mathjax_train.convert.hf_params import param_specs
from mathjax_train.infer.engine import Engine
from mathjax_train.infer.loading import load_for_inference
from mathjax_train.infer.params import SamplingParams
from mathjax_train.model import Decoder
from mathjax_train.model import lora as lora_params
from mathjax_train.model.checkpoint import load_model_config, load_params
from mathjax_train.model.layer_kinds import layer_inv_freq, with_window
from mathjax_train.model.layers import RMSNorm, softcap
from mathjax_train.plan.memory import layer_param_count
from mathjax_train.train.loss import chunked_cross_entropy, weighted_cross_entropy
from mathjax_train.train.trainer import train
from train_helpers import read_metrics, tiny_config

WINDOW = 12
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _budget(ref, cfg, length):
    """Two float32 budgets (ours and transformers' each within one of the float64 logits), as test_roundtrip_hf."""
    return 2 * float32_logit_tolerance(ref, cfg.num_layers, max(cfg.intermediate_size, cfg.hidden_size, length))


@pytest.mark.parametrize("scan", [True, pytest.param(False, marks=pytest.mark.slow)], ids=["scan", "noscan"])
def test_import_logits_equal_transformers_and_export_reloads(tmp_path, scan):
    """Prompt of 384 (> window; three of the blocked kernel's 128-token blocks, so the window cuts the keys of
    the last): the training path's blocked kernel, with the per-layer window picked by lax.switch (scan) or
    statically (noscan), equals transformers."""
    hf_dir, ckpt, out = tmp_path / "hf", tmp_path / "ckpt", tmp_path / "exported"
    original = make_hf_model(hf_dir, "gemma3", kv_heads=2)
    ids = np.random.RandomState(1).randint(0, original.config.vocab_size, (2, 384))
    with torch.no_grad():
        ref = original(torch.tensor(ids)).logits.numpy()
    assert main(["import-hf", str(hf_dir), str(ckpt), "--dtype", "float32"] + ([] if scan else ["--no-scan"])) == 0
    cfg = load_model_config(ckpt)
    assert cfg.architecture == "gemma3_text" and cfg.attention_kernel == "blocked" and cfg.scan_layers == scan
    assert cfg.layer_windows() == (WINDOW,) * 5 + (0,)
    params = load_params(ckpt, cfg)
    ours, _ = Decoder(cfg).apply({"params": params}, jnp.asarray(ids))
    tol = _budget(ref, cfg, ids.shape[1])
    assert tol < 1e-4
    np.testing.assert_allclose(np.asarray(ours), ref, atol=tol, rtol=0)

    assert main(["export-hf", str(ckpt), str(out)]) == 0
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    assert type(reloaded) is transformers.Gemma3ForCausalLM
    with torch.no_grad():
        np.testing.assert_array_equal(reloaded(torch.tensor(ids)).logits.numpy(), ref)
    exported = json.loads((out / "config.json").read_text())
    for key in ("layer_types", "sliding_window", "query_pre_attn_scalar", "final_logit_softcapping", "head_dim"):
        assert exported[key] == original.config.to_dict()[key], key
    assert exported["rope_parameters"] == original.config.rope_parameters


# slow: three programs with their backward passes (the forward of the blocked path is the import test's)
@pytest.mark.slow
@pytest.mark.parametrize("kernel", ["blocked", "splash"])
def test_training_kernels_with_per_layer_windows_equal_the_dot_path(kernel):
    """The training kernels see each layer's window (lax.switch in the scan, under remat): blocked (keys cut by
    the window: 384 tokens, 128-token blocks) and splash (Pallas, interpreted on CPU) give the dot path's loss
    and gradients within float32 budgets (forward and backward: twice the layers); the model with every layer
    local differs, so the windows matter."""
    cfg = model_config_from_hf(hf_config("gemma3").to_dict())
    cfg.dtype, cfg.remat_policy = "float32", "full"
    ids = jnp.asarray(np.random.RandomState(0).randint(0, cfg.vocab_size, (1, 384)))
    params = Decoder(cfg).init(jax.random.PRNGKey(0), ids[:, :8])["params"]

    def loss_and_grads(**change):
        c = ModelConfig(**{**cfg.__dict__, **change})
        loss = lambda p: jnp.mean(jax.nn.logsumexp(Decoder(c).apply({"params": p}, ids)[0], -1))  # noqa: E731
        return jax.jit(jax.value_and_grad(loss))(params)

    want, want_grads = loss_and_grads(attention_kernel="dot")
    widest = max(cfg.intermediate_size, cfg.hidden_size, ids.shape[1])
    got, grads = loss_and_grads(attention_kernel=kernel)
    assert abs(float(got) - float(want)) <= float32_logit_tolerance(np.asarray(want), 2 * cfg.num_layers, widest)
    for g, w in zip(jax.tree.leaves(grads), jax.tree.leaves(want_grads)):
        tol = 2 * float32_logit_tolerance(np.asarray(w), 2 * cfg.num_layers, widest)
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), atol=tol, rtol=0)
    all_local, _ = loss_and_grads(attention_kernel=kernel, layer_types=[])
    assert abs(float(all_local) - float(want)) > 1e-4


def test_per_layer_window_and_rope_base_follow_layer_types():
    cfg = model_config_from_hf(hf_config("gemma3").to_dict())
    assert [with_window(cfg, i, lambda w: w) for i in range(6)] == [WINDOW] * 5 + [0]
    traced = jax.jit(lambda i: with_window(cfg, i, lambda w: jnp.int32(w)))
    assert [int(traced(i)) for i in range(6)] == [WINDOW] * 5 + [0]
    local, glob = layer_inv_freq(cfg, 0), layer_inv_freq(cfg, 5)
    d = cfg.resolved_head_dim
    np.testing.assert_allclose(local, 1.0 / 10_000.0 ** (np.arange(0, d, 2) / d), rtol=1e-6)
    np.testing.assert_allclose(glob, 1.0 / 1_000_000.0 ** (np.arange(0, d, 2) / d) / 2.0, rtol=1e-6)  # linear x2
    np.testing.assert_array_equal(jax.jit(lambda i: layer_inv_freq(cfg, i))(5), glob)


def test_norm_plus_one_is_gemmas_norm_and_conversion_is_a_rename():
    """Gemma's RMSNorm multiplies by 1 + weight; ours with plus_one does the same on HF's stored weight, so the
    norm tensors convert unchanged (a bfloat16 copy keeps every bit of w, which 1 + w in bfloat16 would not)."""
    from transformers.models.gemma3.modeling_gemma3 import Gemma3RMSNorm

    rng = np.random.RandomState(0)
    w, x = rng.randn(64).astype(np.float32) * 0.1, rng.randn(3, 64).astype(np.float32) * 4
    hf = Gemma3RMSNorm(64, eps=1e-6)
    with torch.no_grad():
        hf.weight.copy_(torch.tensor(w))
        ref = hf(torch.tensor(x)).numpy()
    ours = RMSNorm(1e-6, plus_one=True).apply({"params": {"scale": jnp.asarray(w)}}, jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(ours), ref, rtol=2e-7, atol=0)  # the same float32 steps, one ulp apart
    init = RMSNorm(plus_one=True).init(jax.random.PRNGKey(0), x)["params"]["scale"]
    assert np.asarray(nn.meta.unbox(init)).max() == 0  # starts as the identity scale
    cfg = model_config_from_hf(hf_config("gemma3").to_dict())
    norms = [s for s in param_specs(cfg) if "norm" in s.hf_name]
    assert len(norms) == 6 * 6 + 1  # four per layer, q_norm and k_norm, the final norm
    for s in norms:
        v = rng.randn(*s.hf_shape).astype(np.float32)
        np.testing.assert_array_equal(s.to_ours(v), v)
        np.testing.assert_array_equal(s.to_hf(v), v)


def test_config_json_both_ways_and_what_it_refuses():
    hf = hf_config("gemma3").to_dict()
    cfg = model_config_from_hf(hf)
    assert (cfg.hidden_act, cfg.rope_local_theta, cfg.query_pre_attn_scalar) == ("gelu_tanh", 10_000.0, 24.0)
    assert (cfg.final_logit_softcapping, cfg.tie_embeddings, cfg.qk_norm, cfg.sandwich_norms) == (
        30.0,
        True,
        True,
        True,
    )
    assert (cfg.rope_theta, cfg.rope_scaling.type, cfg.rope_scaling.factor) == (1_000_000.0, "linear", 2.0)
    back = model_config_to_hf(cfg, "float32")
    assert back["architectures"] == ["Gemma3ForCausalLM"]
    for key in ("layer_types", "sliding_window", "head_dim", "hidden_activation", "rope_parameters", "model_type"):
        assert back[key] == hf[key], key
    legacy = {k: v for k, v in hf.items() if k not in ("layer_types", "rope_parameters")}
    legacy.update(rope_theta=1e6, rope_local_base_freq=1e4, sliding_window_pattern=3)
    old = model_config_from_hf(legacy)
    assert old.layer_windows() == (WINDOW, WINDOW, 0) * 2 and old.rope_local_theta == 1e4
    refused = [
        ({"attn_logit_softcapping": 50.0}, "field attn_logit_softcapping=50.0 is not supported"),
        ({"use_bidirectional_attention": True}, "field use_bidirectional_attention=true"),
        ({"hidden_activation": "relu"}, "field hidden_activation='relu' is not supported"),
        ({"layer_types": ["chunked_attention"] * 6}, "field layer_types has 'chunked_attention'"),
        ({"layer_types": ["full_attention"] * 5}, "layer_types has 5 entries but num_layers is 6"),
    ]
    for change, message in refused:
        with pytest.raises(ConfigError, match=message):
            model_config_from_hf({**hf, **change}, "x/config.json")
    with pytest.raises(ConfigError, match="sliding_window must be > 0"):
        ModelConfig(num_layers=2, layer_types=["sliding_attention", "full_attention"]).validate()
    with pytest.raises(ConfigError, match="layer_types, hidden_act are only exported for gemma3_text, not llama"):
        model_config_to_hf(ModelConfig(num_layers=1, layer_types=["full_attention"], hidden_act="gelu_tanh"), "float32")
    with pytest.raises(ConfigError, match="gemma3_text export needs qk_norm"):
        model_config_to_hf(ModelConfig(**{**cfg.__dict__, "qk_norm": False}), "float32")


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """A random tiny Gemma 3 imported once for the engine and LoRA tests: (HF model, checkpoint)."""
    return import_random_model(tmp_path_factory.mktemp("gemma3"), "gemma3", seed=3)


# the C++ kernel with unrolled layers (static windows; the CPU default); slow: the plain-JAX path and the ragged
# Pallas kernel (interpreted) with scanned layers (the window picked by lax.switch in the scan, as on TPU)
@pytest.mark.parametrize(
    "attention,layers",
    [("cpu", "auto"), *(pytest.param(a, "scan", marks=pytest.mark.slow) for a in ("xla", "pallas"))],
    ids=["cpu", "xla-scan", "pallas-scan"],
)
def test_engine_greedy_equals_transformers_past_the_window(imported, attention, layers):
    """Prompts and generations longer than the 12-token window, prefilled in chunks over 4-token pages, two
    slots with admission mid-run: the same tokens as transformers' greedy generate (its own sliding cache).
    (Checked to fail with every layer full, or every layer local.)"""
    hf, ckpt = imported
    m = load_for_inference(ckpt)
    rng = np.random.RandomState(0)
    prompts = [rng.randint(3, 300, n).tolist() for n in (5, 30, 17)]
    lengths = [30, 20, 25]
    small = dict(page_size=4, decode_steps=4, prefill_budget=16)
    eng = Engine(m, EngineConfig(num_slots=2, attention=attention, layers=layers, **small))
    assert eng.kernel.name == attention
    out = eng.generate(prompts, [SamplingParams(max_tokens=n, ignore_eos=True) for n in lengths], [[0]] * 3)
    for p, n, (c,) in zip(prompts, lengths, out):
        want = hf.generate(torch.tensor([p]), max_new_tokens=n, do_sample=False, eos_token_id=None, pad_token_id=0)
        assert c.token_ids == want[0, len(p) :].tolist()
    assert eng.pages_held_by_rows() == 0


@pytest.mark.slow  # the adapter export is the families' (tests/test_lora.py); this checks Gemma's targets
def test_peft_loads_a_lora_adapter_on_attention_and_mlp_with_equal_logits(imported, tmp_path):
    """Random adapters on every projection of the Gemma 3 model, exported for PEFT: PEFT in float64 is the
    reference; PEFT in float32, our unmerged training forward and our merged HF export lie within float32's
    rounding budget of it (as test_lora's Qwen3 test); PEFT's adapter imports back to the same arrays."""
    hf_model, base_ckpt = imported
    cfg = load_model_config(base_ckpt)
    lora = LoraConfig(rank=4, alpha=16.0, targets=LORA_TARGETS)
    out, adapters = export_random_adapter(base_ckpt, cfg, lora, 0.05, tmp_path)
    ids = np.random.RandomState(2).randint(0, cfg.vocab_size, (1, 40))  # longer than the window
    joined = lora_params.join(load_params(base_ckpt, cfg), adapters)
    unmerged = np.asarray(Decoder(cfg, lora).apply({"params": joined}, jnp.asarray(ids))[0])

    widest = max(cfg.hidden_size, cfg.intermediate_size, ids.shape[1])
    assert_matches_peft_float64(
        hf_model, tmp_path, ids, {"our unmerged training forward": unmerged}, cfg.num_layers, widest
    )
    args = ["import-hf", "--adapter", str(tmp_path / "peft"), str(tmp_path / "back"), "--base", str(base_ckpt)]
    assert main(args) == 0
    back = lora_params.load_adapters(tmp_path / "back", cfg, lora)
    jax.tree_util.tree_map(np.testing.assert_array_equal, back, adapters)


def test_the_text_model_of_a_multimodal_gemma3_imports(tmp_path):
    """Gemma3ForConditionalGeneration (model_type gemma3): text_config and the model.language_model.* tensors
    import as the text model, the vision tensors are skipped (and reported); text-only logits equal its own
    (transformers' multimodal model leaves out text_config's final_logit_softcapping; so does the import)."""
    torch.manual_seed(0)
    vision = transformers.SiglipVisionConfig(
        hidden_size=32, intermediate_size=48, num_hidden_layers=1, num_attention_heads=2, image_size=28, patch_size=14
    )
    config = transformers.Gemma3Config(text_config=hf_config("gemma3"), vision_config=vision, mm_tokens_per_image=4)
    model = transformers.Gemma3ForConditionalGeneration(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn_like(p) * 0.08)
    model.save_pretrained(tmp_path / "hf")
    write_tokenizer(tmp_path / "hf")
    ids = np.random.RandomState(1).randint(3, 300, (1, 40))
    with torch.no_grad():
        ref = model(input_ids=torch.tensor(ids)).logits.numpy()
    assert main(["import-hf", str(tmp_path / "hf"), str(tmp_path / "ckpt"), "--dtype", "float32"]) == 0
    cfg = load_model_config(tmp_path / "ckpt")
    assert cfg.architecture == "gemma3_text" and cfg.layer_windows() == (WINDOW,) * 5 + (0,)
    assert cfg.final_logit_softcapping == 0
    ours, _ = Decoder(cfg).apply({"params": load_params(tmp_path / "ckpt", cfg)}, jnp.asarray(ids))
    np.testing.assert_allclose(np.asarray(ours), ref, atol=_budget(ref, cfg, ids.shape[1]), rtol=0)


def test_plan_counts_gemma3_layers_parameters():
    """plan/memory.py's per-layer count (all-gathered weights under FSDP) has the four norms and QK-norm."""
    cfg = model_config_from_hf(hf_config("gemma3").to_dict())
    per_layer = sum(int(np.prod(s.shape)) for s in param_specs(cfg) if s.layer == 0)
    assert layer_param_count(cfg) == per_layer


def test_the_chunked_loss_soft_caps_like_the_head():
    """train.loss_vocab_chunk's loss over chunks of the vocabulary caps each chunk's logits as the decoder does."""
    rng = np.random.RandomState(0)
    hidden, kernel = jnp.asarray(rng.randn(2, 5, 16), jnp.float32), jnp.asarray(rng.randn(16, 30), jnp.float32)
    targets, weights = jnp.asarray(rng.randint(0, 30, (2, 5))), jnp.ones((2, 5))
    got = chunked_cross_entropy(hidden, kernel, targets, weights, 1e-2, 7, logit_cap=3.0)
    want = weighted_cross_entropy(softcap(hidden @ kernel, 3.0), targets, weights, 1e-2)
    uncapped = chunked_cross_entropy(hidden, kernel, targets, weights, 1e-2, 7)
    assert abs(float(uncapped["loss"]) - float(want["loss"])) > 1.0  # logits of size ~4-10: the cap matters
    for key in ("loss", "z_loss", "correct"):  # float32 sums of 10 terms over 30 logits, reordered by chunk
        np.testing.assert_allclose(float(got[key]), float(want[key]), rtol=1e-6)


@pytest.mark.slow
def test_a_gemma3_shaped_model_trains(tmp_path):
    """The trainer on the smoke task with Gemma 3's switches, local and global layers and the chunked,
    soft-capped loss: the loss falls at every logged step, below the uniform guess's log(vocab)."""
    cfg = tiny_config(
        tmp_path,
        "model.architecture=gemma3_text",
        "model.layer_types=[sliding_attention,full_attention]",
        "model.sliding_window=8",
        "model.rope_local_theta=10000",
        "model.query_pre_attn_scalar=24",
        "model.hidden_act=gelu_tanh",
        "model.embed_scale=true",
        "model.sandwich_norms=true",
        "model.norm_plus_one=true",
        "model.qk_norm=true",
        "model.final_logit_softcapping=30",
        "train.loss_vocab_chunk=16",
        "train.steps=40",
    )
    train(cfg)
    losses = [m["loss"] for m in read_metrics(tmp_path)]
    assert all(b < a for a, b in zip(losses, losses[1:])), losses
    assert losses[-1] < np.log(cfg.model.vocab_size) - 0.3, losses
