"""LoRA and QLoRA on a tiny random HF model: only the adapters get gradients, optimizer state and
checkpoint space; training lowers the loss and resumes exactly; the adapters load in `peft` (no code
of ours) with logits equal to our model's and to the merged export's; PEFT adapters import back; an
int8 base computes what its merge gives; `plan` shows the 7B LoRA recipes fit a v5e-8 where full SFT
does not; on a tiny Qwen3 (QK-norm) random adapters on every target load in `peft` with equal logits."""

import copy
import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import peft
import pytest
import torch
import transformers
from flax import traverse_util
from jax.sharding import PartitionSpec

from hf_fixtures import import_random_model
from mathjax_train.cli import main
from mathjax_train.config import ConfigError, LoraConfig, load_config
from mathjax_train.infer.loading import load_for_inference
from mathjax_train.model import Decoder
from mathjax_train.model import checkpoint as ckpt
from mathjax_train.model import lora as lora_params
from mathjax_train.parallel.rules import axis_rules
from mathjax_train.plan.memory import abstract_mesh
from mathjax_train.plan.report import make_plan
from mathjax_train.train.optimizer import make_optimizer
from mathjax_train.train.setup import build_step
from mathjax_train.train.state import state_layout
from mathjax_train.train.trainer import resolve_model_config, train
from lora_helpers import assert_matches_peft_float64, export_random_adapter
from train_helpers import REPO, read_metrics, tiny_config

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
ALL = f"lora.targets=[{','.join(TARGETS)}]"
IDS = np.array([[1, 5, 77, 200, 13, 9, 250, 31, 64, 3, 120, 7]], np.int32)


def lora_config(out, base, *extra):
    return tiny_config(
        out,
        f"init_from={base}",
        "lora.rank=4",
        "lora.alpha=8",
        "lora.dropout=0.1",
        ALL,
        "train.steps=8",
        "train.log_every_steps=1",
        "checkpoint.every_steps=4",
        "optimizer.learning_rate=1e-2",
        "optimizer.warmup_steps=0",
        *extra,
    )


def quiet(*_):
    pass


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """(directory with hf/ and ckpt/, the HF model) of a tiny random LLaMA."""
    d = tmp_path_factory.mktemp("lora_base")
    model, _ = import_random_model(d)
    return d, model


@pytest.fixture(scope="module")
def trained(base, tmp_path_factory):
    out = tmp_path_factory.mktemp("lora_run")
    assert train(lora_config(out, base[0] / "ckpt"), log=quiet)["status"] == "finished"
    return out


def our_logits(ckpt_dir) -> np.ndarray:
    m = load_for_inference(ckpt_dir, dtype="float32")  # adapters merged on load
    return np.asarray(Decoder(m.cfg).apply({"params": m.params}, IDS)[0])


def torch_logits(model) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor(IDS.astype(np.int64))).logits.numpy()


def test_the_step_updates_only_the_adapters_on_an_int8_base(base, tmp_path):
    """QLoRA's step: gradients and AdamW state for the adapters only, the int8 base bit-for-bit
    untouched, the loss falls; the training forward equals the merged model's."""
    cfg = lora_config(tmp_path, base[0] / "ckpt", "lora.quantize_base=int8")
    model_cfg = resolve_model_config(cfg)
    setup = build_step(cfg, model_cfg)
    frozen = setup.load_base(cfg.init_from)
    before = traverse_util.flatten_dict(jax.tree_util.tree_map(np.asarray, frozen))
    kernels = [v for k, v in before.items() if k[-1] == "kernel" and k[0] == "layers"]
    assert len(kernels) == 7 and all(k.dtype == np.int8 for k in kernels)
    state = setup.init_state(0, frozen)
    adapters = traverse_util.flatten_dict(jax.tree_util.tree_map(np.asarray, state["params"]))
    assert len(adapters) == 2 * 7 and all(k[-1] in ("lora_a", "lora_b") for k in adapters)  # scanned: stacked
    assert all(not v.any() for k, v in adapters.items() if k[-1] == "lora_b")  # starts at the base
    shapes = {v.shape for v in adapters.values()}
    assert {x.shape for x in jax.tree_util.tree_leaves(state["opt_state"])} - {()} == shapes  # AdamW: adapters only
    rng = np.random.default_rng(0)
    tokens = rng.integers(3, 300, (8, 64))
    batch = {
        "tokens": tokens,
        "positions": np.tile(np.arange(64), (8, 1)),
        "segment_ids": np.ones((8, 64)),
        "targets": np.roll(tokens, -1, axis=1),
    }
    batch = {k: jax.device_put(v.astype(np.int32), setup.batch_sharding) for k, v in batch.items()}
    batch["loss_weights"] = jax.device_put(np.ones((8, 64), np.float32), setup.batch_sharding)
    losses = []
    with jax.set_mesh(setup.mesh):
        for _ in range(4):
            state, m = setup.step(state, batch)
            losses.append(float(m["loss"]))
    assert bool(m["finite"]) and losses[-1] < losses[0] - 0.1
    after = traverse_util.flatten_dict(jax.tree_util.tree_map(np.asarray, state["base"]))
    for k, v in before.items():
        np.testing.assert_array_equal(after[k], v, err_msg=str(k))
    trained = jax.tree_util.tree_map(np.asarray, state["params"])
    flat = traverse_util.flatten_dict(trained)
    assert all(np.abs(flat[k] - adapters[k]).max() > 0 for k in adapters)

    # inference merges on the same int8 rounding (quantize_base), and the merge computes what training did
    lora = cfg.lora
    _, like = lora_params.abstract_trees(model_cfg, lora)
    requantized = lora_params.quantize_base(ckpt.load_params(cfg.init_from, model_cfg), like)
    for k, v in traverse_util.flatten_dict(requantized).items():
        np.testing.assert_array_equal(np.asarray(v), before[k])
    cpu = jax.tree_util.tree_map(np.asarray, {"base": state["base"], "params": state["params"]})

    @jax.jit
    def both(b, a):
        live = Decoder(model_cfg, lora).apply({"params": lora_params.join(b, a)}, IDS)[0]
        return live, Decoder(model_cfg).apply({"params": lora_params.merge(b, a, lora)}, IDS)[0]

    live, merged = both(cpu["base"], cpu["params"])
    np.testing.assert_allclose(np.asarray(merged), np.asarray(live), atol=1e-4, rtol=0)


def test_int8_quantization_is_within_half_a_step():
    w = np.random.default_rng(0).normal(size=(3, 40, 4, 6)).astype(np.float32)
    q, s = lora_params.quantize_int8(jnp.asarray(w), lead=1, n_out=2)
    assert q.dtype == jnp.int8 and s.shape == (3, 4, 6) and int(jnp.abs(q.astype(jnp.int32)).max()) == 127
    err = np.abs(np.asarray(lora_params.dequantize_int8(q, s, lead=1)) - w)
    assert (err <= np.asarray(s)[:, None] / 2 + 1e-7).all()


def test_training_lowers_the_loss_and_checkpoints_only_adapters(trained, base):
    rows = read_metrics(trained)
    assert [r["step"] for r in rows] == list(range(1, 9))
    assert rows[-1]["loss"] < rows[0]["loss"] - 0.1
    meta = json.loads((trained / "adapter.json").read_text())
    assert meta["base"] == str(base[0] / "ckpt") and meta["lora"]["rank"] == 4
    with ocp.StandardCheckpointer() as c:
        stored = c.metadata((trained / "checkpoints" / "8" / "params").absolute()).item_metadata
        opt = c.metadata((trained / "checkpoints" / "8" / "train_state").absolute()).item_metadata
    flat = traverse_util.flatten_dict(dict(stored))
    assert flat and all(k[-1] in ("lora_a", "lora_b") for k in flat)
    adapter_count = sum(int(np.prod(v.shape)) for v in flat.values())
    base_count = ckpt.param_count(ckpt.abstract_params(ckpt.load_model_config(base[0] / "ckpt")))
    # 2 layers x rank 4 x (in + out) of q, k, v, o, gate, up, down (hidden 96, kv 2 x 24, mlp 160)
    assert adapter_count == 2 * 4 * ((96 + 96) + 2 * (96 + 48) + (96 + 96) + 3 * (96 + 160))
    assert adapter_count / base_count < 0.1  # 11,520 of 209,376 here (the 7B recipe: 0.6%, test_plan_... below)
    shapes = {tuple(v.shape) for v in flat.values()}
    assert {tuple(x.shape) for x in jax.tree_util.tree_leaves(opt["opt_state"])} - {()} == shapes


def test_resume_is_exact(trained, base, tmp_path):
    cfg = lora_config(tmp_path, base[0] / "ckpt")
    assert train(cfg, max_steps_this_run=4, log=quiet)["status"] == "stopped"
    assert train(cfg, log=quiet)["resumed_from"] == 4
    a, b = read_metrics(trained), read_metrics(tmp_path)
    for x, y in zip(a, b, strict=True):
        for key in ("loss", "grad_norm", "accuracy", "lr"):
            assert x[key] == y[key], (x["step"], key)  # bitwise, dropout masks included
    m = ckpt.load_model_config(trained)
    _, lora = lora_params.load_adapter_meta(trained)
    got, want = (traverse_util.flatten_dict(lora_params.load_adapters(d, m, lora)) for d in (tmp_path, trained))
    for k in want:
        np.testing.assert_array_equal(np.asarray(got[k]), np.asarray(want[k]))


def test_peft_loads_our_adapter_with_equal_logits(trained, base, tmp_path):
    hf_dir, hf_model = base[0] / "hf", base[1]
    assert main(["export-hf", "--adapter", str(trained), str(tmp_path / "peft")]) == 0
    assert main(["export-hf", str(trained), str(tmp_path / "merged")]) == 0
    conf = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    assert (conf["peft_type"], conf["r"], conf["lora_alpha"]) == ("LORA", 4, 8.0)

    ours = our_logits(trained)
    with_adapter = peft.PeftModel.from_pretrained(copy.deepcopy(hf_model), str(tmp_path / "peft")).eval()
    a = with_adapter.base_model.model.model.layers[1].self_attn.o_proj.lora_A["default"].weight
    assert tuple(a.shape) == (4, 96) and float(a.abs().max()) > 0
    merged = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype=torch.float32).eval()
    np.testing.assert_allclose(torch_logits(with_adapter), ours, atol=1e-4, rtol=0)
    np.testing.assert_allclose(torch_logits(merged), ours, atol=1e-4, rtol=0)
    assert np.abs(torch_logits(hf_model.eval()) - ours).max() > 0.1  # the adapters change the model

    # `generate` takes the adapter checkpoint (merged on load): greedy tokens equal transformers' on the merge
    prompt = "Natalia sold 48 clips in April"
    (tmp_path / "p.jsonl").write_text(json.dumps({"prompt": prompt}) + "\n")
    assert (
        main(
            [
                "generate",
                "--checkpoint",
                str(trained),
                "--prompts",
                str(tmp_path / "p.jsonl"),
                "--output",
                str(tmp_path / "o.jsonl"),
                "--max-new-tokens",
                "6",
                "--dtype",
                "float32",
            ]
        )
        == 0
    )
    got = json.loads((tmp_path / "o.jsonl").read_text())["token_ids"][0]
    ids = transformers.AutoTokenizer.from_pretrained(hf_dir)(prompt).input_ids
    with torch.no_grad():
        ref = merged.generate(torch.tensor([ids]), max_new_tokens=6, do_sample=False)[0, len(ids) :].tolist()
    assert got == ref and len(ref) >= 1

    # PEFT -> ours: the same adapters and logits
    assert (
        main(
            [
                "import-hf",
                "--adapter",
                str(tmp_path / "peft"),
                str(tmp_path / "back"),
                "--base",
                str(hf_dir.parent / "ckpt"),
            ]
        )
        == 0
    )
    np.testing.assert_array_equal(our_logits(tmp_path / "back"), ours)
    # a PEFT adapter made by peft itself (random B, 3 targets) imports too
    own = peft.get_peft_model(
        copy.deepcopy(hf_model),
        peft.LoraConfig(
            r=2, lora_alpha=5, target_modules=["q_proj", "down_proj", "gate_proj"], init_lora_weights=False
        ),
    )
    own.save_pretrained(tmp_path / "own")
    assert (
        main(
            [
                "import-hf",
                "--adapter",
                str(tmp_path / "own"),
                str(tmp_path / "own_ckpt"),
                "--base",
                str(hf_dir.parent / "ckpt"),
            ]
        )
        == 0
    )
    np.testing.assert_allclose(our_logits(tmp_path / "own_ckpt"), torch_logits(own.eval()), atol=1e-4, rtol=0)


def test_plan_lora_recipes_fit_a_v5e_8_where_full_sft_does_not():
    gib = 2**30
    plans = {}
    for name in ("lora", "qlora"):
        path = str(REPO / "configs" / f"llama2_7b_{name}_v5e-8.yaml")
        plans[name] = p = make_plan(load_config(path))
        a = p["memory_per_device"]["analytic"]
        assert (
            p["fits"] and p["topology"]["chips"] == 8 and p["mesh"] == {"data": 1, "expert": 1, "fsdp": 8, "tensor": 1}
        )
        assert p["model"]["parameters"] == 6_738_415_616
        assert p["model"]["trainable_parameters"] == 32 * 16 * (4 * (4096 + 4096) + 3 * (4096 + 11008))
        assert p["model"]["trainable_parameters"] / p["model"]["parameters"] < 0.006  # the adapter checkpoint
        assert 0 <= a["optimizer_state"] - 2 * a["params"] < 64 and a["params"] < 0.2 * gib  # + AdamW's counts
        full = make_plan(load_config(path, ["lora.rank=0", "lora.quantize_base=none", "model.param_dtype=float32"]))
        fa = full["memory_per_device"]["analytic"]
        assert not full["fits"] and fa["frozen_base"] == 0 and fa["optimizer_state"] > 6 * gib
        assert full["model"]["trainable_parameters"] == 6_738_415_616
        if name == "lora":  # full SFT with bfloat16 weights and moments (no float32 master copy) would fit
            assert make_plan(load_config(path, ["lora.rank=0"]))["fits"]
    # the adapters follow the rules table: `embed` on fsdp, `lora_rank` whole, `layers` stacked
    cfg = load_config(str(REPO / "configs" / "llama2_7b_qlora_v5e-8.yaml"))
    tx, _ = make_optimizer(cfg.optimizer, 10)
    layout = state_layout(cfg.model, tx, abstract_mesh(plans["qlora"]["mesh"]), axis_rules(), cfg.lora)
    q = layout.shardings["params"]["layers"]["self_attn"]["q_proj"]
    assert q["lora_a"].spec == PartitionSpec(None, "fsdp", None)
    assert q["lora_b"].spec == PartitionSpec(None, None, "tensor", None)  # (layers, rank, heads, head_dim)
    down = layout.shardings["params"]["layers"]["mlp"]["down_proj"]
    assert down["lora_b"].spec == PartitionSpec(None, None, "fsdp")
    base_q = layout.shardings["base"]["layers"]["self_attn"]["q_proj"]
    assert base_q["kernel"].spec == PartitionSpec(None, "fsdp", "tensor", None)
    assert base_q["kernel_scale"].spec == PartitionSpec(None, "tensor", None)
    assert layout.abstract["base"]["layers"]["self_attn"]["q_proj"]["kernel"].dtype == jnp.int8
    bf16, int8 = (plans[n]["memory_per_device"]["analytic"]["frozen_base"] for n in ("lora", "qlora"))
    assert 0.5 * bf16 < int8 < 0.55 * bf16  # int8 projections + bfloat16 embeddings, head and norms


def test_bad_lora_input_is_named(base, tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"lora.targets\[0\]: 'qproj' is not one of 'q_proj'"):
        tiny_config(tmp_path, "lora.rank=4", "lora.targets=[qproj]", "init_from=x")
    with pytest.raises(ConfigError, match="set init_from"):
        tiny_config(tmp_path, "lora.rank=4")
    with pytest.raises(ConfigError, match="lora.quantize_base=int8 needs adapters"):
        tiny_config(tmp_path, "lora.quantize_base=int8")
    peft_dir = tmp_path / "peft"
    model = peft.get_peft_model(copy.deepcopy(base[1]), peft.LoraConfig(r=2, target_modules=["q_proj"]))
    model.save_pretrained(peft_dir)
    conf = json.loads((peft_dir / "adapter_config.json").read_text())
    ck = str(base[0] / "ckpt")
    cases = [
        ({"use_dora": True}, "use_dora=True is not supported"),
        ({"target_modules": "q_proj"}, "target_modules must be a list"),
        ({"peft_type": "IA3"}, "only LORA adapters"),
        ({"r": 3}, "has shape (2, 96), but the config implies (3, 96)"),
        ({"target_modules": ["q_proj", "v_proj"]}, "v_proj.lora_A.weight' is missing"),
    ]
    for change, msg in cases:
        bad = tmp_path / f"bad{len(msg)}"
        shutil.copytree(peft_dir, bad)
        (bad / "adapter_config.json").write_text(json.dumps({**conf, **change}))
        assert main(["import-hf", "--adapter", str(bad), str(tmp_path / "out"), "--base", ck]) == 2, change
        err = capsys.readouterr().err
        assert msg in err and str(bad) in err, (change, err)
    assert main(["import-hf", "--adapter", str(peft_dir), str(tmp_path / "out")]) == 2
    assert "needs --base" in capsys.readouterr().err
    assert main(["export-hf", "--adapter", ck, str(tmp_path / "x")]) == 2
    assert "not an adapter checkpoint" in capsys.readouterr().err


def test_evaluate_and_rft_take_an_adapter_checkpoint(trained, tmp_path, capsys):
    """Both merge the adapters on load: their samples equal those of the merged model imported as a plain
    checkpoint (that the adapters change the model is checked above)."""
    assert main(["export-hf", str(trained), str(tmp_path / "merged_hf")]) == 0
    assert main(["import-hf", str(tmp_path / "merged_hf"), str(tmp_path / "merged"), "--param-dtype", "float32"]) == 0
    problems = tmp_path / "problems.jsonl"
    problems.write_text(
        "".join(
            json.dumps({"question": q, "answer": a, "solution": f"#### {a}"}) + "\n"
            for q, a in [("Natalia sold 48 clips", "72"), ("What is 3 + 4?", "7")]
        )
    )
    sampling = ["--max-new-tokens", "5", "--dtype", "float32", "--no-progress"]
    evaluated, sampled = {}, {}
    for name in ("trained", "merged"):
        ck = str(trained if name == "trained" else tmp_path / "merged")
        assert (
            main(
                [
                    "evaluate",
                    "--checkpoint",
                    ck,
                    "--dataset",
                    str(problems),
                    "--output-dir",
                    str(tmp_path / f"eval_{name}"),
                    *sampling,
                ]
            )
            == 0
        )
        rows = (tmp_path / f"eval_{name}" / "samples.jsonl").read_text().splitlines()
        evaluated[name] = [json.loads(r)["completions"] for r in rows]
        capsys.readouterr()
        assert (
            main(
                [
                    "rft",
                    "--checkpoint",
                    ck,
                    "--dataset",
                    str(problems),
                    "--output",
                    str(tmp_path / f"{name}.jsonl"),
                    "--k",
                    "3",
                    "--template",
                    "question_answer",
                    *sampling,
                ]
            )
            == 0
        )
        summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        sampled[name] = {k: summary[k] for k in ("samples", "sampled_tokens", "finish_reasons", "rejected")}
    assert evaluated["trained"] == evaluated["merged"] and len(evaluated["trained"]) == 2
    assert sampled["trained"] == sampled["merged"] and sampled["trained"]["samples"] == 6


def test_peft_loads_random_adapters_on_qwen3_with_equal_logits(tmp_path):
    """Random adapters on every target of a tiny Qwen3 (QK-norm, head_dim 32 != 96 / 4 heads), exported for PEFT:
    PEFT in float64 is the reference; PEFT in float32, our merged model, our unmerged training forward and our
    merged HF export each lie within float32's rounding budget of it (tests/precision.py); PEFT's adapter imports
    back to the same arrays."""
    hf_model, base_ckpt = import_random_model(tmp_path / "base", "qwen3")
    cfg = ckpt.load_model_config(base_ckpt)
    lora = LoraConfig(rank=4, alpha=16.0, targets=TARGETS)
    out, adapters = export_random_adapter(base_ckpt, cfg, lora, 0.05, tmp_path)

    merged_ours = our_logits(out)
    base_params = ckpt.load_params(base_ckpt, cfg)
    unmerged = np.asarray(Decoder(cfg, lora).apply({"params": lora_params.join(base_params, adapters)}, IDS)[0])
    ours = {"our merged model": merged_ours, "our unmerged training forward": unmerged}
    assert_matches_peft_float64(
        hf_model, tmp_path, IDS, ours, cfg.num_layers, max(cfg.hidden_size, cfg.intermediate_size)
    )

    args = ["import-hf", "--adapter", str(tmp_path / "peft"), str(tmp_path / "back"), "--base", str(base_ckpt)]
    assert main(args) == 0
    back = lora_params.load_adapters(tmp_path / "back", cfg, lora)
    jax.tree_util.tree_map(np.testing.assert_array_equal, back, adapters)
