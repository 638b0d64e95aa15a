"""`demo --study` (demo/study.py, configs/pipeline_study.yaml) and the seed interval it reports."""

import json

import pytest

from mathjax_train.demo.study import verdict
from mathjax_train.eval.metrics import seed_interval


def test_seed_interval_is_the_t_interval_of_the_runs():
    got = seed_interval([0.01, 0.03, 0.02])  # mean 0.02, sd 0.01, t(0.975, 2) = 4.303
    assert got == {"runs": 3, "mean": 0.02, "interval": [-0.0048, 0.0448]}
    assert seed_interval([0.05, 0.05])["interval"] == [0.05, 0.05]
    with pytest.raises(ValueError, match="2 to 11 runs"):
        seed_interval([0.1])


def test_verdict_reads_the_interval():
    assert (verdict([0.01, 0.03]), verdict([-0.03, -0.01]), verdict([-0.01, 0.02])) == (
        "shown",
        "reversed",
        "not shown",
    )


TRAIN_STAGES = [f"{arm}_s{s}" for s in range(3) for arm in ("sft", "rft16", "rft4")]
TINY_STUDY = (
    "stages.heldout.count=8",
    "stages.seed.count=32",
    *(f"stages.{t}.train.epochs=1" for t in TRAIN_STAGES),
    *(f"stages.sample{k}_s{s}.max_new_tokens=24" for k in (16, 4) for s in range(3)),
    *(f"stages.evaluate_s{s}.eval.generate.max_new_tokens=24" for s in range(3)),
)


@pytest.mark.slow
def test_study_pipeline_runs_end_to_end(tmp_path):
    """The study's code path, shortened: every stage runs, each seed pairs its three models, the report has a
    line per claim."""
    from mathjax_train.demo import run_study

    result = run_study(str(tmp_path), TINY_STUDY)
    assert result["seeds"] == [0, 1, 2] and result["heldout_problems"] == 8
    for row in result["per_seed"]:
        assert row["paths"]["k16"]["samples"] == 32 * 16 and row["paths"]["k4"]["samples"] == 32 * 4
        d = row["rft16_minus_sft"]
        assert d["gained"] - d["lost"] == round(d["difference"] * 8)
    o = result["over_seeds"]["rft16_minus_sft"]
    mean = sum(r["rft16_minus_sft"]["difference"] for r in result["per_seed"]) / 3
    assert o["seeds"]["mean"] == pytest.approx(mean, abs=1e-4) and o["pooled_paired"]["problems"] == 24
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    epochs_1 = {t: manifest["stages"][t]["metrics"]["step"] for t in TRAIN_STAGES}
    assert all(epochs_1[f"sft_s{s}"] == 2 for s in range(3))  # 32 rows, batch 16, one epoch
    report = (tmp_path / "study_report.md").read_text()
    assert "## The papers' claims in this miniature" in report and "RFT beats SFT at convergence" in report
    assert json.loads((tmp_path / "study_summary.json").read_text())["seeds"] == [0, 1, 2]
