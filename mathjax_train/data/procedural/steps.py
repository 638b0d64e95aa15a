"""Step checking for procedural problems: a path is step-correct when every number in its steps is one
that a single worked method of its problem writes (the generator knows each method; procedural/methods.py)
and every equality of plain numbers it writes in LaTeX holds (`$33 = 3 \\cdot 11$`). A final-answer check
keeps a path that reaches the right answer through a wrong step; this one does not.

Numbers are compared without sign, so "x - 4" and "x + (-4)" read alike; the last line (the final
answer) is left to the grader. Equalities are evaluated by the grader's bounded calculator, never eval.
"""

from __future__ import annotations

import re
from typing import Sequence

from mathjax_train.data.procedural.generator import worked_methods
from mathjax_train.grading.calculator import CalculatorError, evaluate

_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_MATH = re.compile(r"\$([^$]+)\$")
_FRAC = re.compile(r"\\frac\{([^{}]*)\}\{([^{}]*)\}")
_POWER = re.compile(r"\^\{([^{}]*)\}|\^(\d)")
_ARITHMETIC = re.compile(r"[\d\s+\-*/().]+")


def _steps(solution: str) -> str:
    return "\n".join(solution.strip().splitlines()[:-1])


def step_numbers(solution: str) -> set[str]:
    """The numbers a solution writes in its steps (every line but the last)."""
    return set(_NUMBER.findall(_steps(solution)))


def off_method_numbers(path: str, methods: Sequence[str]) -> set[str]:
    """The numbers of `path`'s steps that the closest worked method lacks (empty: it follows that method).
    A path without steps is off every method."""
    found = step_numbers(path)
    if not found:
        return {"<no steps>"}
    return min((found - step_numbers(m) for m in methods), key=len)


def _arithmetic(latex: str) -> str | None:
    """A LaTeX side of plain numbers as a calculator expression (None when it holds anything else)."""
    s = latex.replace("\\left", "").replace("\\right", "").replace("\\cdot", "*").replace("\\times", "*")
    s = _FRAC.sub(r"((\1)/(\2))", s)
    s = _POWER.sub(lambda m: f"**({m.group(1) or m.group(2)})", s)
    return s if s.strip() and _ARITHMETIC.fullmatch(s) else None


def false_equalities(path: str) -> list[str]:
    """The `$a = b [= c]$` segments of a path's steps whose plain-number sides (two or more) differ."""
    false = []
    for segment in _MATH.findall(_steps(path)):
        sides = [a for side in segment.split("=") if (a := _arithmetic(side)) is not None]
        if len(sides) < 2:  # `$3x = 6$`: an equation in x, not an equality of numbers
            continue
        try:
            values = {evaluate(side) for side in sides}
        except CalculatorError:  # not bounded arithmetic (a huge power, a division by zero): not checked
            continue
        if len(values) > 1:
            false.append(segment)
    return false


def follows_a_method(path: str, methods: Sequence[str]) -> bool:
    """Whether every step of `path` follows one of `methods` and its plain-number equalities hold."""
    return not off_method_numbers(path, methods) and not false_equalities(path)


def step_checker(problem: dict):
    """A function path -> bool (`follows_a_method`) for a procedural problem record."""
    methods = worked_methods(problem)
    return lambda path: follows_a_method(path, methods)
