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
            "rejected": {"wrong_step": 1},
            "sampler_rejected": {"wrong_answer": 30, "bad_arithmetic": 2},
            "kept_for_retraining": 3,
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
    assert "4 had the right final answer and were distinct (2 more had it, but with false arithmetic" in text
    assert "1 of those reached it through a wrong step" in text
    assert "Kept for retraining: 3 paths on 3 questions" in text
    for other in {"above zero", "below zero", "includes zero"} - {side}:
        assert other not in text, other


def test_per_family_counts_right_answers_reached_by_a_wrong_step(tmp_path):
    """Held-out accuracy by family; the rft stage's right-answer paths, those whose steps follow none of their
    problem's worked methods, and the selected ones."""
    import json

    from mathjax_train.data import procedural as P
    from mathjax_train.data.procedural.generator import worked_methods
    from mathjax_train.demo import diagnosis

    def write(name, rows):
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
        return str(tmp_path / name)

    src = "procedural/math_style/"
    heldout = write(
        "heldout.jsonl", [{"id": f"h{i}", "source": src + ("gcd_lcm" if i < 3 else "sharing")} for i in range(5)]
    )
    share = P.generate(0, templates=["gsm_style/sharing"], levels=[1])
    gcd = P.generate(1, templates=["math_style/gcd_lcm"], levels=[1])  # ids differ as in one stream

    def rows(ex, paths):
        q = {k: ex[k] for k in ("question", "level")} | {"question_id": ex["id"]}
        return [dict(q, source=ex["source"], origin="original", solution=ex["solution"])] + [
            dict(q, source="rft/" + ex["source"], origin="sampled", solution=p) for p in paths
        ]

    wrong = "She buys 2 * 12 = 26 marbles.\nEach gets 26 / 3 = 13.\n#### " + share["answer"]
    sampled = write("samples.jsonl", rows(share, [worked_methods(share)[0], wrong]) + rows(gcd, worked_methods(gcd)))
    selected = write("selected.jsonl", rows(share, [worked_methods(share)[0]]) + rows(gcd, worked_methods(gcd)[:1]))
    greedy = {
        "sft": {"h0": True, "h1": False, "h2": False, "h3": True, "h4": True},
        "retrain": {"h0": True, "h3": False},
    }
    fams = diagnosis.by_family(heldout, greedy, sampled, selected)
    n_gcd = len(worked_methods(gcd))
    assert fams["gcd_lcm"] == {
        "heldout": 3,
        "accuracy": {"sft": 0.3333, "retrain": 1.0},
        "right_answer": n_gcd,
        "right_answer_wrong_step": 0,
        "kept": 1,
    }
    assert fams["sharing"] == {
        "heldout": 2,
        "accuracy": {"sft": 1.0, "retrain": 0.0},
        "right_answer": 2,
        "right_answer_wrong_step": 1,
        "kept": 1,
    }
    text = "\n".join(diagnosis.markdown(fams, {"sft": "SFT", "retrain": "SFT + RFT"}))
    assert "| sharing | 2 | 100.0% | 0.0% | 2 | 1 | 1 |" in text
    assert f"1 of the {2 + n_gcd} distinct sampled paths" in text and "kept 2 paths" in text
