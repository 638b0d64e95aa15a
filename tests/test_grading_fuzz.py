"""Fuzz: random text and LaTeX-ish junk never makes the grader raise or overrun its time budget;
random renderings of numbers, units, set algebra and decimal approximations grade as they should."""

import time
from fractions import Fraction

import mpmath
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mathjax_train.grading import extract_answer, is_equivalent
from mathjax_train.grading.numbers import REL_TOL

TOKENS = [
    "\\frac",
    "\\dfrac",
    "\\sqrt",
    "\\boxed",
    "\\fbox",
    "\\text",
    "\\left(",
    "\\right)",
    "\\pi",
    "\\infty",
    "\\cup",
    "\\pm",
    "\\cdot",
    "\\times",
    "\\begin{pmatrix}",
    "\\end{pmatrix}",
    "\\\\",
    "&",
    "^",
    "_",
    "{",
    "}",
    "(",
    ")",
    "[",
    "]",
    "\\{",
    "\\}",
    ",",
    "=",
    "<",
    "%",
    "\\%",
    "$",
    "x",
    "y",
    "i",
    "e",
    "10",
    "0",
    "9",
    "1,000",
    ".5",
    "!",
    "|",
    "/",
    "-",
    "+",
    " ",
    "####",
    "The answer is ",
    "**",
    "\\circ",
    "_5",
    ":",
    "PM",
    "\\sin",
    "\\log_2",
    "\\binom",
    "\n",
    "\t",
]

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
@given(a=st.integers(-(10**9), 10**9), b=st.integers(-(10**9), 10**9), k=st.integers(1, 6))
def test_decimals_follow_the_relative_tolerance_rule(a, b, k):
    # a / 10^k and b / 10^k written with k decimals: an approximation, so the REL_TOL rule applies
    da, db = Fraction(a, 10**k), Fraction(b, 10**k)
    close = abs(da - db) <= max(abs(da), abs(db)) * REL_TOL
    fmt = lambda n: f"{'-' if n < 0 else ''}{abs(n) // 10**k}.{abs(n) % 10**k:0{k}d}"
    assert is_equivalent(fmt(a), fmt(b)) is close


UNITS = ["legs", "apples", "cm", "dollars", "square feet", "per hour", "students", "km"]
UNIT_FORMS = ["{n} {u}", "{n}\\text{ {u}}", "{n}\\textnormal{ {u}}", "{n} \\mbox{ {u}}", "\\text{{n} {u}}"]


@settings(max_examples=150, deadline=None)
@given(
    n=st.integers(0, 10**6),
    other=st.integers(0, 10**6),
    same=st.booleans(),
    unit=st.sampled_from(UNITS),
    form=st.sampled_from(UNIT_FORMS),
    commas=st.booleans(),
    boxed=st.booleans(),
)
def test_numbers_with_units_grade_by_the_number(n, other, same, unit, form, commas, boxed):
    m = n if same else other
    answer = form.replace("{n}", f"{m:,}" if commas else str(m)).replace("{u}", unit)
    text = f"So we get $\\boxed{{{answer}}}$." if boxed else f"The answer is {answer}."
    assert is_equivalent(str(n), extract_answer(text)) is (m == n)


def _set_tex(items: list[int]) -> str:
    return "\\{" + ", ".join(map(str, items)) + "\\}" if items else "\\emptyset"


elements = st.lists(st.integers(-20, 20), max_size=6)  # repeats allowed: a set drops them


@settings(max_examples=150, deadline=None)
@given(
    a=elements,
    b=elements,
    other=elements,
    op=st.sampled_from(["\\cup", "\\cap", "\\setminus"]),
    rng=st.randoms(use_true_random=False),
)
def test_set_algebra_grades_as_the_resulting_set(a, b, other, op, rng):
    result = {"\\cup": set(a) | set(b), "\\cap": set(a) & set(b), "\\setminus": set(a) - set(b)}[op]
    expression = f"{_set_tex(a)} {op} {_set_tex(b)}"
    shuffled = rng.sample(sorted(result), len(result))
    assert is_equivalent(_set_tex(shuffled), expression) is True
    assert is_equivalent(expression, _set_tex(shuffled)) is True
    assert is_equivalent(_set_tex(other), expression) is (set(other) == result)


with mpmath.workdps(60):
    PI = Fraction(str(mpmath.pi))


@settings(max_examples=100, deadline=None)
@given(k=st.integers(1, 200), d=st.integers(1, 12), places=st.integers(1, 7), offset=st.integers(-3, 3))
def test_decimal_approximations_of_pi_follow_the_relative_tolerance_rule(k, d, places, offset):
    # k*pi/d written exactly, and rounded to `places` decimals then moved `offset` units in the last place
    exact = Fraction(k, d) * PI
    decimal = Fraction(round(exact * 10**places) + offset, 10**places)
    close = abs(decimal - exact) <= max(abs(decimal), abs(exact)) * REL_TOL
    exact_tex = f"{k}\\pi" if d == 1 else f"\\frac{{{k}\\pi}}{{{d}}}"
    decimal_tex = f"{float(decimal):.{places}f}"
    assert is_equivalent(exact_tex, decimal_tex) is close
    assert is_equivalent(decimal_tex, exact_tex) is close
