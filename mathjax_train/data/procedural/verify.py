"""Independent re-checking of procedural examples: the calculator checker (grading/) for word problems, sympy for algebra.

GSM-style: every calculator annotation must evaluate to its stated result, there must be exactly
level+1 of them, and the last result must be the ``#### x`` answer. MATH-style: sympy re-solves the
``check`` statement and the LaTeX answer is parsed back and compared.
"""

from __future__ import annotations

import json
import re

import sympy
from sympy.parsing.sympy_parser import (
    convert_xor,
    implicit_multiplication_application,
    parse_expr,
    standard_transformations,
)

from mathjax_train.grading import calculator

_X, _Y = sympy.symbols("x y")
_NS = {"x": _X, "y": _Y, "Rational": sympy.Rational, "igcd": sympy.igcd, "ilcm": sympy.ilcm}
_TRANSFORMS = standard_transformations + (implicit_multiplication_application, convert_xor)
_FRAC = re.compile(r"\\frac\{([^{}]*)\}\{([^{}]*)\}")


class VerificationError(AssertionError):
    """A procedural example whose answer does not check out; the message names id and reason."""


def latex_to_sympy(text: str) -> list[sympy.Expr]:
    """Parse the restricted LaTeX our answers use (ints, fractions, polynomials, lists, pairs)."""
    s = text.replace("\\left", "").replace("\\right", "").replace("\\cdot", "*").strip()
    s = _FRAC.sub(r"((\1)/(\2))", s)
    s = re.sub(r"\^\{([^{}]*)\}", r"^(\1)", s)
    if s.startswith("(") and s.endswith(")") and "," in s:
        s = s[1:-1]
    return [parse_expr(part, local_dict=dict(_NS), transformations=_TRANSFORMS) for part in s.split(",")]


def _fail(example: dict, why: str) -> VerificationError:
    return VerificationError(f"{example.get('id')} ({example.get('source')}): {why}")


def _verify_gsm(ex: dict) -> None:
    try:
        n = calculator.check_exact_annotations(ex["solution"])
    except calculator.CalculatorError as e:
        raise _fail(ex, str(e)) from None
    if n != ex["level"] + 1:
        raise _fail(ex, f"{n} calculator steps, expected level+1 = {ex['level'] + 1}")
    if not ex["solution"].endswith(f"\n#### {ex['answer']}"):
        raise _fail(ex, "solution does not end with '#### <answer>'")
    last = calculator.annotations(ex["solution"])[-1].split("=")[1]
    if calculator.parse_result(last)[0] != calculator.parse_result(ex["answer"])[0]:
        raise _fail(ex, f"last step gives {last}, answer says {ex['answer']}")


def _derive(check: dict) -> list[sympy.Expr]:
    """The expected answer value(s) from the problem statement, by sympy alone."""
    kind = check["kind"]
    if kind in ("value", "expand"):
        expr = parse_expr(check["expr"], local_dict=dict(_NS))
        return [sympy.expand(expr) if kind == "expand" else sympy.nsimplify(expr)]
    if kind != "solve":
        raise ValueError(f"unknown check kind {kind!r}")
    eqs = [parse_expr(e, local_dict=dict(_NS)) for e in check["equations"]]
    syms = [_NS[v] for v in check["vars"]]
    sols = sympy.solve(eqs, syms, dict=True)
    target = check["target"]
    if target == "set":
        return sorted({s[syms[0]] for s in sols}, key=lambda v: float(v))
    if target == "max":
        return [max((s[syms[0]] for s in sols), key=lambda v: float(v))]
    if len(sols) != 1:
        raise ValueError(f"expected a unique solution, sympy found {sols}")
    if target == "pair":
        return [sols[0][_X], sols[0][_Y]]
    return [parse_expr(target, local_dict=dict(_NS)).subs(sols[0])]


def _verify_math(ex: dict) -> None:
    if f"\\boxed{{{ex['answer']}}}" not in ex["solution"]:
        raise _fail(ex, "solution does not contain \\boxed{answer}")
    check = json.loads(ex["check"])
    expected = _derive(check)
    got = latex_to_sympy(ex["answer"])
    if check["kind"] == "solve" and check["target"] == "set":
        got = sorted(got, key=lambda v: float(v))
    if len(got) != len(expected) or any(sympy.simplify(g - e) != 0 for g, e in zip(got, expected)):
        raise _fail(ex, f"answer {ex['answer']!r} parses to {got}, sympy derives {expected}")
    if check["kind"] == "expand" and sympy.expand(got[0]) != got[0]:
        raise _fail(ex, f"answer {ex['answer']!r} is not fully expanded")


def verify_example(example: dict) -> None:
    """Raise VerificationError unless the example's answer is independently confirmed."""
    for field in ("question", "solution", "answer", "level", "source", "id"):
        if field not in example:
            raise _fail(example, f"missing field {field!r}")
    if example["source"].startswith("procedural/gsm_style/"):
        _verify_gsm(example)
    elif example["source"].startswith("procedural/math_style/"):
        _verify_math(example)
    else:
        raise _fail(example, "not a procedural example")
