"""Check GSM8K-style calculator annotations (``<<48/2=24>>``) in model-written solutions.

The left side is evaluated by a small AST walker over exact fractions (numbers, ``+ - * / // %
**``, unary signs, parentheses); never ``eval``. Exponents, magnitudes and expression length are
bounded, so hostile model output cannot hang or exhaust the grader.
"""
# no `from __future__ import annotations` here: type checkers would take that name for the function below

import ast
import re
from fractions import Fraction

MAX_EXPR_CHARS = 200
MAX_EXPONENT = 100
MAX_MAGNITUDE = 10**40

ANNOTATION = re.compile(r"<<([^<>]*)>>")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")


class CalculatorError(ValueError):
    """An annotation that is malformed, not bounded arithmetic, or arithmetically wrong."""


def _number(node: ast.Constant) -> Fraction:
    v = node.value
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise CalculatorError(f"only numbers are allowed, got {v!r}")
    if isinstance(v, float) and (v != v or v in (float("inf"), float("-inf"))):
        raise CalculatorError("number out of range")
    return Fraction(repr(v)) if isinstance(v, float) else Fraction(v)


def _binop(op: ast.operator, a: Fraction, b: Fraction) -> Fraction:
    if isinstance(op, ast.Add):
        return a + b
    if isinstance(op, ast.Sub):
        return a - b
    if isinstance(op, ast.Mult):
        return a * b
    if isinstance(op, (ast.Div, ast.FloorDiv, ast.Mod)):
        if b == 0:
            raise CalculatorError("division by zero")
        if isinstance(op, ast.Div):
            return a / b
        return Fraction(a // b) if isinstance(op, ast.FloorDiv) else a % b
    if isinstance(op, ast.Pow):
        if b.denominator != 1 or abs(b) > MAX_EXPONENT:
            raise CalculatorError(f"exponent must be an integer with |e| <= {MAX_EXPONENT}")
        if a == 0 and b < 0:
            raise CalculatorError("zero to a negative power")
        if abs(a) > MAX_MAGNITUDE:
            raise CalculatorError("base too large")
        return a ** int(b)
    raise CalculatorError(f"operator {type(op).__name__} is not allowed")


def _eval(node: ast.AST) -> Fraction:
    if isinstance(node, ast.Constant):
        return _number(node)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
        v = _eval(node.operand)
        return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.BinOp):
        r = _binop(node.op, _eval(node.left), _eval(node.right))
        if abs(r) > MAX_MAGNITUDE or r.denominator > MAX_MAGNITUDE:
            raise CalculatorError("intermediate result too large")
        return r
    raise CalculatorError(f"{type(node).__name__} is not allowed in a calculator expression")


def _clean(text: str) -> str:
    """Drop currency signs and thousands separators the way GSM8K writes them (``$1,200``)."""
    return _THOUSANDS.sub("", text.replace("$", "")).strip()


def evaluate(expr: str) -> Fraction:
    """Exact value of a calculator expression such as ``"48/2"`` or ``"(3+4)*2**3"``."""
    expr = _clean(expr)
    if not expr or len(expr) > MAX_EXPR_CHARS:
        raise CalculatorError(f"expression is empty or longer than {MAX_EXPR_CHARS} characters")
    try:
        tree = ast.parse(expr, mode="eval")
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        raise CalculatorError(f"not an arithmetic expression: {expr!r}") from None
    try:
        return _eval(tree.body)
    except (ZeroDivisionError, OverflowError, RecursionError, MemoryError, ValueError) as e:
        if isinstance(e, CalculatorError):
            raise
        raise CalculatorError(f"cannot evaluate {expr!r}: {type(e).__name__}") from None


def parse_result(text: str) -> tuple[Fraction, int]:
    """The right side as (value, decimal places written): ``"3.33"`` -> (333/100, 2)."""
    cleaned = _clean(text)
    m = re.fullmatch(r"[+-]?(\d+)(?:\.(\d*))?|[+-]?\.(\d+)", cleaned)
    if not m:
        raise CalculatorError(f"result {text!r} is not a number")
    decimals = len(m.group(2) or m.group(3) or "")
    return Fraction(cleaned), decimals


def check_annotation(body: str) -> None:
    """Raise CalculatorError unless ``lhs=rhs`` holds; a result written with d decimals may be the
    value rounded or truncated to d places (``<<10/3=3.33>>``), an integer result must be exact."""
    if body.count("=") != 1:
        raise CalculatorError(f"<<{body}>> must have exactly one '='")
    lhs, rhs = body.split("=")
    value = evaluate(lhs)
    written, decimals = parse_result(rhs)
    if value == written:
        return
    if decimals and abs(value - written) < Fraction(1, 10**decimals):
        return
    raise CalculatorError(f"<<{body}>>: {lhs.strip()} = {float(value):g}, not {rhs.strip()}")


def annotations(text: str) -> list[str]:
    """Bodies of all ``<<...>>`` annotations in ``text``, in order."""
    return ANNOTATION.findall(text)


# arithmetic written out in prose, as a model trained without calculator markup writes it: `5 * 24 = 120`
_NUM = r"\$?\d[\d,]*(?:\.\d+)?"
# a term of a longer expression (`2x + 3 - 1 = 5`, `y = 3 + 4 = 7`) is not an equation of its own, nor is the
# tail of a number (`1,200`)
_WRITTEN = re.compile(
    rf"(?<![\w.^{{}}(),=+\-*/×])(?<![=+\-*/×(]\s)({_NUM}(?:\s*[-+*/×]\s*{_NUM})+)\s*=\s*(-?{_NUM})(?![\w.]*\d)"
)


def written_equations(text: str) -> list[str]:
    """``lhs=rhs`` bodies (the annotations' shape, spaces and currency signs dropped) of the arithmetic written
    in prose outside calculator annotations, in order: ``He buys 5 * 24 = 120`` -> ``["5*24=120"]``."""
    prose = ANNOTATION.sub(" ", text)
    return [
        re.sub(r"\s+", "", f"{lhs}={rhs}").replace("$", "").replace("×", "*") for lhs, rhs in _WRITTEN.findall(prose)
    ]


def _first_failure(bodies: list[str]) -> str | None:
    """Why the first ``lhs=rhs`` body that `check_annotation` refuses fails (None when all hold)."""
    for body in bodies:
        try:
            check_annotation(body)
        except CalculatorError as e:
            return str(e)
    return None


def first_bad_written_equation(text: str) -> str | None:
    """None if every equation `written_equations` finds holds (a rounded result as in annotations), else why
    the first one fails."""
    why = _first_failure(written_equations(text))
    return why.replace("<<", "").replace(">>", "") if why else None


def first_bad_annotation(text: str) -> str | None:
    """None if every annotation in ``text`` checks out, else the reason the first bad one fails."""
    return _first_failure(annotations(text))


def check_exact_annotations(text: str) -> int:
    """Strict form for reference solutions (procedural data): every ``<<lhs=rhs>>`` holds exactly,
    with no rounding, and its result is written right after ``>>``. Returns how many were checked;
    raises CalculatorError naming the first bad one."""
    count = 0
    for m in ANNOTATION.finditer(text):
        body = m.group(1)
        if body.count("=") != 1:
            raise CalculatorError(f"<<{body}>> must have exactly one '='")
        lhs, rhs = body.split("=")
        value, (written, _) = evaluate(lhs), parse_result(rhs)
        if value != written:
            raise CalculatorError(f"<<{body}>>: {lhs.strip()} = {value}, not {rhs.strip()}")
        if not text.startswith(rhs, m.end()):
            raise CalculatorError(f"<<{body}>> is not followed by its result {rhs!r}")
        count += 1
    return count
