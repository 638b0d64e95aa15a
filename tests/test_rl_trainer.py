"""`mathjax-train rl` end to end on a tiny random checkpoint: metrics, summary, exact resume, batches."""

import json
import math

import numpy as np
import pytest

from hf_fixtures import import_random_model
from mathjax_train.cli import main
from mathjax_train.config import ConfigError, load_config
from mathjax_train.data.problems import Problem
from mathjax_train.infer.params import Completion
from mathjax_train.model import checkpoint as model_ckpt
from mathjax_train.rl.batch import BUCKET, build_batch
from mathjax_train.rl.best import improves
from mathjax_train.eval.metrics import binomial_interval
from mathjax_train.rl.rewards import Score
from mathjax_train.rl.rollout import Group, Rollout
from mathjax_train.rl.trainer import _step_metrics, run_rl
from rl_helpers import comparable, rl_config, write_jsonl

MISMATCH_KEYS = ("mismatch_max_abs", "mismatch_mean_abs", "mismatch_kl_k3", "mismatch_out_of_band")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return import_random_model(tmp_path_factory.mktemp("rl_random"), seed=3)[1]


def test_stopped_run_resumes_to_the_same_metrics(ckpt, tmp_path):
    full = run_rl(rl_config(ckpt, tmp_path, "full"), log=lambda m: None)
    assert full["status"] == "finished" and full["steps"] == 2
    cfg = rl_config(ckpt, tmp_path, "split")
    first = run_rl(cfg, max_steps_this_run=1, log=lambda m: None)
    assert first["status"] == "stopped" and first["steps"] == 1
    assert not (tmp_path / "split" / "rl_summary.json").exists()
    second = run_rl(rl_config(ckpt, tmp_path, "split"), log=lambda m: None)
    assert second["status"] == "finished" and second["steps"] == 2
    a, b = comparable(tmp_path / "full" / "metrics.jsonl"), comparable(tmp_path / "split" / "metrics.jsonl")
    assert [r["step"] for r in a] == [1, 2] and a == b
    # the entropy bonus and the KL term move the weights even where rewards are all 0: resuming had
    # to restore parameters, Adam moments and the prompt position for the losses to agree
    assert a[0]["loss"] != a[1]["loss"] and all(r["kl"] >= 0 for r in a) and a[1]["kl"] > 0
    assert a[0]["ratio_mean"] != 1.0  # the second pass over a batch sees the ratio move
    for r in a:  # the engine's log-probabilities against the learner's, before each step's updates
        assert all(math.isfinite(r[k]) for k in MISMATCH_KEYS)
        assert 0 <= r["mismatch_mean_abs"] <= r["mismatch_max_abs"] and r["mismatch_kl_k3"] >= 0
        # float32 puts the gap near 1e-6 (the bound test_rl_mismatch derives), far inside [0.8, 1.25]
        assert r["mismatch_out_of_band"] == 0.0
    assert "heldout_accuracy" in a[1] and "heldout_accuracy" not in a[0]
    summary = json.loads((tmp_path / "split" / "rl_summary.json").read_text())
    for key in ("heldout_accuracy_before", "heldout_accuracy_after", "steps", "sampled_tokens", "seconds"):
        assert key in summary
    assert summary["sampled_tokens"] == full["sampled_tokens"] == sum(r["sampled_tokens"] for r in a) > 0
    assert summary["heldout_problems"] == 3 and set(summary["heldout"]) == {"0", "2"}
    diff = summary["heldout_difference"]  # paired over the same 3 problems, step 0 against the last
    assert diff["problems"] == 3 and diff["difference"] == pytest.approx(
        summary["heldout_accuracy_after"] - summary["heldout_accuracy_before"], abs=1e-4
    )
    assert (tmp_path / "full" / "tensorboard").is_dir()
    # validation is scored with held-out; its best step (resumed runs keep the record) is OUTPUT_DIR/best
    assert set(summary["validation"]) == {"0", "2"} and "validation_accuracy" in a[1]
    best = summary["best"]
    assert {k: v for k, v in best.items() if k != "dir"} == {k: v for k, v in full["best"].items() if k != "dir"}
    assert best["step"] in (0, 2) and best["dir"] == str(tmp_path / "split" / "best")
    assert best["validation_accuracy"] == max(v["accuracy"] for v in summary["validation"].values())
    assert best["heldout_accuracy"] == summary["heldout"][str(best["step"])]["accuracy"]
    assert best["heldout_difference"]["problems"] == 3
    model_cfg = model_ckpt.load_model_config(best["dir"])
    kept = model_ckpt.load_params(best["dir"], model_cfg)
    chosen = ckpt if best["step"] == 0 else tmp_path / "split" / "checkpoints" / "2"
    final = model_ckpt.load_params(tmp_path / "split", model_cfg)
    for k, c, f in zip(_leaves(kept), _leaves(model_ckpt.load_params(chosen, model_cfg)), _leaves(final)):
        np.testing.assert_array_equal(k, c)
    assert best["step"] == 2 or any(not np.array_equal(k, f) for k, f in zip(_leaves(kept), _leaves(final)))
    assert json.loads((tmp_path / "split" / "best" / "best.json").read_text()) == {
        "step": best["step"],
        "validation_accuracy": best["validation_accuracy"],
    }
    # checkpoint 2 was written once, before its evaluation: re-running the finished run reads that evaluation
    # back from beside it (OUTPUT_DIR/heldout/step_2) and reports the same results and best step
    again = run_rl(rl_config(ckpt, tmp_path, "split"), log=lambda m: None)
    assert again["status"] == "finished" and again["steps"] == 2
    for key in ("heldout", "validation", "best", "heldout_difference", "sampled_tokens"):
        assert again[key] == summary[key], key
    assert comparable(tmp_path / "split" / "metrics.jsonl") == a
    for key in (
        "reward_mean",
        "pass_rate",
        "response_length",
        "clip_fraction",
        "entropy",
        "sampled_tokens_per_second",
        "sample_seconds",
        "learn_seconds",
    ):
        assert key in json.loads((tmp_path / "full" / "metrics.jsonl").read_text().splitlines()[0])


def test_corrections_train_and_log_their_shares(ckpt, tmp_path, capsys):
    cfg = rl_config(ckpt, tmp_path, "tis", "train.steps=1", "rl.heldout=", "rl.validation=", "rl.kl_coef=0")
    cfg.rl.tis_cap, cfg.rl.mismatch_mask = 2.0, "sequence"
    assert run_rl(cfg, log=lambda m: None)["status"] == "finished"
    (row,) = [json.loads(x) for x in (tmp_path / "tis" / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(row[k]) for k in MISMATCH_KEYS)
    # float32: no ratio is near the band or the cap, so nothing is masked or truncated and every token trains
    assert row["mismatch_masked"] == 0.0 and row["tis_truncated"] == 0.0
    assert row["trained_tokens"] == row["sampled_tokens"] > 0
    assert f"logp mismatch max {row['mismatch_max_abs']:.1e}" in capsys.readouterr().err  # the progress line


def test_exact_mode_starts_the_update_at_ratio_exactly_one(ckpt, tmp_path):
    extra = ("train.steps=1", "rl.heldout=", "rl.validation=", "rl.updates_per_batch=1", "rl.minibatches=1")
    cfg = rl_config(ckpt, tmp_path, "exact", *extra, "rl.exact_logprobs=true", "rl.temperature=1.0")
    assert run_rl(cfg, log=lambda m: None)["status"] == "finished"
    (row,) = [json.loads(x) for x in (tmp_path / "exact" / "metrics.jsonl").read_text().splitlines()]
    assert row["trained_tokens"] > 0 and row["mismatch_max_abs"] == 0.0  # the learner scored the engine's numbers
    assert row["ratio_min"] == row["ratio_max"] == 1.0  # every trained token's ratio, as the one update saw it


def _leaves(tree):
    import jax

    return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


def test_best_keeps_the_first_of_equal_validation_scores():
    best = None
    kept = []
    for step, acc in ((0, 0.10), (25, 0.12), (50, 0.12), (75, 0.11), (100, 0.15)):
        if improves(best, acc):
            best = {"step": step, "validation_accuracy": acc}
            kept.append(step)
    assert kept == [0, 25, 100]


def test_batch_masks_prompt_tool_output_and_dropped_rows():
    tool = Completion([7, 8, 9, 10], "", "eos", [-0.5, float("nan"), float("nan"), -0.25])
    plain = Completion([11, 12], "", "length", [-1.0, -2.0])
    b = build_batch([[1, 2, 3], [1, 4]], [tool, plain], [0.5, -1.0], seq_len=8, rows=3, drop=[False, True])
    # row 0: inputs 1 2 3 7 8 9 | targets 2 3 7 8 9 10; only the sampled 7 and 10 are trained
    assert b["tokens"][0, :6].tolist() == [1, 2, 3, 7, 8, 9] and b["targets"][0, :6].tolist() == [2, 3, 7, 8, 9, 10]
    assert b["loss_mask"][0].tolist() == [0, 0, 1, 0, 0, 1, 0, 0]
    assert b["old_logp"][0, 2] == -0.5 and b["old_logp"][0, 5] == -0.25 and np.all(np.isfinite(b["old_logp"]))
    assert b["loss_mask"][1].sum() == 0 and b["segment_ids"][1].tolist() == [1, 1, 1, 0, 0, 0, 0, 0]
    assert b["loss_mask"][2].sum() == 0 and b["advantages"][0, 0] == 0.5 and b["advantages"][1, 3] == -1.0
    with pytest.raises(ValueError, match="exceed train.seq_len"):
        build_batch([[1] * 8], [plain], [0.0], seq_len=8, rows=1)


def test_batch_width_is_the_longest_row_rounded_up_to_a_bucket():
    short = Completion([5, 6, 7], "", "eos", [-0.1, -0.2, -0.3])
    long = Completion(list(range(3, 3 + 40)), "", "length", [-0.5] * 40)
    b = build_batch([[1, 2]], [short], [1.0], seq_len=176, rows=2)
    assert {v.shape for v in b.values()} == {(2, BUCKET)}  # 4 tokens in a row of 32, not 176
    full = build_batch([[1, 2]], [short], [1.0], seq_len=BUCKET, rows=2)
    assert all(np.array_equal(b[k], full[k]) for k in full)
    w = build_batch([[1, 2], [1, 2]], [short, long], [1.0, -1.0], seq_len=176, rows=2)
    assert w["tokens"].shape == (2, 2 * BUCKET) and w["loss_mask"][1].sum() == 40  # 41 tokens -> 64
    assert build_batch([[1, 2]], [long], [1.0], seq_len=50, rows=1)["tokens"].shape == (1, 50)  # capped


def test_step_metrics_leave_out_minibatches_that_trained_nothing():
    comp = Completion([5, 6], "1", "eos", [-0.1, -0.2])
    group = Group(Problem(id="p", question="q", answer="1"), [1], [comp, comp], [Score(1.0, True, True, False)] * 2)
    rollout = Rollout([group], sampled=1, sampled_tokens=4, scores=group.scores)
    batch = {"loss_mask": np.ones((2, 3), np.float32)}
    learn = [
        {"loss": 0.4, "grad_norm": 2.0, "ratio_mean": 1.2, "clip_fraction": 0.5, "trained_tokens": 3.0},
        {"loss": 0.0, "grad_norm": 0.0, "ratio_mean": 0.0, "clip_fraction": 0.0, "trained_tokens": 0.0},
        {"loss": 0.2, "grad_norm": 1.0, "ratio_mean": 1.0, "clip_fraction": 0.1, "trained_tokens": 2.0},
    ]
    row = _step_metrics(rollout, batch, learn)
    assert row["ratio_mean"] == pytest.approx(1.1) and row["loss"] == pytest.approx(0.3)
    assert row["grad_norm"] == pytest.approx(1.5) and row["clip_fraction"] == pytest.approx(0.3)
    assert row["trained_tokens"] == 6 and row["pass_rate"] == 1.0
    assert "ratio_mean" not in _step_metrics(rollout, batch, learn[1:2])  # nothing trained: no mean of zeros


def test_config_errors_name_the_field(capsys):
    with pytest.raises(ConfigError, match="rl.aggregation: 'mean' is not one of 'token', 'sequence', 'constant'"):
        load_config(None, ["rl.aggregation=mean"])
    with pytest.raises(ConfigError, match=r"rl.minibatches \(5\) must divide"):
        load_config(None, ["rl.minibatches=5"])
    with pytest.raises(ConfigError, match="unknown key 'groupsize' in rl"):
        load_config(None, ["rl.groupsize=4"])
    assert main(["rl", "--config", "configs/grpo_demo.yaml", "init_from=", "train.steps=1"]) == 2
    assert "init_from" in capsys.readouterr().err


def test_binomial_interval():
    lo, hi = binomial_interval(50, 200)
    assert lo < 0.25 < hi and abs((hi - lo) - 0.12) < 0.01


def test_tool_rollouts_mask_interpreter_output(tmp_path):
    from forced_model import ADDED, ANS1, ANS2, CODE1, CODE2, EOS, OUT1, OUT2, Q1, Q2, SCRIPT, make_forced_checkpoint
    from mathjax_train.data.templates import get_template
    from mathjax_train.infer.loading import load_for_inference
    from mathjax_train.rl.prompts import PromptStream
    from mathjax_train.rl.rollout import Sampler, collect

    ckpt = make_forced_checkpoint(tmp_path, SCRIPT, ADDED)
    cfg_file = ckpt / "tokenizer" / "tokenizer_config.json"
    tok_cfg = json.loads(cfg_file.read_text())
    tok_cfg["chat_template"] = "{{ messages[-1]['content'] }}"  # the prompt ends in the scripted token
    cfg_file.write_text(json.dumps(tok_cfg))
    prompts = write_jsonl(
        tmp_path / "p.jsonl",
        [
            {"question": "Six times seven, plus one. " + Q1, "answer": "43"},
            {"question": "Say seven. " + Q2, "answer": "7"},
        ],
    )
    cfg = load_config(
        None,
        [
            f"init_from={ckpt}",
            "data.template=chat",
            f"rl.prompts={{{prompts}: 1.0}}",
            "rl.prompts_per_step=2",
            "rl.group_size=2",
            "rl.max_new_tokens=12",
            "rl.tools=python",
            "train.seq_len=64",
            "rl.temperature=0.5",
        ],
    )
    model = load_for_inference(ckpt, dtype="float32")
    sampler = Sampler(model, cfg)
    try:
        stream = PromptStream(cfg)
        stream.names = [prompts]  # walk the file in order so row 0 is the code question
        stream._finite[prompts] = sorted(stream._finite[prompts], key=lambda p: p.answer != "43")
        rollout = collect(stream, sampler, get_template("chat", tokenizer_config=ckpt / "tokenizer"), cfg)
    finally:
        sampler.close()
    code, plain = rollout.groups
    assert [c.text for c in code.completions] == [CODE1 + OUT1 + CODE2 + OUT2 + ANS1] * 2
    assert code.rewards == [1.0, 1.0] and plain.rewards == [1.0, 1.0]
    assert [c.tool_calls for c in code.completions] == [2, 2]
    tok = model.tokenizer
    one = lambda s: tok.encode(s, add_special_tokens=False) if s != EOS else [2]  # noqa: E731
    ids = code.completions[0].token_ids
    assert ids == one(CODE1) + one(OUT1) + one(CODE2) + one(OUT2) + one(ANS1) + [2]
    b = build_batch(
        [code.prompt_ids, plain.prompt_ids], [code.completions[0], plain.completions[0]], [1.0, 1.0], seq_len=64, rows=2
    )
    p = len(code.prompt_ids) - 1
    # sampled: CODE1, CODE2, ANS1, EOS; the interpreter's output blocks are masked like the prompt
    assert b["loss_mask"][0, p : p + 6].tolist() == [1, 0, 1, 0, 1, 1] and b["loss_mask"][0].sum() == 4
    assert b["loss_mask"][1].sum() == len(plain.completions[0].token_ids) == len(one(ANS2)) + 1


def test_plan_counts_sampler_pages_and_reference():
    """plan --rl on the 1.5B recipe's v5p-8: the learner FSDP over the 4 chips, the host's engine on 2 of them
    (its parameters resharded, a tied head's decoding copy, the KV pages split by kv heads), the reference."""
    from mathjax_train.model import page_bytes
    from mathjax_train.plan.report import format_plan, make_plan

    path = "configs/grpo_qwen2.5_1.5b_v5p-8.yaml"
    model = load_config(path).model
    on = make_plan(load_config(path), rl=True)
    off = make_plan(load_config(path, ["rl.kl_coef=0"]), rl=True)
    r, a = on["memory_per_device"]["rl"], on["memory_per_device"]["analytic"]
    assert on["mesh"] == {"data": 1, "expert": 1, "fsdp": 4, "tensor": 1} and (r["hosts"], r["engine_tensor"]) == (1, 2)
    assert r["kv_slots"] == 256 and r["kv_pages"] == 256 * 65 + 1  # 1025 tokens in 16-token pages, + the trash page
    assert r["kv_cache"] == r["kv_pages"] * page_bytes(model, 16) // 2  # the 2 kv heads, one a chip
    assert r["reference"] == a["params"] and off["memory_per_device"]["rl"]["reference"] == 0
    # the engine's float32 parameters split 2 ways (norms replicated), and the tied head's own matrix
    assert r["engine_params"] == pytest.approx(on["model"]["parameters"] * 4 / 2, rel=1e-3)
    assert r["decode_copy"] == model.hidden_size * model.vocab_size * 4 // 2
    assert r["total"] == r["kv_cache"] + r["reference"] + r["engine_params"] + r["decode_copy"]
    # the hand-over: the learner's state and everything alive, and the largest array (an MLP projection stacked
    # over 28 layers, float32) whole on each chip while XLA:TPU moves it
    assert r["reshard_temp"] == 28 * model.hidden_size * model.intermediate_size * 4
    assert r["reshard_peak"] == a["params"] + a["optimizer_state"] + r["total"] + r["reshard_temp"]
    assert a["total"] == a["params"] + a["optimizer_state"] + a["gradients"] + a["activations"] + r["total"]
    assert on["batch"]["batch_size"] == 16 and on["batch"]["loss_vocab_chunk"] == 0  # one update's minibatch
    assert on["batch"]["rows_per_device_per_microbatch"] == 4
    text = format_plan(on)
    assert "an engine per host on 2 chip(s): 256 slots, 16641 KV pages" in text and "reshard peak" in text

    # one chip: the engine reads the learner's parameters where they are, nothing is resharded
    one = make_plan(load_config(path, ["rl.engine.tensor=1"]), "v5p-2", rl=True)["memory_per_device"]["rl"]
    assert one["engine_params"] == 0 and one["reshard_peak"] == 0 and one["kv_cache"] == r["kv_cache"] * 2

    # a pod: the 7B recipe's 4 hosts share the step's 512 sequences, an engine of 128 slots on each host's 4 chips
    pod = make_plan(load_config("configs/grpo_qwen2.5_7b_v5p-32.yaml"), rl=True)
    p = pod["memory_per_device"]["rl"]
    assert pod["mesh"]["fsdp"] == 16 and (p["hosts"], p["engine_tensor"], p["kv_slots"]) == (4, 4, 128)


def test_reshard_between_device_orders():
    """A learner mesh that lists the devices in another order than the sampler layout (a pod's, by the chips'
    links): one jitted copy takes both, and every device ends with its engine shard of the values."""
    import jax
    from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

    from mathjax_train.rl.reshard import reshard_program, sampler_mesh

    devices = jax.devices()[:8]
    order = [devices[i] for i in (0, 4, 2, 6, 1, 5, 3, 7)]
    learner = NamedSharding(
        Mesh(np.array(order).reshape(1, 8, 1), ("data", "fsdp", "tensor"), axis_types=(AxisType.Auto,) * 3),
        P("fsdp", None),
    )
    target = NamedSharding(sampler_mesh(2, devices), P(None, "tensor"))
    value = np.arange(64.0, dtype=np.float32).reshape(8, 8)
    out = reshard_program({"w": learner}, {"w": target})({"w": jax.device_put(value, learner)})["w"]
    where = target.devices_indices_map(value.shape)
    assert {s.device for s in out.addressable_shards} == set(devices)
    for shard in out.addressable_shards:
        assert np.array_equal(np.asarray(shard.data), value[where[shard.device]])
