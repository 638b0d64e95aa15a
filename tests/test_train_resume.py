"""Resume is exact, SIGTERM leaves a restorable checkpoint, kill -9 mid-save keeps the previous one.

Each run is the real `mathjax-train train` command in its own process.
"""

import signal
import subprocess
import time

import orbax.checkpoint as ocp
import pytest

from mathjax_train.config import load_config
from mathjax_train.train.checkpointing import TrainCheckpointer
from train_helpers import SMOKE, cli_env, read_metrics, run_train, train_cmd, REPO

pytestmark = pytest.mark.slow
# 3 warmup steps: the run resumes (after step 6) inside the cosine decay
COMMON = [
    "train.steps=8",
    "optimizer.warmup_steps=3",
    "train.log_every_steps=1",
    "checkpoint.every_steps=4",
    "model.dtype=float32",
]


def test_resume_is_bitwise_exact(tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    run_train(SMOKE, f"output_dir={straight}", *COMMON)
    first = run_train(SMOKE, f"output_dir={split}", *COMMON, "--max-steps-this-run", "6")
    assert '"status": "stopped"' in first.stdout
    second = run_train(SMOKE, f"output_dir={split}", *COMMON)  # the same command again
    assert '"resumed_from": 6' in second.stdout
    a, b = read_metrics(straight), read_metrics(split)
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(1, 9))
    for x, y in zip(a, b):
        for key in ("loss", "accuracy", "grad_norm", "lr", "target_tokens"):
            assert x[key] == y[key], (x["step"], key)  # bitwise: same floats
    assert a[-1]["loss"] < a[0]["loss"]


def _wait_for(predicate, proc, timeout=120.0):
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return True
        if proc.poll() is not None:
            raise AssertionError(f"train exited early ({proc.returncode}): {proc.stderr.read()[-2000:]}")
        time.sleep(0.002)
    return False


def _latest_restorable(out_dir):
    ckpt = TrainCheckpointer(out_dir, load_config(str(SMOKE)).checkpoint)
    step = ckpt.latest_step()
    meta = ckpt.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    ckpt.close()
    return step, meta


def test_sigterm_saves_and_resumes(tmp_path):
    out = tmp_path / "run"
    args = [f"output_dir={out}", "train.steps=100000", "train.log_every_steps=1", "checkpoint.every_steps=100000"]
    proc = subprocess.Popen(
        train_cmd(SMOKE, *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(), cwd=REPO
    )
    metrics = out / "metrics.jsonl"
    assert _wait_for(lambda: metrics.exists() and len(metrics.read_text().splitlines()) >= 3, proc)
    proc.send_signal(signal.SIGTERM)
    stdout, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143 and '"status": "preempted"' in stdout
    step, meta = _latest_restorable(out)
    assert step >= 3 and meta["step"] == step and meta["data_state"]["index"] >= step
    again = run_train(SMOKE, *args[:1], f"train.steps={step + 2}", "train.log_every_steps=1")
    assert f'"resumed_from": {step}' in again.stdout and '"status": "finished"' in again.stdout


def test_kill_9_during_async_save_keeps_previous_checkpoint(tmp_path):
    out = tmp_path / "run"
    args = [
        f"output_dir={out}",
        "train.steps=100000",
        "checkpoint.every_steps=1",
        "checkpoint.keep=2",
        "model.num_layers=6",
        "model.hidden_size=128",
        "model.intermediate_size=512",
    ]
    ckpts = out / "checkpoints"
    for attempt in range(5):
        proc = subprocess.Popen(
            train_cmd(SMOKE, *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(), cwd=REPO
        )

        def saving_after_first():
            if not ckpts.exists():
                return False
            names = [p.name for p in ckpts.iterdir()]
            done = [n for n in names if n.isdigit()]
            return bool(done) and any("tmp" in n for n in names)

        caught = _wait_for(saving_after_first, proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close(), proc.stderr.close()
        if caught and any("tmp" in p.name for p in ckpts.iterdir()):
            break  # killed while a save was in flight
    else:
        pytest.fail("never caught an async save in flight")
    leftovers = [p.name for p in ckpts.iterdir() if "tmp" in p.name]
    assert leftovers, "the kill should have interrupted a save"
    step, meta = _latest_restorable(out)
    assert meta["step"] == step and str(step) not in leftovers
    again = run_train(SMOKE, *args[:1], f"train.steps={step + 1}", "checkpoint.every_steps=1", *args[4:])
    assert f'"resumed_from": {step}' in again.stdout
    assert not [p for p in ckpts.iterdir() if "tmp" in p.name]  # restart cleaned the partial save
