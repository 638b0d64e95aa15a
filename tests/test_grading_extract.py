"""Extraction of final answers from completions and reference solutions."""

import pytest

from mathjax_train.grading import extract_answer

CASES = [
    ("nested-braces", "So $x = \\boxed{\\frac{1}{\\sqrt{2}}}$.", "\\frac{1}{\\sqrt{2}}"),
    ("deep-nesting", "\\boxed{\\left\\{ \\frac{a}{b^{2}} \\right\\}}", "\\left\\{ \\frac{a}{b^{2}} \\right\\}"),
    ("last-box-wins", "first \\boxed{1} then \\boxed{2}", "2"),
    ("fbox", "Hence \\fbox{42} is it.", "42"),
    ("boxed-space", "The answer is $\\boxed 5$.", "5"),
    ("boxed-space-trailing-dot", "so we get \\boxed 7.", "7"),
    ("answer-is", "Adding them up, the answer is 17.", "17"),
    ("answer-is-decimal", "The answer is 3.5.", "3.5"),
    ("answer-is-latex", "Therefore the answer is $\\frac{3}{4}$. Done.", "\\frac{3}{4}"),
    ("final-answer-is", "Final Answer: The final answer is $12$. I hope it is correct.", "12"),
    ("final-answer-colon", "work...\nFinal Answer: 3/4", "3/4"),
    ("gsm8k-hashes", "She has 5 + 3 = <<5+3=8>>8 apples.\n#### 8", "8"),
    ("gsm8k-hashes-thousands", "Total 1,200 dollars\n#### 1,200", "1,200"),
    ("bold", "So the result is:\n\nThe answer is **36**", "36"),
    ("bold-with-dollars", "Final answer: **$\\frac{1}{2}$**", "\\frac{1}{2}"),
    ("box-beats-phrase", "The answer is 3. Actually \\boxed{4}", "4"),
    ("last-marker-wins", "The answer is 3.\nWait, recheck.\nThe answer is 5.", "5"),
    ("unbalanced-box-skipped", "\\boxed{1} and \\boxed{2", "1"),
    ("json-mangled-frac", "thus \\boxed{\x0crac{1}{2}}", "\\frac{1}{2}"),
]


@pytest.mark.parametrize("text,expected", [pytest.param(t, e, id=i) for i, t, e in CASES])
def test_extract(text, expected):
    assert extract_answer(text) == expected


def test_nothing_found_returns_none():
    assert extract_answer("I am not sure about this one.") is None
    assert extract_answer("") is None
    assert extract_answer(None) is None
    assert extract_answer("\\boxed{}") is None


def test_last_number_fallback_is_opt_in():
    text = "She buys 3 packs of 12 eggs, so she has 36 eggs in total."
    assert extract_answer(text) is None
    assert extract_answer(text, fallback="last_number") == "36"
    assert extract_answer("It costs $1,250.50 in all", fallback="last_number") == "1,250.50"
    assert extract_answer("Down to -4 degrees", fallback="last_number") == "-4"
    assert extract_answer("no digits here", fallback="last_number") is None
    # a box or a phrase still wins over the fallback
    assert extract_answer("3 and 4 give \\boxed{7}, not 8", fallback="last_number") == "7"


def test_several_boxes_policy():
    text = "If $x>0$ then $x=\\boxed{3}$; otherwise $x=\\boxed{-3}$. Check: \\boxed{3}."
    assert extract_answer(text) == "3"
    assert extract_answer(text, boxed="last") == "3"
    assert extract_answer(text, boxed="all") == "3, -3"  # distinct, in order of appearance
    assert extract_answer("only \\boxed{(1,2)}", boxed="all") == "(1,2)"


def test_bad_policy_is_an_error():
    with pytest.raises(ValueError):
        extract_answer("\\boxed{1}", boxed="first")
    with pytest.raises(ValueError):
        extract_answer("1", fallback="guess")
