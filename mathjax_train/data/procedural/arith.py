"""A small, safe arithmetic evaluator for GSM8K-style calculator annotations (``<<3*4=12>>``).

Only numbers, ``+ - * / **``, unary signs and parentheses are accepted; evaluation is exact
(fractions.Fraction) and bounded (expression length, exponent and magnitude limits).
Never uses ``eval``.
"""
from __future__ import annotations

import ast
import re
from fractions import Fraction

MAX_CHARS = 256
MAX_EXPONENT = 64
MAX_MAGNITUDE = 10**30

_ANNOTATION = re.compile(r"<<([^<>=]*)=([^<>]*)>>")


class ArithError(ValueError):
    """The expression is not plain bounded arithmetic (or divides by zero)."""


def _literal(node: ast.Constant) -> Fraction:
    v = node.value
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ArithError(f"only numbers are allowed, got {v!r}")
    return Fraction(repr(v)) if isinstance(v, float) else Fraction(v)


def _eval(node: ast.AST) -> Fraction:
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant):
        return _literal(node)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
        v = _eval(node.operand)
        return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.BinOp):
        a, b = _eval(node.left), _eval(node.right)
        op = node.op
        if isinstance(op, ast.Add):
            r = a + b
        elif isinstance(op, ast.Sub):
            r = a - b
        elif isinstance(op, ast.Mult):
            r = a * b
        elif isinstance(op, ast.Div):
            if b == 0:
                raise ArithError("division by zero")
            r = a / b
        elif isinstance(op, ast.Pow):
            if b.denominator != 1 or abs(b) > MAX_EXPONENT:
                raise ArithError(f"exponent must be an integer with |e| <= {MAX_EXPONENT}, got {b}")
            if a == 0 and b < 0:
                raise ArithError("zero to a negative power")
            if abs(a) > MAX_MAGNITUDE:
                raise ArithError("base too large")
            r = a ** int(b)
        else:
            raise ArithError(f"operator {type(op).__name__} is not allowed")
        if abs(r) > MAX_MAGNITUDE or r.denominator > MAX_MAGNITUDE:
            raise ArithError("intermediate result too large")
        return r
    raise ArithError(f"{type(node).__name__} is not allowed in arithmetic")


def evaluate(expr: str) -> Fraction:
    """Exact value of an arithmetic expression string such as ``"48/2"`` or ``"(3+4)*2**3"``."""
    if len(expr) > MAX_CHARS:
        raise ArithError(f"expression longer than {MAX_CHARS} characters")
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except SyntaxError as e:
        raise ArithError(f"not an arithmetic expression: {expr!r} ({e.msg})") from None
    return _eval(tree)


def parse_number(text: str) -> Fraction:
    """A numeric literal as written in solutions (``12``, ``-3``, ``0.25``, ``1,200``) -> Fraction."""
    cleaned = text.strip().replace(",", "")
    try:
        return Fraction(cleaned)
    except ValueError:
        raise ArithError(f"not a number: {text!r}") from None


def annotations(text: str) -> list[tuple[str, str]]:
    """All ``<<expr=result>>`` calculator annotations in ``text`` as (expr, result) pairs."""
    return _ANNOTATION.findall(text)


def check_annotations(text: str) -> int:
    """Verify every annotation (expr evaluates to result, and the result is also written right
    after ``>>``); returns how many were checked; raises ArithError naming the first bad one."""
    count = 0
    for m in _ANNOTATION.finditer(text):
        expr, result = m.group(1), m.group(2)
        if evaluate(expr) != parse_number(result):
            raise ArithError(f"annotation <<{expr}={result}>>: {expr} = {evaluate(expr)}, not {result}")
        if not text.startswith(result, m.end()):
            raise ArithError(f"annotation <<{expr}={result}>> is not followed by its result")
        count += 1
    return count
