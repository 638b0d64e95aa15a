"""`mathjax-train plan`: every 7B/8B recipe in configs/ loads, is planned and fits its slice (the Qwen3-1.7B
GRPO recipe its one chip with the sampler and reference); the model
sections equal the real models; an impossible setup is reported as not fitting; the analytic state
bytes equal XLA's from an ahead-of-time compile on fake devices."""

import json
import math
import re
from pathlib import Path

import pytest

from mathjax_train.cli import main
from mathjax_train.config import ConfigError, load_config
from mathjax_train.convert.hf_config import model_config_from_hf
from mathjax_train.parallel.topology import matches_device_kind, parse_topology
from mathjax_train.plan.report import make_plan

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
RECIPES = sorted(
    p for p in CONFIGS.glob("*.yaml") if re.search(r"_[78]b_", p.name) and not p.name.startswith(("pipeline_", "grpo_"))
)  # pipelines: test_pipeline.py; rl recipes (grpo_): below and tests/test_rl_trainer.py
RL_RECIPES = sorted(CONFIGS.glob("grpo_qwen*.yaml"))
GIB = 2**30

# config.json of the released checkpoints (meta-llama/Llama-2-7b-hf, mistralai/Mistral-7B-v0.1, Qwen/Qwen2-7B,
# Qwen/Qwen3-8B, Qwen/Qwen3-1.7B, Qwen/Qwen2.5-7B)
HF_CONFIGS = {
    "llama2_7b": {
        "model_type": "llama",
        "vocab_size": 32000,
        "hidden_size": 4096,
        "intermediate_size": 11008,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-05,
        "rope_scaling": None,
        "hidden_act": "silu",
        "tie_word_embeddings": False,
        "bos_token_id": 1,
        "eos_token_id": 2,
    },
    "mistral_7b": {
        "model_type": "mistral",
        "vocab_size": 32000,
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "max_position_embeddings": 32768,
        "rms_norm_eps": 1e-05,
        "rope_theta": 10000.0,
        "sliding_window": 4096,
        "hidden_act": "silu",
        "tie_word_embeddings": False,
        "bos_token_id": 1,
        "eos_token_id": 2,
    },
    "qwen2_7b": {
        "model_type": "qwen2",
        "vocab_size": 152064,
        "hidden_size": 3584,
        "intermediate_size": 18944,
        "num_hidden_layers": 28,
        "num_attention_heads": 28,
        "num_key_value_heads": 4,
        "max_position_embeddings": 131072,
        "rms_norm_eps": 1e-06,
        "rope_theta": 1000000.0,
        "sliding_window": 131072,
        "use_sliding_window": False,
        "max_window_layers": 28,
        "hidden_act": "silu",
        "tie_word_embeddings": False,
        "bos_token_id": 151643,
        "eos_token_id": 151643,
    },
    "qwen3_8b": {
        "model_type": "qwen3",
        "vocab_size": 151936,
        "hidden_size": 4096,
        "intermediate_size": 12288,
        "num_hidden_layers": 36,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "max_position_embeddings": 40960,
        "rms_norm_eps": 1e-06,
        "rope_scaling": None,
        "rope_theta": 1000000,
        "attention_bias": False,
        "sliding_window": None,
        "use_sliding_window": False,
        "max_window_layers": 36,
        "hidden_act": "silu",
        "tie_word_embeddings": False,
        "bos_token_id": 151643,
        "eos_token_id": 151645,
    },
    "grpo_qwen3_1.7b": {
        "model_type": "qwen3",
        "vocab_size": 151936,
        "hidden_size": 2048,
        "intermediate_size": 6144,
        "num_hidden_layers": 28,
        "num_attention_heads": 16,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "max_position_embeddings": 40960,
        "rms_norm_eps": 1e-06,
        "rope_scaling": None,
        "rope_theta": 1000000,
        "attention_bias": False,
        "sliding_window": None,
        "use_sliding_window": False,
        "max_window_layers": 28,
        "hidden_act": "silu",
        "tie_word_embeddings": True,
        "bos_token_id": 151643,
        "eos_token_id": 151645,
    },
}
HF_CONFIGS["grpo_qwen2.5_7b"] = HF_CONFIGS["qwen2_7b"]  # Qwen2.5-7B's config.json: the same architecture values
# published (Qwen3: the safetensors index's total_size / 2 bytes for bfloat16)
PARAMETERS = {
    "llama2_7b": 6_738_415_616,
    "mistral_7b": 7_241_732_096,
    "qwen2_7b": 7_615_616_512,
    "qwen3_8b": 8_190_735_360,
    "grpo_qwen3_1.7b": 1_720_574_976,
    "grpo_qwen2.5_7b": 7_615_616_512,  # Qwen2-7B's architecture
}
ARCH_FIELDS = (
    "architecture",
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_layers",
    "num_heads",
    "num_kv_heads",
    "head_dim",
    "max_position_embeddings",
    "rope_theta",
    "rope_scaling",
    "rms_norm_eps",
    "tie_embeddings",
    "qkv_bias",
    "o_bias",
    "mlp_bias",
    "qk_norm",
    "sliding_window",
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
)
EXAMPLES = 7473 + 7500  # GSM8K train + MATH train


def _model_key(path: Path) -> str:
    return next(k for k in HF_CONFIGS if path.name.startswith(k))


def test_topology_table():
    got = {
        n: (t.chips, t.hosts, t.family.hbm_gib)
        for n in ("v4-32", "v5e-64", "v5litepod-16", "v5p-32", "v6e-8", "v6e-16", "v5e-1", "v4-8")
        for t in [parse_topology(n)]
    }
    assert got == {
        "v4-32": (16, 4, 32.0),
        "v5e-64": (64, 16, 16.0),
        "v5litepod-16": (16, 4, 16.0),
        "v5p-32": (16, 4, 95.0),
        "v6e-8": (8, 1, 32.0),
        "v6e-16": (16, 4, 32.0),
        "v5e-1": (1, 1, 16.0),
        "v4-8": (4, 1, 32.0),
    }
    for bad in ("v5p-12", "v7-8", "tpu", "v4-1"):
        with pytest.raises(ConfigError, match="topology"):
            parse_topology(bad)
    assert matches_device_kind(parse_topology("v5p-32"), "TPU v5")
    assert not matches_device_kind(parse_topology("v5p-32"), "TPU v5 lite")
    assert matches_device_kind(parse_topology("v5e-64"), "TPU v5 lite")
    assert not matches_device_kind(parse_topology("v4-32"), "TPU v5")


def test_the_recipe_set_is_complete():
    names = {p.stem for p in RECIPES}
    for model in ("llama2_7b", "mistral_7b"):
        for topo in ("v4-32", "v5e-64", "v5p-32"):
            assert f"{model}_sft_{topo}" in names and f"{model}_sft_2k_{topo}" in names
        assert any(n.startswith(f"{model}_sft_synthetic_") for n in names)


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_recipe_is_planned_and_fits_its_slice(path):
    cfg = load_config(str(path))
    topo = path.stem.rsplit("_", 1)[1]
    assert cfg.mesh.topology == topo
    plan = make_plan(cfg)
    mem = plan["memory_per_device"]
    assert plan["fits"] and mem["analytic"]["total"] <= 0.9 * parse_topology(topo).family.hbm_gib * GIB
    assert math.prod(plan["mesh"].values()) == parse_topology(topo).chips
    assert plan["model"]["parameters"] == PARAMETERS[_model_key(path)]
    o = cfg.optimizer
    if "_two_stage" in path.name:  # Skywork-Math two-stage: the broad mix, then the hard subset
        assert cfg.data.mixture == "gsm8k_math_synthetic" and cfg.train.batch_size == 128 and not cfg.data.pack
        if "stage1" in path.name:  # 2 epochs over 14,973 real + 2.5M synthetic rows
            assert cfg.train.steps == math.ceil(2 * (EXAMPLES + 2_500_000) / 128) and cfg.data.min_level == 0
        else:  # 3 epochs over MATH levels 4-5 (1,690 + 2,304) + 250k hard synthetic rows, from stage 1
            assert cfg.train.steps == math.ceil(3 * (1690 + 2304 + 250_000) / 128) and cfg.data.min_level == 4
            assert cfg.init_from.endswith("/stage1") and o.learning_rate < 2e-5
    else:  # the RFT paper's hyperparameters (LoRA: its usual 10x learning rate, decay on the adapters)
        lr, wd = (2e-4, 0.01) if cfg.lora.enabled else (2e-5, 0.0)
        assert (o.learning_rate, o.schedule, o.warmup_ratio, o.weight_decay) == (lr, "cosine", 0.03, wd)
        if "_2k_" in path.name:
            assert cfg.train.seq_len == 2048 and cfg.data.pack
        else:
            assert cfg.train.seq_len == 512 and cfg.train.batch_size == 128 and not cfg.data.pack
            real = EXAMPLES + (30_000 if "synthetic" in path.name else 0)
            assert cfg.train.steps == math.ceil(3 * real / 128)
        assert cfg.data.mixture == ("gsm8k_math_synthetic" if "synthetic" in path.name else "gsm8k_math")
    assert cfg.model.attention_kernel == "splash" and cfg.model.dtype == "bfloat16"
    assert cfg.init_from.startswith("gs://") and cfg.output_dir.startswith("gs://")
    # the step-time arithmetic: FLOPs per token x token slots / (chips x peak x MFU)
    st = plan["step_time"]
    peak = parse_topology(topo).chips * parse_topology(topo).family.peak_tflops * 1e12
    assert st["seconds_per_step"] == pytest.approx(
        plan["flops_per_token"] * cfg.train.batch_size * cfg.train.seq_len / (peak * 0.4)
    )
    assert st["hours_for_steps"] == pytest.approx(cfg.train.steps * st["seconds_per_step"] / 3600)


@pytest.mark.parametrize("model", sorted(HF_CONFIGS))
def test_recipe_models_equal_the_released_configs(model):
    """`plan` reads `model:` from the YAML while `train` reads init_from's config: they must agree."""
    want = model_config_from_hf(HF_CONFIGS[model])
    paths = [p for p in [*RECIPES, *RL_RECIPES] if p.name.startswith(model)]
    assert paths, model
    for path in paths:
        got = load_config(str(path)).model
        diff = {f: (getattr(got, f), getattr(want, f)) for f in ARCH_FIELDS if getattr(got, f) != getattr(want, f)}
        assert not diff, f"{path.name}: {diff}"


@pytest.mark.parametrize("path", RL_RECIPES, ids=[p.name for p in RL_RECIPES])
def test_the_grpo_recipes_fit_their_slice_with_sampler_and_reference(path):
    """The learner over every chip of the slice, each host's engine (its parameters and KV pages) and the
    reference, by the analytic count (Qwen3-1.7B: tied, QK-norm counted)."""
    cfg = load_config(str(path))
    topo = parse_topology(cfg.mesh.topology)
    plan = make_plan(cfg, rl=True)
    mem = plan["memory_per_device"]
    assert plan["fits"] and mem["analytic"]["total"] <= 0.9 * topo.family.hbm_gib * GIB
    assert math.prod(plan["mesh"].values()) == topo.chips and plan["mesh"]["fsdp"] == topo.chips
    key = path.stem.rsplit("_", 1)[0]
    if key in PARAMETERS:
        assert plan["model"]["parameters"] == PARAMETERS[key]
    r = mem["rl"]
    assert r["kv_cache"] > 0 and r["reference"] == mem["analytic"]["params"] and r["hosts"] == topo.hosts
    assert r["engine_tensor"] == cfg.rl.engine.tensor and 0 < r["reshard_peak"] < mem["analytic"]["total"]


def test_the_qwen2_recipe_holds_one_vocabulary_chunk_of_logits():
    """152k vocabulary x 16,384 token slots per chip: the full-logits head is (8 + 2) bytes a vocabulary id
    and token (float32 logits and their gradient, bfloat16 logits) plus the bfloat16 hidden state and its
    gradient, 23 GiB by this count; the chunked loss holds one 8192-id chunk. (XLA:TPU counts the whole
    step without chunks at 116 GiB per chip, over the 85.5 usable: docs/tpu.md.)"""
    path = str(CONFIGS / "qwen2_7b_sft_2k_v5p-32.yaml")
    chunked, full = make_plan(load_config(path)), make_plan(load_config(path, ["train.loss_vocab_chunk=0"]))
    assert (
        load_config(path).train.vocab_chunk(152064) == 8192 and chunked["batch"]["rows_per_device_per_microbatch"] == 8
    )
    head = {
        name: p["memory_per_device"]["activation_terms"]["head"] for name, p in (("chunked", chunked), ("full", full))
    }
    assert head["full"] == 16384 * ((8 + 2) * 152064 + 2 * 2 * 3584)
    assert head["chunked"] < 5 * GIB < 20 * GIB < head["full"]
    assert chunked["fits"]


def test_flops_per_token_is_6n_plus_attention():
    plan = make_plan(load_config(str(CONFIGS / "llama2_7b_sft_v5p-32.yaml")))
    n, e, v, layers = PARAMETERS["llama2_7b"], 4096, 32000, 32
    matmul = n - v * e - (2 * layers + 1) * e  # not the embedding lookup, not the norm scales
    assert plan["flops_per_token"] == 6 * matmul + 12 * layers * 32 * 128 * 512


def test_an_impossible_setup_does_not_fit(capsys):
    """7B on one v5e chip without FSDP: the float32 parameters alone (27 GB) exceed its 16 GiB."""
    rc = main(
        [
            "plan",
            "--config",
            str(CONFIGS / "llama2_7b_sft_v5e-64.yaml"),
            "--topology",
            "v5e-1",
            "mesh.fsdp=1",
            "mesh.tensor=1",
            "mesh.data=1",
            "train.batch_size=8",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 1 and "DOES NOT FIT" in out and "v5e-1: 1 chips on 1 hosts" in out
    rc = main(
        [
            "plan",
            "--config",
            str(CONFIGS / "llama2_7b_sft_v5e-64.yaml"),
            "--topology",
            "v5e-1",
            "mesh.fsdp=1",
            "train.batch_size=8",
            "--json",
        ]
    )
    plan = json.loads(capsys.readouterr().out)
    assert rc == 1 and plan["fits"] is False
    assert plan["memory_per_device"]["analytic"]["params"] == PARAMETERS["llama2_7b"] * 4
    assert plan["memory_per_device"]["analytic"]["optimizer_state"] >= 2 * PARAMETERS["llama2_7b"] * 4


def test_the_same_recipe_fits_with_fsdp_on_the_right_slice(capsys):
    assert main(["plan", "--config", str(CONFIGS / "llama2_7b_sft_v5e-64.yaml")]) == 0
    out = capsys.readouterr().out
    assert "FITS" in out and "data=1 x fsdp=64 x tensor=1" in out and "6,738,415,616 parameters" in out


def test_bad_plans_are_named(capsys):
    recipe = str(CONFIGS / "llama2_7b_sft_v4-32.yaml")
    cases = [
        (["--topology", "v9-32"], "topology 'v9-32'"),
        (["mesh.tensor=3"], "mesh: 16 devices cannot be split"),
        (["train.batch_size=20", "train.microbatches=1"], "20 rows per micro-batch cannot be split over the 16"),
        (["mesh.topology=", "--mfu", "0.5"], "no topology; pass --topology"),
        (["--mfu", "1.5"], "--mfu must be in (0, 1]"),
        (
            ["model.attention_kernel=flash"],
            "model.attention_kernel: 'flash' is not one of 'dot', 'splash', 'cudnn', 'blocked'",
        ),
        (["--compile", "--compile-layers", "1", "2"], "give two different depths of at least 2"),
        (["model.vocab_size=0"], "model.vocab_size: plan needs it set"),
    ]
    for extra, msg in cases:
        assert main(["plan", "--config", recipe, *extra]) == 2, extra
        err = capsys.readouterr().err
        assert "mathjax-train plan: error:" in err and msg in err, (extra, err)


@pytest.mark.slow  # two 7B-wide TPU compiles; test_plan_tpu.py checks the same on a small model
def test_compiled_state_bytes_equal_the_analytic_ones(capsys):
    """XLA:TPU's argument bytes per chip (the real step compiled for the v5e-64 slice at 2 and 4 layers,
    extrapolated to 32 and labelled so) are the analytic parameters + optimizer state + this chip's batch."""
    recipe = str(CONFIGS / "llama2_7b_sft_v5e-64.yaml")
    rc = main(["plan", "--config", recipe, "--compile", "--compile-layers", "2", "4", "--no-bound", "--json"])
    plan = json.loads(capsys.readouterr().out)
    assert rc == 0 and plan["fits"] and plan["memory_per_device"]["fits_compiled"]
    mem = plan["memory_per_device"]
    comp = mem["compiled"]
    assert comp["target"] == "tpu" and "extrapolated linearly to 32" in comp["method"]
    step = comp["programs"]["train_step"]
    b = plan["batch"]
    batch_bytes = 5 * 4 * b["rows_per_device_per_microbatch"] * b["microbatches"] * b["seq_len"]
    state = mem["analytic"]["params"] + mem["analytic"]["optimizer_state"]
    assert step["argument"] == pytest.approx(state + batch_bytes, rel=1e-4)
    assert step["temp"] > mem["analytic"]["gradients"]
