"""metrics.jsonl and TensorBoard events from a real run; divergence stops at the named step."""

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.util import tensor_util

from mathjax_train.train.trainer import TrainingDiverged, train
from mathjax_train.train.flops import PEAK_TFLOPS, matmul_params, peak_flops_per_device, train_flops_per_token
from mathjax_train.train.checkpointing import TrainCheckpointer
from train_helpers import read_metrics, tiny_config


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("metrics")
    cfg = tiny_config(out, "train.steps=12", "train.log_every_steps=3", "checkpoint.every_steps=6")
    summary = train(cfg, log=lambda s: None)
    return out, summary


def test_metrics_jsonl_fields(run):
    out, summary = run
    rows = read_metrics(out)
    assert summary["status"] == "finished" and [r["step"] for r in rows] == [3, 6, 9, 12]
    for r in rows:
        assert {"step", "loss", "accuracy", "grad_norm", "lr", "tokens_per_second", "mfu"} <= set(r)
        assert r["tokens_per_second"] > 0 and 0 < r["mfu"] < 1 and 0 <= r["accuracy"] <= 1


def test_tensorboard_reader_reads_loss(run):
    out, _ = run
    acc = EventAccumulator(str(out / "tensorboard"), size_guidance={"tensors": 0})
    acc.Reload()
    assert "train/loss" in acc.Tags()["tensors"]
    events = acc.Tensors("train/loss")  # TF2 summaries are scalar tensors with the scalars plugin
    assert acc.SummaryMetadata("train/loss").plugin_data.plugin_name == "scalars"
    rows = read_metrics(out)
    assert [e.step for e in events] == [r["step"] for r in rows]
    values = [tensor_util.make_ndarray(e.tensor_proto).item() for e in events]
    np.testing.assert_allclose(values, [r["loss"] for r in rows], rtol=1e-6)


def test_checkpoints_kept_and_step_dirs_are_model_checkpoints(run):
    out, _ = run
    from mathjax_train.model.checkpoint import load_model_config, load_params, resolve

    assert resolve(out).step == 12 and resolve(out / "checkpoints" / "6").step == 6
    cfg = load_model_config(out)
    p6, p12 = load_params(out / "checkpoints" / "6", cfg), load_params(out, cfg)
    assert not np.array_equal(np.asarray(p6["norm"]["scale"]), np.asarray(p12["norm"]["scale"]))


def test_divergence_stops_and_keeps_last_good_checkpoint(tmp_path):
    cfg = tiny_config(
        tmp_path,
        "train.steps=50",
        "checkpoint.every_steps=1",
        "optimizer.learning_rate=1e30",
        "optimizer.warmup_steps=0",
        "optimizer.grad_clip_norm=0",
        "optimizer.schedule=constant",
        "train.log_every_steps=1",
    )
    with pytest.raises(TrainingDiverged, match=r"step (\d+): loss=.* is not finite") as err:
        train(cfg, log=lambda s: None)
    bad = int(str(err.value).split()[1].rstrip(":"))
    ckpt = TrainCheckpointer(tmp_path, cfg.checkpoint)
    assert ckpt.latest_step() == bad - 1  # the non-finite step was never saved
    ckpt.close()
    assert f"step {bad - 1}" in str(err.value)


def test_flops_and_peaks():
    cfg = tiny_config("/tmp/unused").model
    e, m, v, L = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size, cfg.num_layers
    d = e // cfg.num_heads
    assert matmul_params(cfg) == L * (e * e + 2 * e * cfg.num_kv_heads * d + e * e + 3 * e * m) + e * v
    assert train_flops_per_token(cfg, 64) == 6 * matmul_params(cfg) + 12 * L * e * 64

    class Dev:
        platform, device_kind = "tpu", "TPU v5 lite"

    assert peak_flops_per_device(Dev()) == 197e12
    Dev.device_kind = "TPU v5p"
    assert peak_flops_per_device(Dev()) == 459e12
    Dev.device_kind = "NVIDIA H100 80GB HBM3"
    assert peak_flops_per_device(Dev()) == 989e12
    assert peak_flops_per_device(Dev(), configured_tflops=2.5) == 2.5e12
    Dev.device_kind = "Mystery chip"
    with pytest.raises(ValueError, match="peak_tflops_per_device"):
        peak_flops_per_device(Dev())
    assert {k for k, _ in PEAK_TFLOPS} >= {"TPU v4", "TPU v5 lite", "TPU v5p", "TPU v6 lite", "H100", "H200"}


def test_resume_drops_later_steps_and_a_torn_line(tmp_path):
    import io
    import json

    from mathjax_train.train.metrics import METRICS_FILE, MetricsWriter

    path = tmp_path / METRICS_FILE
    path.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n{"step": 3, "loss": 1.2}\n{"step": 4, "lo')
    writer = MetricsWriter(tmp_path, resume_step=2, stream=io.StringIO())
    writer.write({"step": 3, "loss": 1.25})
    assert [json.loads(x) for x in path.read_text().splitlines()] == [
        {"step": 1, "loss": 2.0},
        {"step": 2, "loss": 1.5},
        {"step": 3, "loss": 1.25},
    ]
    writer.close()
