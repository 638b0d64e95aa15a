"""The demo report's verdicts follow the paired intervals: above zero, below zero, or including it."""

import pytest

from mathjax_train.demo.report import markdown


def _summary(rft_minus_sft: list[float], rft_minus_control: list[float]) -> dict:
    pair = lambda iv: {"problems": 100, "difference": sum(iv) / 2, "interval": iv, "gained": 9, "lost": 5}  # noqa: E731
    return {
        "heldout_problems": 100,
        "accuracy_before": 0.0,
        "accuracy_sft": 0.1,
        "accuracy_rft": 0.12,
        "accuracy_continued_sft": 0.13,
        "intervals": {k: [0.05, 0.2] for k in ("before", "sft", "rft", "continued_sft")},
        "rft_minus_sft": pair(rft_minus_sft),
        "rft_minus_continued_sft": pair(rft_minus_control),
        "scaling_fit": {
            "sizes": [10.0, 20.0],
            "accuracies": [0.05, 0.1],
            "slope": 0.07,
            "r2": 1.0,
            "gain_per_doubling": 0.05,
        },
        "rft": {
            "samples": 40,
            "questions": 10,
            "verified_distinct_kept": 4,
            "questions_with_a_kept_path": 3,
            "paths_per_question_with_one": 1.33,
        },
        "pass_at_k": {"1": 0.1, "2": 0.2},
        "maj_at_k": {"1": 0.1, "2": 0.1},
        "hf_reload": {"hf_dir": "export/hf", "max_abs_logit_diff": 1e-6, "greedy_identical": "4/4"},
        "stage_seconds": {"sft": 1.0},
        "seconds": 1.0,
    }


LINKS = {"stages": "a.png", "pass_at_k": "b.png", "scaling": "c.png"}


@pytest.mark.parametrize(
    ("interval", "side", "rft_text", "control_text"),
    [
        ([0.01, 0.04], "above zero", "The interval is above zero", "so the kept paths, not only the extra steps"),
        ([-0.05, -0.006], "below zero", "The interval is below zero: RFT lost accuracy", "an interval below zero"),
        ([-0.01, 0.03], "includes zero", "The interval includes zero", "an interval that includes zero"),
    ],
)
def test_verdicts_follow_the_interval(interval, side, rft_text, control_text):
    text = markdown(_summary(interval, interval), {"pipeline": "p.yaml"}, LINKS)
    assert rft_text in text and control_text in text
    for other in {"above zero", "below zero", "includes zero"} - {side}:
        assert other not in text, other
