"""Extraction of final answers from completions and reference solutions."""

import time

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
    ("over-escaped-box", "so \\\\boxed{\\\\frac{1}{2}}", "\\frac{1}{2}"),
    # a phrase followed by a sentence: the answer the sentence states
    ("phrase-sentence-copula", "Final Answer: The largest $n$ is 34.", "34"),
    ("phrase-sentence-one-number", "Final Answer: Jane started growing Sphere 3 hours ago.", "3"),
    ("phrase-sentence-two-numbers", "The answer is 3 apples and 4 pears.", "3 apples and 4 pears"),
    ("phrase-sentence-scale-word", "The answer is about 3 million dollars.", "about 3 million dollars"),
    # answer phrases in other languages
    ("french", "Donc 35 + 35 = 70.\nRéponse : $70$", "70"),
    ("french-est", "La réponse est 105.", "105"),
    ("chinese", "所以，每份应该是 2/5 吨。 答案：每份应该是 (\\frac{2}{5}) 吨。", "(\\frac{2}{5}) 吨"),
    ("german", "Die Antwort ist $12$.", "12"),
    # a later phrase that states a value overrules an intermediate box; one that states none does not
    (
        "phrase-after-box",
        "so \\boxed{255}. Then 10,200 + 255 = 10,455. Final Answer: The final answer is $10,455$.",
        "10,455",
    ),
    ("phrase-without-value-after-box", "so $a = \\boxed{-5}$. We check our answer: the answer is correct.", "-5"),
    # no box, no phrase: the text itself when it is only an answer, else the last math
    ("bare-answer", "28 percent", "28 percent"),
    ("last-math", "Therefore $x \\geq 5$ is the solution.", "x \\geq 5"),
    (
        "last-display-math",
        "The identity matrix is \\[ \\begin{pmatrix}1 & 0 \\\\ 0 & 1\\end{pmatrix} \\].",
        "\\begin{pmatrix}1 & 0 \\\\ 0 & 1\\end{pmatrix}",
    ),
    ("math-joined-by-and", "The roots are $1$, $2$ and $3$", "1, 2, 3"),
    ("math-not-joined-by-comma", "Since $x > 0$, $x = 3$", "x = 3"),
    ("inline-math-is-one-line", "Answer $ \n 9 \n $", None),
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
    assert extract_answer(text) == "3"  # a sentence ends the group
    assert extract_answer(text, boxed="last") == "3"
    assert extract_answer(text, boxed="all") == "3, -3"  # distinct, in order of appearance
    assert extract_answer("only \\boxed{(1,2)}", boxed="all") == "(1,2)"
    joined = "so the integers are \\(\\boxed{-2}\\) and \\(\\boxed{1}\\)."
    assert extract_answer(joined) == extract_answer(joined, boxed="group") == "-2, 1"
    assert extract_answer(joined, boxed="last") == "1"


@pytest.mark.parametrize(
    "text,expected",
    [
        ("\\boxed{1} and \\boxed{2} and \\boxed{3}", "1, 2, 3"),
        ("\\boxed{1},\\boxed{2},\\boxed{3}", "1, 2, 3"),
        ("$\\boxed{1}\\boxed{2}$", "1, 2"),
        ("$$\\boxed{(2, 2)} \\quad \\text{and} \\quad \\boxed{(6, 2)}$$", "(2, 2), (6, 2)"),
        ("\\($y_1 = \\boxed{x+1} \\) and \\( y_2 = \\boxed{x-1} \\)", "x+1, x-1"),
        ("\\boxed{1} papers and \\boxed{2} bins", "1, 2"),
        ("\\boxed{1} no no no no no \\boxed{2}", "2"),  # too many words between: not one answer
        ("\\boxed{1} and and and or thus but \\boxed{2} and \\boxed{3}", "2, 3"),  # "thus" starts a new statement
        ("first \\boxed{1} then \\boxed{2}", "2"),
        ("\\boxed{3}. \\boxed{4}", "4"),
    ],
)
def test_group_policy_joins_boxes_that_only_connectives_separate(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "\\[" * 30000,
        "\\(" * 30000,
        "$$" * 30000 + "$",
        "$ a\n" * 15000,
        "\\boxed{" * 9000,
        "{" * 60000,
        " " * 60000 + "x",
        "The answer is " + " " * 60000 + "5",
        "the answer is " * 4000,
        "$x$ and " * 7000,
        "\\boxed{1} and " * 4000,
        "\\" * 60000,
        "答案是" * 20000,
    ],
    ids=lambda t: repr(t[:12]),
)
def test_hostile_long_texts_extract_in_linear_time(text):
    """60k characters of unclosed delimiters, braces, spaces or phrases: every scan is linear."""
    t0 = time.monotonic()
    for policy in ("group", "last", "all"):
        out = extract_answer(text, boxed=policy, fallback="last_number")
        assert out is None or isinstance(out, str)
    assert time.monotonic() - t0 < 5.0


def test_bad_policy_is_an_error():
    with pytest.raises(ValueError):
        extract_answer("\\boxed{1}", boxed="first")
    with pytest.raises(ValueError):
        extract_answer("1", fallback="guess")
