"""LaTeX and sympy-syntax rendering of exact numbers and integer polynomials (no sympy import)."""

from __future__ import annotations

from fractions import Fraction
from typing import Sequence

Number = int | Fraction


def num(v: Number) -> str:
    """Integer or reduced fraction in LaTeX: ``3``, ``-\\frac{2}{3}``."""
    v = Fraction(v)
    if v.denominator == 1:
        return str(v.numerator)
    sign = "-" if v < 0 else ""
    return f"{sign}\\frac{{{abs(v.numerator)}}}{{{v.denominator}}}"


def py(v: Number) -> str:
    """The same number in sympy syntax: ``3``, ``Rational(-2, 3)``."""
    v = Fraction(v)
    return str(v.numerator) if v.denominator == 1 else f"Rational({v.numerator}, {v.denominator})"


def paren(v: Number) -> str:
    """LaTeX number, parenthesised when negative (for substitutions like ``3(-2)``)."""
    s = num(v)
    return f"\\left({s}\\right)" if Fraction(v) < 0 else s


def poly(coeffs: Sequence[Number], var: str = "x") -> str:
    """LaTeX polynomial from coefficients, highest degree first: [2, -3, 0, 1] -> ``2x^3 - 3x^2 + 1``."""
    deg = len(coeffs) - 1
    out: list[str] = []
    for i, c in enumerate(coeffs):
        c = Fraction(c)
        if c == 0:
            continue
        p = deg - i
        mag = abs(c)
        body = "" if p == 0 else var if p == 1 else f"{var}^{{{p}}}" if p > 9 else f"{var}^{p}"
        if p == 0:
            coef = num(mag)
        elif mag == 1:
            coef = ""
        else:
            coef = num(mag)
        term = coef + body
        if not out:
            out.append(("-" if c < 0 else "") + term)
        else:
            out.append((" - " if c < 0 else " + ") + term)
    return "".join(out) if out else "0"


def poly_py(coeffs: Sequence[Number], var: str = "x") -> str:
    """Sympy-syntax polynomial from coefficients, highest degree first."""
    deg = len(coeffs) - 1
    terms = [f"({py(c)})*{var}**{deg - i}" for i, c in enumerate(coeffs) if Fraction(c) != 0]
    return " + ".join(terms) if terms else "0"


def poly_mul(a: Sequence[int], b: Sequence[int]) -> list[int]:
    """Product of two coefficient lists (highest degree first)."""
    out = [0] * (len(a) + len(b) - 1)
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            out[i + j] += x * y
    return out


def poly_add(a: Sequence[int], b: Sequence[int]) -> list[int]:
    """Sum of two coefficient lists (highest degree first), aligned at the constant term."""
    n = max(len(a), len(b))
    a = [0] * (n - len(a)) + list(a)
    b = [0] * (n - len(b)) + list(b)
    return [x + y for x, y in zip(a, b)]


def poly_eval(coeffs: Sequence[Number], x: Number) -> Fraction:
    """Horner evaluation, exact."""
    acc = Fraction(0)
    for c in coeffs:
        acc = acc * x + c
    return acc


def linear(a: Number, b: Number, var: str = "x") -> str:
    """``ax + b`` in LaTeX."""
    return poly([a, b], var)
