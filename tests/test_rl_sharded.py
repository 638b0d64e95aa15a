"""`rl` with its learner sharded over 8 devices (mesh fsdp=4 x tensor=2), in one process and in two processes of 4
devices on localhost, against the one-device run of the same seed; and a two-process run killed and resumed.

Tolerance. The rollouts of a step are the same bits in every layout as long as the parameters the engine samples
with are: the engine's program, its seeds (infer/params.py sample_seed) and the prompts do not depend on the
learner's mesh, so the sampled tokens, rewards and advantages are compared exactly (a split engine, tensor=2,
changes the logits by float32 rounding, ~1e-6, which would turn a sampled token only where two Gumbel-perturbed
logits tie that closely: about 1e-6 per token, over this test's ~100 tokens). The learner's numbers differ only in
the order of float32 sums (a contraction split 4 or 2 ways and reduced across devices), which a sum of K terms
bounds by K * u * sum |terms|, u = 2^-24, through each of the ~5 matmuls of a layer and the head: with the tiny
model's largest contraction K = 512 (its vocabulary in the log-softmax) and 2 layers that is
RTOL = (5 * 2 + 1) * 512 * 2^-24 = 3.4e-4 relative. After the first update the parameters themselves differ by
that rounding, carried through Adam, so later steps are held to the same tolerance, and their sampled tokens are
compared exactly for the same reason as a split engine's. The mismatch metrics measure that rounding itself
(learner minus sampler log-probabilities, ~1e-6): they are held to the absolute error of a log-probability,
RTOL * 10 nats (the random model's tokens are near-uniform over its 320 ids, |log p| ~ 5.8).
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from hf_fixtures import import_random_model
from mathjax_train.rl.trainer import run_rl
from rl_helpers import comparable, rl_config, rl_overrides
from test_multihost import _free_port
from train_helpers import REPO

U = 2.0**-24
RTOL = (5 * 2 + 1) * 512 * U
SHARDED = ("mesh.data=1", "mesh.fsdp=4", "mesh.tensor=2")
# 4 prompts x 2 samples in 2 minibatches of 4 rows: the rows split over data x fsdp = 4
SHAPE = ("rl.prompts_per_step=4", "rl.group_size=2", "train.steps=3", "rl.eval_every_steps=2", "rl.format_reward=0.5")
EXACT = (  # the rollout: the same bits in every layout
    "step",
    "reward_mean",
    "pass_rate",
    "answer_rate",
    "truncated_rate",
    "trained_reward_mean",
    "response_length",
    "groups",
    "groups_sampled",
    "groups_dropped",
    "sampled_tokens",
    "sampled_tokens_total",
    "tool_calls",
    "trained_tokens",
    "nonfinite_updates",
    "lr",
)
ROUNDING = ("mismatch_max_abs", "mismatch_mean_abs", "mismatch_kl_k3")  # rounding itself: absolute tolerance
LOGP_ATOL = RTOL * 10
TIMEOUT_S = 420


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    _, path = import_random_model(tmp_path_factory.mktemp("rl_sharded"), seed=3)
    with open(path / "model_config.json") as f:
        mc = json.load(f)
    assert max(mc["hidden_size"], mc["intermediate_size"], mc["vocab_size"]) <= 512 and mc["num_layers"] <= 2
    assert mc["vocab_size"] == 320
    return path


@pytest.fixture(scope="module")
def one_device(ckpt, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("one")
    run_rl(rl_config(ckpt, tmp, "run", *SHAPE), log=lambda m: None)
    return tmp / "run"


def _agree(a: list[dict], b: list[dict]) -> None:
    assert [r["step"] for r in a] == [r["step"] for r in b] == [1, 2, 3]
    for ra, rb in zip(a, b):
        assert {k: ra[k] for k in EXACT} == {k: rb[k] for k in EXACT}, ra["step"]
        assert set(ra) == set(rb)
        for k in sorted(set(ra) - set(EXACT)):
            rtol, atol = (0, LOGP_ATOL) if k in ROUNDING else (RTOL, 0)
            np.testing.assert_allclose(rb[k], ra[k], rtol=rtol, atol=atol, err_msg=f"step {ra['step']} {k}")


def _timings(path):
    return [json.loads(x) for x in (path / "metrics.jsonl").read_text().splitlines()]


# engine_tensor=2 also splits the engine, and holds its rollouts to the same bits: the learner-only layout runs
# with the slow set
@pytest.mark.parametrize("engine_tensor", [pytest.param(1, marks=pytest.mark.slow), 2])
def test_sharded_learner_matches_one_device(ckpt, one_device, tmp_path, engine_tensor):
    out = tmp_path / "run"
    summary = run_rl(
        rl_config(ckpt, tmp_path, "run", *SHAPE, *SHARDED, f"rl.engine.tensor={engine_tensor}"), log=lambda m: None
    )
    assert summary["status"] == "finished"
    _agree(comparable(one_device / "metrics.jsonl"), comparable(out / "metrics.jsonl"))
    # the learner's arrays lie over 8 devices and the engine's on 1 or 2: every step hands them over on the devices,
    # while on one device the engine reads the learner's own arrays
    assert all(r["reshard_seconds"] > 0 for r in _timings(out))
    assert all(r["reshard_seconds"] == 0 for r in _timings(one_device))
    held_one = json.loads((one_device / "rl_summary.json").read_text())["heldout"]
    held = json.loads((out / "rl_summary.json").read_text())["heldout"]
    assert {k: v["accuracy"] for k, v in held.items()} == {k: v["accuracy"] for k, v in held_one.items()}


def _launch(args: list[str], out) -> list[subprocess.Popen]:
    """Processes 0 and 1 of `mathjax-train rl` with overrides `args` (everything else the defaults)."""
    (out.parent / "rl.yaml").write_text("rl: {}\n")
    port = _free_port()
    env = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        TF_CPP_MIN_LOG_LEVEL="3",
        XLA_FLAGS="--xla_force_host_platform_device_count=4",
    )
    return [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mathjax_train.cli",
                "rl",
                "--config",
                str(out.parent / "rl.yaml"),
                *args,
                f"distributed.coordinator_address=127.0.0.1:{port}",
                "distributed.num_processes=2",
                f"distributed.process_id={i}",
            ],
            cwd=REPO,
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=open(out.parent / f"{out.name}.stderr{i}", "w"),
        )
        for i in range(2)
    ]


def _wait(procs, out) -> None:
    try:
        for i, p in enumerate(procs):
            rc = p.wait(timeout=TIMEOUT_S)
            assert rc == 0, f"process {i} exited {rc}:\n{(out.parent / f'{out.name}.stderr{i}').read_text()[-3000:]}"
    finally:
        for p in procs:  # the other process would wait for its peer until the coordinator gives up
            if p.poll() is None:
                p.kill()
                p.wait()


def _checkpoints(out) -> list[int]:
    d = out / "checkpoints"
    return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.is_dir() else []


@pytest.mark.slow
def test_two_processes_match_one_and_resume_after_a_kill(ckpt, one_device, tmp_path):
    args = rl_overrides(ckpt, tmp_path, "whole") + list(SHAPE + SHARDED)
    whole = tmp_path / "whole"
    _wait(_launch(args, whole), whole)
    _agree(comparable(one_device / "metrics.jsonl"), comparable(whole / "metrics.jsonl"))
    assert (whole / "best" / "best.json").is_file() and (whole / "rl_summary.json").is_file()
    # held-out scored by the two hosts, each its share, joined into one report
    assert sorted(p.name for p in (whole / "heldout").iterdir() if "shard" not in p.name) == [
        "step_0",
        "step_2",
        "step_3",
    ]

    killed = tmp_path / "killed"
    args = [a.replace(str(whole), str(killed)) if a.startswith("output_dir=") else a for a in args]
    procs = _launch(args, killed)
    deadline = time.time() + TIMEOUT_S
    while not _checkpoints(killed) and time.time() < deadline:
        time.sleep(0.2)
    for p in procs:
        p.send_signal(signal.SIGKILL)
        p.wait()
    assert _checkpoints(killed), "no checkpoint was written before the deadline"
    assert not (killed / "rl_summary.json").exists()
    _wait(_launch(args, killed), killed)
    assert comparable(killed / "metrics.jsonl") == comparable(whole / "metrics.jsonl")
