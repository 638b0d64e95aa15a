"""Step checking for procedural problems: a path is step-correct when every number in its steps is one
that a single worked method of its problem writes (the generator knows each method; procedural/methods.py).
A final-answer check keeps a path that reaches the right answer through a wrong step; this one does not.

Numbers are compared without sign, so "x - 4" and "x + (-4)" read alike; the last line (the final
answer) is left to the grader.
"""

from __future__ import annotations

import re
from typing import Sequence

from mathjax_train.data.procedural.generator import worked_methods

_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def step_numbers(solution: str) -> set[str]:
    """The numbers a solution writes in its steps (every line but the last)."""
    lines = solution.strip().splitlines()
    return set(_NUMBER.findall("\n".join(lines[:-1])))


def off_method_numbers(path: str, methods: Sequence[str]) -> set[str]:
    """The numbers of `path`'s steps that the closest worked method lacks (empty: it follows that method).
    A path without steps is off every method."""
    found = step_numbers(path)
    if not found:
        return {"<no steps>"}
    return min((found - step_numbers(m) for m in methods), key=len)


def step_checker(problem: dict):
    """A function path -> bool (every step follows one worked method) for a procedural problem record."""
    methods = worked_methods(problem)
    return lambda path: not off_method_numbers(path, methods)
