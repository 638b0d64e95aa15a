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


def test_per_family_counts_kept_paths_that_reach_the_answer_by_a_wrong_step(tmp_path):
    """Held-out accuracy by family, and kept paths whose steps hold a number the worked solution lacks."""
    import json

    from mathjax_train.demo import diagnosis

    def write(name, rows):
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
        return str(tmp_path / name)

    src = "procedural/math_style/"
    heldout = write(
        "heldout.jsonl", [{"id": f"h{i}", "source": src + ("gcd" if i < 3 else "sharing")} for i in range(5)]
    )
    questions = write(
        "questions.jsonl",
        [
            {
                "id": "q0",
                "source": src + "sharing",
                "solution": "He buys 5 * 12 = 60 marbles.\nEach gets 60 / 5 = 12.\n#### 12",
            },
            {"id": "q1", "source": src + "gcd", "solution": "Factor: 12 = 2^2 * 3.\nThe answer is $\\boxed{4}$."},
        ],
    )
    selected = write(
        "selected.jsonl",
        [
            {
                "question_id": "q0",
                "origin": "sampled",
                "solution": "She buys 5 * 12 = 60 marbles.\nEach gets 60 / 5 = 12.\n#### 12",
            },
            {
                "question_id": "q0",
                "origin": "sampled",
                "solution": "She buys 2 * 12 = 26 marbles.\nEach gets 26 / 3 = 13.\n#### 12",
            },
            {"question_id": "q1", "origin": "sampled", "solution": "Factor: 12 = 2^2 * 3.\n#### 4"},
            {"question_id": "q1", "origin": "original", "solution": "Factor: 99.\n#### 4"},  # not a sampled path
        ],
    )
    greedy = {
        "sft": {"h0": True, "h1": False, "h2": False, "h3": True, "h4": True},
        "retrain": {"h0": True, "h3": False},
    }
    fams = diagnosis.by_family(heldout, greedy, questions, selected)
    assert fams["gcd"] == {
        "heldout": 3,
        "accuracy": {"sft": 0.3333, "retrain": 1.0},
        "kept": 1,
        "kept_with_a_wrong_step": 0,
    }
    assert fams["sharing"] == {
        "heldout": 2,
        "accuracy": {"sft": 1.0, "retrain": 0.0},
        "kept": 2,
        "kept_with_a_wrong_step": 1,
    }
    assert (
        diagnosis.off_solution_numbers("a 7 b\n#### 7", "7") == set()
        and diagnosis.off_solution_numbers("#### 9", "") == set()
    )
    text = "\n".join(diagnosis.markdown(fams, {"sft": "SFT", "retrain": "SFT + RFT"}))
    assert "| sharing | 2 | 100.0% | 0.0% | 2 | 1 |" in text and "1 of the 3 kept paths (33%)" in text
