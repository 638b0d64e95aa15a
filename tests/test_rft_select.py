"""RFT path selection on hand-written completions: verification, dedupe keys, the edit-distance rule."""

from collections import Counter

import pytest

from mathjax_train.grading.calculator import (
    CalculatorError,
    check_annotation,
    evaluate,
    first_bad_annotation,
    first_bad_written_equation,
    written_equations,
)
from mathjax_train.synth.rft import normalize_text, path_key, select, select_paths

ORIGINAL = (
    "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
    "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72"
)
WRONG_ANSWER = "Natalia sold 48*2 = <<48*2=96>>96 clips in May.\nIn total 48+96 = <<48+96=144>>144.\n#### 144"
BAD_ANNOTATION = "In May she sold 48/2 = <<48/2=25>>25 clips.\nTogether 48+24 = <<48+24=72>>72.\n#### 72"
NO_ANSWER = "She sold some clips in April and some in May."
# same equations as ORIGINAL, other words and spacing
SAME_EQS_REWORDED = (
    "In May, half of 48 is 48 / 2 = <<48 / 2 = 24>>24.\nBoth months: 48 + 24 = << 48+24 =72>>72.\n#### 72"
)
HALF = "Half of 48 is 48*0.5 = <<48*0.5=24>>24.\nAdding April: 24+48 = <<24+48=72>>72.\n#### 72"
HALF_SPACED = "Half of 48 is 48 * 0.5 = <<48 * 0.5=24>>24.\nAdding April: 24 + 48 = <<24 + 48=72>>72.\n#### 72"
ONE_STEP = "April plus May: 48 + 48/2 = <<48+48/2=72>>72 clips.\n#### 72"
THREE_SPLIT = "May: <<48/2=24>>24. Total: <<48+24=72>>72. Check: <<72-24=48>>48.\n#### 72"


def test_select_paths_keeps_verified_distinct_paths_in_order():
    completions = [WRONG_ANSWER, HALF, BAD_ANNOTATION, HALF_SPACED, NO_ANSWER, ONE_STEP, "", THREE_SPLIT, HALF]
    assert select_paths("72", completions) == [HALF, ONE_STEP, THREE_SPLIT]
    sel = select("72", completions)
    assert sel.kept_indices == [1, 5, 7]
    assert sel.rejected == Counter(wrong_answer=1, bad_annotation=1, no_answer=1, empty=1, duplicate=2)


def test_already_kept_original_makes_same_equations_duplicates():
    sel = select("72", [SAME_EQS_REWORDED, ORIGINAL, HALF], already_kept=[ORIGINAL])
    assert sel.kept == [HALF]
    assert sel.rejected == Counter(duplicate=2)
    # without the original, the reworded path is the first of its group and is kept
    assert select_paths("72", [SAME_EQS_REWORDED, ORIGINAL, HALF]) == [SAME_EQS_REWORDED, HALF]


def test_among_duplicates_the_one_farthest_from_kept_paths_wins():
    near = (
        "Natalia sold 48*0.5 = <<48*0.5=24>>24 clips in May.\n"
        "Natalia sold 24+48 = <<24+48=72>>72 clips altogether in April and May.\n#### 72"
    )
    far = "Half of forty-eight: <<48*0.5=24>>24; with April's: <<24+48=72>>72.\n#### 72"
    assert path_key(near) == path_key(far) == path_key(HALF)
    # `near` comes first but reads almost like the original: `far` is kept instead
    sel = select("72", [near, far], already_kept=[ORIGINAL])
    assert sel.kept == [far] and sel.kept_indices == [1] and sel.rejected == Counter(duplicate=1)
    # with nothing kept yet, the first of the group is taken
    assert select_paths("72", [near, far]) == [near]


def test_prose_arithmetic_is_checked_and_dedupes_like_annotations():
    """A model trained without calculator markup writes `5 * 24 = 120`: checked as an annotation is, and the
    same equations as the annotated reference make it a duplicate of it."""
    reference = "She buys 5 * 24 = <<5*24=120>>120 stickers.\nEach child gets 120 / 6 = <<120/6=20>>20.\n#### 20"
    same = "He buys 5 * 24 = 120 stickers.\nEach child gets 120 / 6 = 20 stickers.\n#### 20"
    other = "Each child gets 24 / 6 = 4 stickers from each sheet.\nFrom 5 sheets that is 5 * 4 = 20.\n#### 20"
    wrong = "She buys 2 * 12 = 26 stickers.\nEach child gets 26 / 3 = 20.\n#### 20"
    sel = select("20", [same, other, wrong], already_kept=[reference])
    assert sel.kept == [other] and +sel.rejected == Counter(duplicate=1, bad_arithmetic=1)
    assert written_equations(same) == ["5*24=120", "120/6=20"] and path_key(same) == path_key(reference)
    # terms of longer expressions and the tails of numbers are not equations of their own
    assert written_equations("So 2x + 3 - 1 = 5, y = 3 + 4 = 7, and 1,200 + 300 = 1,500.") == ["1,200+300=1,500"]
    assert first_bad_written_equation("10 / 3 = 3.33 dollars") is None  # rounded, as annotations may be


def test_math_style_paths_dedupe_on_normalized_text():
    a = "We have $x^2 = 4$, so $x = \\dfrac{4}{2}$.\nThe answer is $\\boxed{2}$."
    a_spaced = "We  have $x^2=4$,\nso $x = \\frac{4}{2}$.  The answer is \\boxed{2}."
    b = "Taking square roots, $x = 2$. The answer is $\\boxed{2}$."
    wrong = "So $x = 3$. The answer is $\\boxed{3}$."
    assert normalize_text(a) == normalize_text(a_spaced)
    assert select_paths("2", [a, wrong, a_spaced, b]) == [a, b]
    # the final answer's form is not what a path computes: a reference in boxed form and a sampled path in
    # GSM8K form with the same steps are one path
    assert select("2", ["We have $x^2 = 4$, so $x = \\frac{4}{2}$.\n#### 2"], already_kept=[a]).kept == []


def test_tool_paths_dedupe_on_code_blocks():
    a = "Compute:\n```python\nprint(48 + 48 // 2)\n```\n```output\n72\n```\nSo \\boxed{72}."
    a_worded = "Let me use Python.\n```python\nprint(48+48//2)\n```\n```output\n72\n```\nThe answer is \\boxed{72}."
    b = "```python\nmay = 48 / 2\nprint(48 + may)\n```\n```output\n72.0\n```\n\\boxed{72}"
    assert select_paths("72", [a, a_worded, b]) == [a, b]


@pytest.mark.parametrize(
    "body",
    [
        "48/2=24",
        "48 / 2 = 24",
        "10/3=3.33",
        "10/3=3.333",
        "2/3=0.66",
        "2/3=0.67",
        "$1,200*2=2,400",
        "560//10=56",
        "17%5=2",
        "-3+1=-2",
        "2**10=1024",
        "1/8=.125",
    ],
)
def test_good_annotations(body):
    check_annotation(body)


@pytest.mark.parametrize(
    "body, match",
    [
        ("48/2=25", "not 25"),
        ("10/3=3", "not 3"),
        ("10/3=3.3", None),
        ("5", "exactly one"),
        ("1=2=3", "exactly one"),
        ("x*2=4", "Name"),
        ("__import__('os')=0", "Call"),
        ("9**9**9=1", "exponent"),
        ("10**40*10**40=1", "too large"),
        ("1/0=1", "division by zero"),
        ("1e999=1", "out of range"),
        ("2*3=six", "not a number"),
        ("(" * 300 + "1=1", "longer"),
    ],
)
def test_bad_annotations(body, match):
    if match is None:  # 10/3 = 3.333..., written 3.3: within 0.1, accepted
        check_annotation(body)
        return
    with pytest.raises(CalculatorError, match=match):
        check_annotation(body)


@pytest.mark.timeout(30)  # evaluated naively, 9**9**9**9 would never finish: a hang fails the test
def test_hostile_annotations_are_refused_and_reported():
    hostile = "<<9**9**9**9=1>> <<(10**40)**100=1>> <<" + "+".join(["1"] * 90) + "=90>>"
    reason = first_bad_annotation(hostile)
    assert "exponent" in reason
    assert first_bad_annotation("no annotations at all") is None
    assert evaluate("(3+4)*2**3") == 56
