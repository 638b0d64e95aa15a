"""Readings of answer notation: chains of `=` and `\\approx` (the final side), and inequalities as
intervals (`-2 <= x <= 7` is `[-2, 7]`).  Labels are defined in labels.py.

Rules:
- A chain `L = e_1 = ... = e_n` (3+ sides, `L` a label or not) reads as `L = e_n`; `\\approx` marks an
  approximation of the exact value before it (`\\frac{\\sqrt3}{3} \\approx 0.577` is `\\frac{\\sqrt3}{3}`;
  `x \\approx 11` is `x = 11`).  Two constant sides (`35 + 70 = 105`) read as the right side; an
  equation with unknowns (`7 = 11a + c`) stays an equation.
- `a < x < b` (any mix of `<`, `<=`) over one label is the interval between a and b with the matching
  brackets; `x > a` is `(a, \\infty)`; `a <= |x| <= b` (0 < a) is `[-b, -a] \\cup [a, b]`.
"""

from __future__ import annotations

import re

from .numbers import parse_number
from .brackets import closes_at_end, split_top
from .labels import is_label
from .structures import Node

_REL_RE = re.compile(r"(<=|>=|<|>)")
_CONSTANT_CMDS_RE = re.compile(r"\\(?:[dt]?frac|sqrt|cdot|times|div|pi|left|right)(?![a-zA-Z])|\\\$")


def _is_constant(s: str) -> bool:
    """A number or a computation with numbers only (`35 + 70`, `\\frac{1}{2}`): no unknowns."""
    t = _CONSTANT_CMDS_RE.sub("", s)
    return bool(re.search(r"\d", t)) and not re.search(r"[A-Za-z\\]", t)


def final_side(s: str) -> str:
    """The reading of a chain of `=` / `\\approx` (module docstring); other text is returned as is."""
    if "=" not in s and "\\approx" not in s:
        return s
    t = s.strip()
    if t[:1] == "(" and closes_at_end(t) and len(split_top(t[1:-1], "=")) > 1 and len(split_top(t[1:-1], ",")) == 1:
        s = t[1:-1]  # "(35 + 70 = 105)": a computation in parentheses
    sides: list[tuple[str, str]] = []  # (separator before the side, side)
    for i, chunk in enumerate(split_top(s, "\\approx")):
        for j, part in enumerate(split_top(chunk, "=")):
            sep = "" if i == j == 0 else ("=" if j else "~")
            sides.append((sep, part.strip()))
    if any(sep == "=" and sides[k - 1][1][-1:] in "<>!" for k, (sep, _) in enumerate(sides)):
        return s  # "<=", ">=", "!=": a relation, not a chain
    if len(sides) == 2 and sides[1][0] == "=":
        left, right = sides[0][1], sides[1][1]
        return right if _is_constant(left) and _is_constant(right) else s
    if len(sides) < 2:
        return s
    label = sides[0][1] if is_label(sides[0][1]) else None
    values = sides[1:] if label else sides
    exact = [v for sep, v in values if sep != "~"]
    value = exact[-1] if exact else values[-1][1]
    return f"{label} = {value}" if label else value


def _bound(value: str) -> Node:
    return Node("scalar", value.strip())


def relation_interval(s: str) -> Node | None:
    """The interval (tuple node with brackets) or union an inequality over one label denotes, else None."""
    parts = [p.strip() for p in _REL_RE.split(s)]
    if len(parts) == 3:
        a, op, b = parts
        if is_label(b) and not is_label(a):
            a, op, b = b, {"<": ">", ">": "<", "<=": ">=", ">=": "<="}[op], a
        if not is_label(a) or is_label(b) or not b:
            return None
        if op in ("<", "<="):
            return Node("tuple", items=[_bound("-\\infty"), _bound(b)], brackets="(" + (")" if op == "<" else "]"))
        return Node("tuple", items=[_bound(b), _bound("\\infty")], brackets=("(" if op == ">" else "[") + ")")
    if len(parts) != 5:
        return None
    lo, op1, mid, op2, hi = parts
    if op1[0] == ">" and op2[0] == ">":
        lo, op1, op2, hi = hi, op2.replace(">", "<"), op1.replace(">", "<"), lo
    if op1[0] != "<" or op2[0] != "<" or not lo or not hi:
        return None
    left, right = "(" if op1 == "<" else "[", ")" if op2 == "<" else "]"
    m = re.fullmatch(r"\|(.+)\|", mid)
    if m and is_label(m.group(1)):
        a, b = parse_number(lo), parse_number(hi)
        if a is None or b is None or a <= 0 or b < a:
            return None
        mirror = {"(": ")", "[": "]", ")": "(", "]": "["}
        neg = Node("tuple", items=[_bound(f"-{hi}"), _bound(f"-{lo}")], brackets=mirror[right] + mirror[left])
        return Node("union", items=[neg, Node("tuple", items=[_bound(lo), _bound(hi)], brackets=left + right)])
    if not is_label(mid):
        return None
    return Node("tuple", items=[_bound(lo), _bound(hi)], brackets=left + right)
