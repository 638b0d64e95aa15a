"""Random tiny HF model -> import-hf -> our logits == HF's -> export-hf -> transformers reload == original.

Covers LLaMA (plain and LLaMA-3 rope scaling), Mistral (sliding window shorter than the prompt),
Qwen2 (qkv bias), Qwen3 (QK-norm, a head_dim that is not hidden / heads; untied and tied) and a
tied-embedding model with attention bias; kv heads 1, 2, 4; each family is run with scan on and off.
Logits equal transformers' float32 ones within two float32 rounding budgets (tests/precision.py: each side within
one of the float64 values).
"""

import dataclasses
import json

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from hf_fixtures import make_hf_model
from precision import float32_logit_tolerance
from mathjax_train.cli import build_parser, main
from mathjax_train.config import ConfigError, EvalConfig, RftConfig
from mathjax_train.convert.hf_config import model_config_from_hf, model_config_to_hf
from mathjax_train.data.vocab import load_tokenizer
from mathjax_train.infer.loading import load_for_inference
from mathjax_train.model import Decoder
from mathjax_train.model.checkpoint import load_model_config, load_params

PROMPT_LEN = 320
CASES = [
    (v, kv, (i + j) % 2 == 0)
    for i, v in enumerate(["llama", "llama3", "mistral", "qwen2", "tied", "qwen3", "qwen3_tied"])
    for j, kv in enumerate([1, 2, 4])
]


@pytest.mark.parametrize(
    "variant,kv_heads,scan", CASES, ids=[f"{v}-kv{k}-{'scan' if s else 'noscan'}" for v, k, s in CASES]
)
def test_import_logits_and_export_reload(tmp_path, variant, kv_heads, scan):
    hf_dir, ckpt, out = tmp_path / "hf", tmp_path / "ckpt", tmp_path / "exported"
    original = make_hf_model(hf_dir, variant, kv_heads)
    ids = np.random.RandomState(1).randint(0, original.config.vocab_size, (2, PROMPT_LEN))
    with torch.no_grad():
        ref = original(torch.tensor(ids)).logits.numpy()

    args = ["import-hf", str(hf_dir), str(ckpt), "--dtype", "float32"] + ([] if scan else ["--no-scan"])
    assert main(args) == 0
    cfg = load_model_config(ckpt)
    assert cfg.scan_layers == scan and cfg.num_kv_heads == kv_heads
    params = load_params(ckpt, cfg)
    assert ("layers" in params) == scan and ("layers_0" in params) == (not scan)
    ours, _ = Decoder(cfg).apply({"params": params}, jnp.asarray(ids))
    widest = max(cfg.intermediate_size, cfg.hidden_size, PROMPT_LEN)  # the MLP's, or attention's sum over positions
    tol = 2 * float32_logit_tolerance(ref, cfg.num_layers, widest)
    assert tol < 1e-4  # the budget is a real bound here, not a loose one
    np.testing.assert_allclose(np.asarray(ours), ref, atol=tol, rtol=0)

    assert main(["export-hf", str(ckpt), str(out)]) == 0
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    assert type(reloaded) is type(original)
    with torch.no_grad():
        again = reloaded(torch.tensor(ids)).logits.numpy()
    np.testing.assert_array_equal(again, ref)
    tok = transformers.AutoTokenizer.from_pretrained(out)
    assert tok("x = 5").input_ids == transformers.AutoTokenizer.from_pretrained(hf_dir)("x = 5").input_ids


def test_qwen3_config_json_both_ways_and_what_it_refuses():
    """Qwen3's config.json -> ModelConfig (QK-norm on, its head_dim, no bias) -> the same fields back;
    what the family cannot hold is an error naming the field."""
    hf = transformers.Qwen3Config(
        vocab_size=320, hidden_size=96, num_attention_heads=4, num_key_value_heads=2, head_dim=32, num_hidden_layers=2
    ).to_dict()
    cfg = model_config_from_hf(hf)
    assert (cfg.architecture, cfg.qk_norm, cfg.head_dim, cfg.qkv_bias, cfg.o_bias) == ("qwen3", True, 32, False, False)
    back = model_config_to_hf(cfg, "float32")
    assert back["architectures"] == ["Qwen3ForCausalLM"] and back["attention_bias"] is False
    for key in ("model_type", "head_dim", "hidden_size", "num_key_value_heads", "rms_norm_eps", "tie_word_embeddings"):
        assert back[key] == hf[key], key
    assert model_config_from_hf(back) == cfg

    with pytest.raises(ConfigError, match="field use_sliding_window=true is not supported for qwen3"):
        model_config_from_hf({**hf, "use_sliding_window": True})
    with pytest.raises(ConfigError, match="qwen3 export needs qk_norm=true"):
        model_config_to_hf(dataclasses.replace(cfg, qk_norm=False), "float32")
    with pytest.raises(ConfigError, match="qk_norm is only exported for qwen3, qwen3_moe and gemma3_text, not llama"):
        model_config_to_hf(dataclasses.replace(cfg, architecture="llama"), "float32")
    with pytest.raises(ConfigError, match=r"model.head_dim must be >= 0"):
        dataclasses.replace(cfg, head_dim=-4).validate()


def test_sharded_export_reloads(tmp_path):
    """A small shard limit forces several safetensors files plus an index; both sides read them."""
    hf_dir, ckpt, out, back = tmp_path / "hf", tmp_path / "ckpt", tmp_path / "out", tmp_path / "back"
    original = make_hf_model(hf_dir, "llama", 2)
    assert main(["import-hf", str(hf_dir), str(ckpt), "--dtype", "float32"]) == 0
    assert main(["export-hf", str(ckpt), str(out), "--max-shard-gb", str(100_000 / 2**30)]) == 0
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 2
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    for (n, a), (_, b) in zip(original.state_dict().items(), reloaded.state_dict().items()):
        assert torch.equal(a, b), n
    # our importer reads the sharded layout too
    assert main(["import-hf", str(out), str(back), "--dtype", "float32"]) == 0
    p1, p2 = load_params(ckpt, load_model_config(ckpt)), load_params(back, load_model_config(back))
    np.testing.assert_array_equal(
        np.asarray(p1["layers"]["mlp"]["up_proj"]["kernel"]), np.asarray(p2["layers"]["mlp"]["up_proj"]["kernel"])
    )


def test_bf16_export(tmp_path):
    hf_dir, ckpt, out = tmp_path / "hf", tmp_path / "ckpt", tmp_path / "out"
    original = make_hf_model(hf_dir, "qwen2", 2)
    assert main(["import-hf", str(hf_dir), str(ckpt)]) == 0
    assert main(["export-hf", str(ckpt), str(out), "--dtype", "bfloat16"]) == 0
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(out)
    w = reloaded.model.layers[0].self_attn.q_proj.bias
    assert w.dtype == torch.bfloat16
    torch.testing.assert_close(w.float(), original.model.layers[0].self_attn.q_proj.bias.bfloat16().float())


def test_weights_only_dir_imports_with_tokenizer_and_computes_in_float32_on_cpu(tmp_path, capsys):
    """`save_pretrained` of a model alone writes no tokenizer: import-hf takes it from --tokenizer.
    The import's default (bfloat16 compute recorded) still loads for inference in float32 on CPU."""
    full, weights, ckpt = tmp_path / "full", tmp_path / "weights", tmp_path / "ckpt"
    original = make_hf_model(full, "llama", 2)
    original.save_pretrained(weights)
    assert main(["import-hf", str(weights), str(ckpt)]) == 2
    assert "--tokenizer DIR" in capsys.readouterr().err
    assert main(["import-hf", str(weights), str(ckpt), "--tokenizer", str(full)]) == 0
    assert json.loads(capsys.readouterr().out)["tokenizer"] == str(full)
    assert (ckpt / "tokenizer" / "generation_config.json").read_text() == (
        weights / "generation_config.json"
    ).read_text()

    model = load_for_inference(ckpt)
    assert load_model_config(ckpt).dtype == "bfloat16" and model.cfg.dtype == "float32"
    assert model.tokenizer.encode("x = 5") == load_tokenizer(full).encode("x = 5")
    ids = np.random.RandomState(2).randint(0, original.config.vocab_size, (1, 64))
    with torch.no_grad():
        ref = original(torch.tensor(ids)).logits.numpy()
    ours, _ = Decoder(model.cfg).apply({"params": model.params}, jnp.asarray(ids))
    np.testing.assert_allclose(np.asarray(ours), ref, atol=1e-4, rtol=0)  # bfloat16 compute is ~1e-2 off


def test_every_inference_command_defaults_to_auto_dtype():
    """auto = float32 on CPU (infer/loading.resolve_dtype), whatever compute dtype the checkpoint records."""
    from mathjax_train.cli.config_flags import config_from_args

    parser = build_parser()
    for argv in (
        ["generate", "--checkpoint", "c", "--prompts", "p", "--output", "o"],
        ["evaluate", "--checkpoint", "c", "--dataset", "d"],
        ["rft", "--checkpoint", "c", "--output", "o"],
        ["serve", "c"],
        ["augment", "--seeds", "s", "--output", "o", "--teacher-checkpoint", "c"],
    ):
        assert config_from_args(parser.parse_args(argv)).dtype == "auto", argv[0]  # flags from the dataclass
    assert EvalConfig.dtype == RftConfig.dtype == "auto"
