"""Fuzz: random text and LaTeX-ish junk never makes the grader raise or overrun its time budget."""
import time
from fractions import Fraction

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mathjax_train.grading import extract_answer, is_equivalent

TOKENS = ["\\frac", "\\dfrac", "\\sqrt", "\\boxed", "\\fbox", "\\text", "\\left(", "\\right)", "\\pi",
          "\\infty", "\\cup", "\\pm", "\\cdot", "\\times", "\\begin{pmatrix}", "\\end{pmatrix}", "\\\\",
          "&", "^", "_", "{", "}", "(", ")", "[", "]", "\\{", "\\}", ",", "=", "<", "%", "\\%", "$", "x",
          "y", "i", "e", "10", "0", "9", "1,000", ".5", "!", "|", "/", "-", "+", " ", "####",
          "The answer is ", "**", "\\circ", "_5", ":", "PM", "\\sin", "\\log_2", "\\binom", "\n", "\t"]

junk = st.one_of(
    st.lists(st.sampled_from(TOKENS), max_size=30).map("".join),
    st.text(max_size=80),
)

BUDGET_S = 1.0
# the budget plus a margin for the sympy worker pool's first start (a fresh interpreter)
WALL_LIMIT_S = BUDGET_S + 20.0


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(gold=junk, pred=junk)
def test_is_equivalent_never_raises_and_returns_in_time(gold, pred):
    t0 = time.monotonic()
    verdict = is_equivalent(gold, pred, timeout_s=BUDGET_S)
    assert isinstance(verdict, bool)
    assert time.monotonic() - t0 < WALL_LIMIT_S
    assert is_equivalent(gold, gold, timeout_s=BUDGET_S) is bool(gold.strip())


@settings(max_examples=300, deadline=1000)
@given(text=junk)
def test_extract_answer_never_raises(text):
    out = extract_answer(text)
    assert out is None or isinstance(out, str)
    out_all = extract_answer(text, boxed="all", fallback="last_number")
    assert out_all is None or isinstance(out_all, str)


@settings(max_examples=100, deadline=None)
@given(a=st.fractions(max_denominator=10**6), b=st.fractions(max_denominator=10**6))
def test_exact_fractions_compare_exactly(a, b):
    assert is_equivalent(f"{a.numerator}/{a.denominator}", f"{b.numerator}/{b.denominator}") is (a == b)


@settings(max_examples=100, deadline=None)
@given(a=st.integers(-10**9, 10**9), b=st.integers(-10**9, 10**9), k=st.integers(1, 6))
def test_decimals_follow_the_relative_tolerance_rule(a, b, k):
    # a / 10^k and b / 10^k written with k decimals: an approximation, so the 1e-6 rule applies
    da, db = Fraction(a, 10**k), Fraction(b, 10**k)
    close = abs(da - db) <= max(abs(da), abs(db)) / 10**6
    fmt = lambda n: f"{'-' if n < 0 else ''}{abs(n) // 10**k}.{abs(n) % 10**k:0{k}d}"
    assert is_equivalent(fmt(a), fmt(b)) is close
