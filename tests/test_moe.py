"""Mixture-of-experts models (Qwen3-MoE, Mixtral): the ragged_dot expert transform against a float64 reference,
HF import -> logits -> export -> transformers reload, greedy generation, LoRA to PEFT, router losses in training,
expert parallelism on a fake 8-device mesh, and the config errors.

Float32 tolerances come from tests/precision.py (each implementation within u |z| sqrt(L K) of the float64
result). Routing is discrete: a top-k choice could flip if two router probabilities tied within rounding; with
random weights and these sizes no probability gap is that small, so the logits compare within the same budget
as the dense families (tests/test_roundtrip_hf.py).
"""

import dataclasses
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from hf_fixtures import hf_config, make_hf_model
from precision import FLOAT32_UNIT_ROUNDOFF, float32_logit_tolerance
from mathjax_train.cli import main
from mathjax_train.config import ConfigError, LoraConfig, ModelConfig
from mathjax_train.convert.hf_config import model_config_from_hf, model_config_to_hf
from mathjax_train.model import Decoder
from mathjax_train.model.checkpoint import load_model_config, load_params
from mathjax_train.model.moe import expert_ffn, route, router_losses

PROMPT_LEN = 64


def _reference_moe(x, logits, k, normalize, wg, wu, wd):
    """Dense float64 numpy: every token through its top-k experts one by one, as transformers loops."""
    x, logits = x.astype(np.float64), logits.astype(np.float64)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    out = np.zeros_like(x)
    for i in range(x.shape[0]):
        top = np.argsort(-probs[i], kind="stable")[:k]
        w = probs[i, top] / (probs[i, top].sum() if normalize else 1.0)
        for weight, e in zip(w, top):
            g, u = x[i] @ wg[e], x[i] @ wu[e]
            out[i] += weight * ((g / (1 + np.exp(-g))) * u) @ wd[e]
    return out


@pytest.mark.parametrize("normalize", [False, True])
def test_ragged_dot_experts_equal_dense_float64_reference(normalize):
    """route + expert_ffn (sorted by expert, ragged_dot, unsorted, weighted) == the per-token per-expert loop in
    float64, within the float32 budget of one layer whose widest contraction is the expert width (an unsorting
    mistake or a wrong weight would be off by O(|y|), far outside it). Includes an expert no token picks."""
    rng = np.random.RandomState(0)
    n, e, m, n_exp, k = 40, 24, 32, 6, 2
    x = rng.randn(n, e).astype(np.float32)
    logits = rng.randn(n, n_exp).astype(np.float32)
    logits[:, 5] = -30.0  # expert 5 gets no tokens: a zero-size group
    wg, wu = (rng.randn(n_exp, e, m).astype(np.float32) * 0.2 for _ in range(2))
    wd = rng.randn(n_exp, m, e).astype(np.float32) * 0.2
    _, weights, ids = route(jnp.asarray(logits), k, normalize)
    ours = np.asarray(expert_ffn(jnp.asarray(x), weights, ids, jnp.asarray(wg), jnp.asarray(wu), jnp.asarray(wd)))
    ref = _reference_moe(x, logits, k, normalize, wg, wu, wd)
    tol = float(np.abs(ref).max()) * FLOAT32_UNIT_ROUNDOFF * np.sqrt(k * max(e, m)) * 4  # 3 matmuls + weighting
    assert 0 < tol < 1e-4
    np.testing.assert_allclose(ours, ref, atol=tol, rtol=0)


def test_router_losses_by_hand():
    """Two tokens, two experts, top-1: load balancing = 2 * sum_e f_e P_e, z-loss = mean lse^2; the masked
    token counts for neither."""
    logits = jnp.log(jnp.asarray([[0.75, 0.25], [0.25, 0.75], [0.9, 0.1]], jnp.float32))
    probs, _, ids = route(logits, 1, True)
    aux, z = router_losses(logits, probs, ids, jnp.asarray([True, True, False]))
    # f = (1/2, 1/2), P = (1/2, 1/2): 2 * (1/4 + 1/4) = 1; lse = log(1) = 0
    np.testing.assert_allclose([float(aux), float(z)], [1.0, 0.0], atol=1e-6)
    aux, _ = router_losses(logits, probs, ids, jnp.asarray([True, False, True]))
    # f = (1, 0), P = (0.825, 0.175): 2 * 0.825
    np.testing.assert_allclose(float(aux), 1.65, atol=1e-6)


@pytest.mark.parametrize(
    "variant,scan", [("qwen3_moe", True), ("mixtral", False), ("qwen3_moe_norm", False)], ids=lambda v: str(v)
)
def test_import_logits_and_export_reload(tmp_path, variant, scan):
    """Random tiny HF MoE -> import-hf (per-expert tensors as save_pretrained writes them, stacked) -> our logits
    == transformers' within two float32 budgets -> export-hf -> transformers reloads with identical logits."""
    hf_dir, ckpt, out = tmp_path / "hf", tmp_path / "ckpt", tmp_path / "exported"
    original = make_hf_model(hf_dir, variant)
    ids = np.random.RandomState(1).randint(0, original.config.vocab_size, (2, PROMPT_LEN))
    with torch.no_grad():
        ref = original(torch.tensor(ids)).logits.numpy()
    assert main(["import-hf", str(hf_dir), str(ckpt), "--dtype", "float32"] + ([] if scan else ["--no-scan"])) == 0
    cfg = load_model_config(ckpt)
    assert cfg.architecture == original.config.model_type and cfg.num_experts > 0
    params = load_params(ckpt, cfg)
    ours, _ = Decoder(cfg).apply({"params": params}, jnp.asarray(ids))
    widest = max(cfg.moe_intermediate_size, cfg.hidden_size, PROMPT_LEN)
    tol = 2 * float32_logit_tolerance(ref, cfg.num_layers, widest)
    assert tol < 1e-4
    np.testing.assert_allclose(np.asarray(ours), ref, atol=tol, rtol=0)

    assert main(["export-hf", str(ckpt), str(out)]) == 0
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    assert type(reloaded) is type(original)
    with torch.no_grad():
        np.testing.assert_array_equal(reloaded(torch.tensor(ids)).logits.numpy(), ref)


def test_config_json_both_ways_and_what_it_refuses():
    """qwen3_moe and mixtral config.json -> ModelConfig -> the same MoE fields back; dense-layer layouts and
    router jitter are errors naming the field."""
    q = hf_config("qwen3_moe").to_dict()
    cfg = model_config_from_hf(q)
    assert (cfg.num_experts, cfg.num_experts_per_tok, cfg.moe_intermediate_size, cfg.norm_topk_prob) == (
        8,
        2,
        48,
        False,
    )
    assert cfg.qk_norm and cfg.head_dim == 32
    back = model_config_to_hf(cfg, "float32")
    assert q["num_local_experts"] == back["num_experts"] == 8  # transformers 5 writes the first, the Hub the second
    for key in ("num_experts_per_tok", "moe_intermediate_size", "norm_topk_prob", "head_dim"):
        assert back[key] == q[key], key
    mx = hf_config("mixtral").to_dict()
    cfg = model_config_from_hf(mx)
    assert (cfg.num_experts, cfg.moe_intermediate_size, cfg.norm_topk_prob, cfg.sliding_window) == (4, 64, True, 0)
    back = model_config_to_hf(cfg, "float32")
    assert back["num_local_experts"] == 4 and back["intermediate_size"] == 64 and back["sliding_window"] is None
    assert model_config_from_hf(dict(mx, sliding_window=48)).sliding_window == 48

    for hf, field in (
        (dict(q, decoder_sparse_step=2), "decoder_sparse_step"),
        (dict(q, mlp_only_layers=[0]), "mlp_only_layers"),
        (dict(q, use_sliding_window=True), "use_sliding_window"),
        (dict(mx, router_jitter_noise=0.01), "router_jitter_noise"),
        (dict(mx, hidden_act="gelu"), "hidden_act"),
    ):
        with pytest.raises(ConfigError, match=f"config.json: field {field}"):
            model_config_from_hf(hf)


@pytest.mark.parametrize(
    "fields,name",
    [
        (dict(num_experts=0), "model.num_experts"),
        (dict(num_experts_per_tok=9), "model.num_experts_per_tok"),
        (dict(moe_intermediate_size=0), "model.moe_intermediate_size"),
        (dict(architecture="mixtral", norm_topk_prob=False), "model.norm_topk_prob"),
        (dict(router_aux_loss_coef=-1.0), "model.router_aux_loss_coef"),
        (dict(architecture="llama"), "model.num_experts"),
    ],
)
def test_model_config_errors_name_the_field(fields, name):
    base = dict(architecture="qwen3_moe", num_experts=8, num_experts_per_tok=2, moe_intermediate_size=16)
    with pytest.raises(ConfigError, match=name):
        ModelConfig(**{**base, **fields}).validate("model")


def test_lora_on_an_expert_projection_is_refused():
    cfg = ModelConfig(
        architecture="mixtral", vocab_size=32, hidden_size=16, num_layers=1, num_heads=2, num_kv_heads=2,
        num_experts=4, moe_intermediate_size=8, dtype="float32",
    )  # fmt: skip
    lora = LoraConfig(rank=2, targets=["q_proj", "up_proj"])
    with pytest.raises(ConfigError, match="lora.targets: up_proj is an expert projection"):
        Decoder(cfg, lora).init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))


def _train_config(expert=1, data=1, extra=()):
    from mathjax_train.config import load_config

    return load_config(
        None,
        [
            "model.architecture=qwen3_moe",
            "model.vocab_size=64",
            "model.hidden_size=32",
            "model.intermediate_size=64",
            "model.num_layers=2",
            "model.num_heads=4",
            "model.num_kv_heads=2",
            "model.qk_norm=true",
            "model.num_experts=8",
            "model.num_experts_per_tok=2",
            "model.moe_intermediate_size=16",
            "model.router_aux_loss_coef=0.01",
            "model.router_z_loss_coef=0.001",
            "model.dtype=float32",
            "train.batch_size=8",
            "train.seq_len=16",
            "train.steps=4",
            "optimizer.warmup_steps=0",
            f"mesh.data={data}",
            f"mesh.expert={expert}",
            *extra,
        ],
    )


def _losses(cfg, n_devices, steps=3):
    """Per-step metrics of `steps` steps from seed 0 on the first `n_devices` devices; the last params."""
    from mathjax_train.data.toy_copy import ToyCopyIterator
    from mathjax_train.train.setup import build_step

    setup = build_step(cfg, devices=jax.devices()[:n_devices])
    batches = ToyCopyIterator(64, 8, 16, seed=3)
    with jax.set_mesh(setup.mesh):
        state = setup.init_state(0)
        rows = []
        for _ in range(steps):
            state, m = setup.step(state, jax.device_put(next(batches), setup.batch_sharding))
            rows.append({k: float(v) for k, v in jax.device_get(m).items()})
    return rows, state


@pytest.mark.slow  # two compilations of a 3-step run over 8 fake devices: 45 s on 2 idle cores, 6 min when loaded
def test_expert_parallel_training_matches_one_device():
    """mesh expert=4 x data=2 on 8 fake CPU devices: the stacked expert weights split 4 ways on `expert`, the batch
    over data x expert; 3 Adam steps give the single device's losses and router losses.

    Tolerance: sharding changes only the order of float32 reductions (the batch sums, the gradient all-reduce over
    8 shards, the expert matmuls), each a few ulps (u = 6e-8) per layer; over 2 layers and 3 steps Adam carries
    them into the parameters at the same relative size, so rtol 1e-5 (~100 ulps) bounds them with room and
    still fails on any real difference (a dropped or doubly counted shard moves the loss by O(1/8))."""
    ref, _ = _losses(_train_config(), 1)
    ep, state = _losses(_train_config(expert=4, data=2), 8)
    kernel = state["params"]["layers"]["mlp"]["experts"]["gate_proj"]
    assert kernel.sharding.spec[:2] == (None, "expert") and kernel.addressable_shards[0].data.shape[1] == 2
    assert ref[0]["loss"] != ref[-1]["loss"]  # it trains
    for r, e in zip(ref, ep):
        for key in ("loss", "grad_norm", "moe_aux_loss", "router_z_loss"):
            np.testing.assert_allclose(e[key], r[key], rtol=1e-5, err_msg=key)


def test_router_losses_join_the_objective_by_their_coefficients():
    """The train step's micro-batch objective is CE + z-loss + aux_coef * moe_aux_loss + z_coef * router_z_loss
    (each router loss the layers' mean times the target weight, so the step's division makes it a mean), the
    cross-entropy alone with the coefficients at 0; remat and the chunked loss give the same losses (the same
    float32 values, summed in another order by the chunked loss: rtol 1e-6, a few ulps). moe_aux_loss is
    experts * sum_e f_e P_e: k = 2 for uniform routing, near it at a random init."""
    from mathjax_train.data.toy_copy import ToyCopyIterator
    from mathjax_train.train.step import _sums

    cfg = _train_config().model
    batch = {k: jnp.asarray(v) for k, v in next(ToyCopyIterator(64, 8, 16, seed=3)).items()}
    params = nn.unbox(Decoder(cfg).init(jax.random.key(0), batch["tokens"])["params"])
    objective, sums = jax.jit(lambda p, b: _sums(Decoder(cfg), p, b, 0.0, 0))(params, batch)
    aux, z, w = (float(sums[k]) for k in ("moe_aux_loss", "router_z_loss", "weight"))
    assert 1.5 < aux / w < 3.0 and z > 0
    want = float(sums["loss"]) + 0.01 * aux + 0.001 * z
    np.testing.assert_allclose(float(objective), want, rtol=1e-6)  # float32 sum of three terms: a few ulps
    # coefficients 0, remat (dots policy) and the chunked-vocabulary loss: the objective is the cross-entropy alone
    # and the router losses come out of remat and the other loss path the same
    off = dataclasses.replace(cfg, router_aux_loss_coef=0.0, router_z_loss_coef=0.0, remat_policy="dots")
    objective_off, sums_remat = jax.jit(lambda p, b: _sums(Decoder(off), p, b, 0.0, 32))(params, batch)
    assert float(objective_off) == float(sums_remat["loss"])
    np.testing.assert_allclose(float(sums_remat["loss"]), float(sums["loss"]), rtol=1e-6)
    for key in ("moe_aux_loss", "router_z_loss"):
        np.testing.assert_allclose(float(sums_remat[key]), float(sums[key]), rtol=1e-6)


@pytest.mark.slow  # the whole trainer (data, 8-device mesh, checkpoint): about 25 s
def test_train_cli_writes_router_losses(tmp_path):
    """`mathjax-train train` on a tiny Mixtral (smoke recipe, toy copy task): metrics.jsonl rows carry
    moe_aux_loss and router_z_loss next to loss."""
    from train_helpers import SMOKE

    moe = [
        "model.architecture=mixtral", "model.num_experts=4", "model.num_experts_per_tok=2",
        "model.moe_intermediate_size=32", "model.router_aux_loss_coef=0.02", "model.router_z_loss_coef=0.001",
    ]  # fmt: skip
    args = ["train", "--config", str(SMOKE), f"output_dir={tmp_path}", "model.dtype=float32", "train.steps=2"]
    small = ["train.seq_len=16", "model.num_layers=1", "train.log_every_steps=1", "checkpoint.every_steps=100"]
    assert main(args + small + moe) == 0
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        assert 1.5 < r["moe_aux_loss"] < 3.0 and r["router_z_loss"] > 0 and np.isfinite(r["loss"])


@pytest.mark.parametrize("variant", ["qwen3_moe", pytest.param("mixtral", marks=pytest.mark.slow)])
def test_engine_greedy_matches_transformers(tmp_path, variant):
    """The sampling engine (continuous batching, paged cache, chunked prefill, C++ paged attention) on a tiny MoE:
    greedy tokens equal transformers' generate token for token (tests/test_engine.py's dense check)."""
    from hf_fixtures import import_random_model
    from mathjax_train.infer.loading import load_for_inference
    from test_engine import _greedy_with_admission_mid_run

    hf, ckpt = import_random_model(tmp_path, variant, seed=3)
    _greedy_with_admission_mid_run(hf, load_for_inference(ckpt), "cpu")


@pytest.mark.slow  # about 20 s: PEFT in two dtypes, three exports
def test_attention_lora_exports_to_peft_with_equal_logits(tmp_path):
    """Random adapters on q/k/v/o of a tiny Qwen3-MoE exported for PEFT: PEFT in float64 is the reference; PEFT in
    float32, our merged model, our unmerged forward and our merged HF export lie within float32's budget of it."""
    from hf_fixtures import import_random_model
    from lora_helpers import assert_matches_peft_float64, export_random_adapter
    from mathjax_train.infer.loading import load_for_inference
    from mathjax_train.model import lora as lora_params

    ids = np.array([[1, 5, 77, 200, 13, 9, 250, 31, 64, 3, 120, 7]], np.int64)

    hf_model, base_ckpt = import_random_model(tmp_path / "base", "qwen3_moe")
    cfg = load_model_config(base_ckpt)
    lora = LoraConfig(rank=4, alpha=16.0, targets=["q_proj", "k_proj", "v_proj", "o_proj"])
    out, adapters = export_random_adapter(base_ckpt, cfg, lora, 0.05, tmp_path)
    m = load_for_inference(out, dtype="float32")
    merged_ours = np.asarray(Decoder(m.cfg).apply({"params": m.params}, ids)[0])
    joined = lora_params.join(load_params(base_ckpt, cfg), adapters)
    unmerged = np.asarray(Decoder(cfg, lora).apply({"params": joined}, ids)[0])
    ours = {"our merged model": merged_ours, "our unmerged training forward": unmerged}
    widest = max(cfg.hidden_size, cfg.moe_intermediate_size)
    # the default grouped_mm (torch._grouped_mm) refuses float64
    eager = lambda base: base.set_experts_implementation("eager")  # noqa: E731
    assert_matches_peft_float64(hf_model, tmp_path, ids, ours, cfg.num_layers, widest, prepare=eager)


def test_plan_counts_total_and_active_parameters_by_hand():
    """`plan` on the tiny Qwen3-MoE of the training tests (hidden 32, 2 layers, 4 heads of 8, 2 kv heads, QK-norm,
    8 experts of width 16, top-2, vocabulary 64) over v5p-8's 4 chips with mesh.expert=4, by hand:
    a layer: q, o 32*4*8 = 1024 each, k, v 32*2*8 = 512 each, QK-norm 2*8, two norms 2*32, router 32*8 = 256,
    experts 8 * 3 * 32*16 = 12288: 15696; the model 2 layers + embedding and head 2 * 64*32 + final norm 32 = 35520;
    active: less the 6 unrouted experts a layer, 2 * 6 * 1536 = 18432: 17088; FLOPs per token 6 * (active matmul
    parameters 2 * (3072 + 256 + 2 * 1536) + 64*32 = 14848) + 12 * 2 layers * 4 heads * 8 * 16 tokens = 101376;
    expert weights per device: 2 * 12288 float32 split 4 ways = 24576 bytes."""
    from mathjax_train.plan.report import format_plan, make_plan

    cfg = _train_config(expert=4, extra=("mesh.topology=v5p-8",))
    plan = make_plan(cfg)
    assert plan["mesh"] == {"data": 1, "expert": 4, "fsdp": 1, "tensor": 1}
    m = plan["model"]
    assert m["parameters"] == 35520
    assert m["experts"] == {
        "num_experts": 8,
        "top_k": 2,
        "active_parameters": 17088,
        "expert_shards": 4,
        "expert_param_bytes_per_device": 24576,
    }
    assert plan["flops_per_token"] == 101376
    assert "17,088 active parameters per token; expert weights split 4 ways by the expert axis" in format_plan(plan)


# Qwen/Qwen3-30B-A3B's config.json (the fields import-hf reads)
QWEN3_30B_A3B = {
    "model_type": "qwen3_moe",
    "vocab_size": 151936,
    "hidden_size": 2048,
    "intermediate_size": 6144,
    "moe_intermediate_size": 768,
    "num_hidden_layers": 48,
    "num_attention_heads": 32,
    "num_key_value_heads": 4,
    "head_dim": 128,
    "max_position_embeddings": 40960,
    "rope_theta": 1000000.0,
    "rms_norm_eps": 1e-06,
    "tie_word_embeddings": False,
    "attention_bias": False,
    "hidden_act": "silu",
    "num_experts": 128,
    "num_experts_per_tok": 8,
    "norm_topk_prob": True,
    "decoder_sparse_step": 1,
    "mlp_only_layers": [],
    "router_aux_loss_coef": 0.001,
    "use_sliding_window": False,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
}


def test_the_qwen3_30b_a3b_recipe_is_the_released_model_and_fits_its_slice():
    """configs/qwen3_30b_a3b_sft_2k_v5p-32.yaml: its `model:` equals import-hf's reading of the released config.json
    (train reads that from init_from, plan the YAML); 30,532,122,624 parameters (what transformers counts for the
    same config), 3,353,032,704 active (less 48 layers x 120 unrouted experts x 3 x 2048 x 768); the analytic plan
    fits v5p-32's usable HBM with the experts split 4 ways by expert and 4 by FSDP."""
    from pathlib import Path

    from mathjax_train.config import load_config
    from mathjax_train.plan.report import make_plan

    path = Path(__file__).resolve().parents[1] / "configs" / "qwen3_30b_a3b_sft_2k_v5p-32.yaml"
    cfg = load_config(str(path))
    want = model_config_from_hf(QWEN3_30B_A3B)
    runtime = ("dtype", "param_dtype", "scan_layers", "remat_policy", "attention_kernel", "router_z_loss_coef")
    for f in dataclasses.fields(ModelConfig):
        if f.name not in runtime:
            assert getattr(cfg.model, f.name) == getattr(want, f.name), f.name
    plan = make_plan(cfg)
    assert plan["mesh"] == {"data": 1, "expert": 4, "fsdp": 4, "tensor": 1}
    assert plan["model"]["parameters"] == 30_532_122_624
    assert plan["model"]["experts"]["active_parameters"] == 30_532_122_624 - 48 * 120 * 3 * 2048 * 768 == 3_353_032_704
    expert_bytes = 48 * 128 * 3 * 2048 * 768 * 4 // 16  # float32, split by expert (4) and embed (fsdp 4)
    assert plan["model"]["experts"]["expert_param_bytes_per_device"] == expert_bytes
    assert plan["fits"] and plan["memory_per_device"]["analytic"]["total"] <= 0.9 * 95 * 2**30
