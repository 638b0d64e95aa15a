"""Answer structure: matrices, intervals/tuples, sets, unions and bare lists, and how they compare.

Parsing is purely syntactic on normalized text.  Comparison takes the scalar equality as an
argument, so the same rules serve the in-process fast path and the sympy worker.

Rules: tuples and intervals are ordered and their brackets must match (`[1,2]` != `(1,2)`);
`\\{...\\}` sets are unordered with duplicates dropped; a bare comma list (`1, 2`, roots) is an
unordered multiset; `a \\pm b` is the bare list `a+b, a-b`; a bare list also equals a
parenthesized tuple written in the same order; a one-row or one-column matrix equals a
parenthesized tuple of its entries.  A chain of one set operator (`\\cup`, `\\cap` or
`\\setminus`, left to right) over explicit finite sets is evaluated to the set it denotes, so
`\\{1,2\\}\\cup\\{3\\}` = `\\{1,2,3\\}` and `\\{1\\}\\cap\\{2\\}` = `\\emptyset`; membership uses the
scalar equality.  Chains mixing operators (no standard precedence) and set-builder sets are not
evaluated.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

MAX_ITEMS = 40

_OPEN = "([{"
_CLOSE = ")]}"


@dataclass
class Node:
    """One parsed answer: kind in {scalar, tuple, set, list, union, setop, matrix}; a setop's
    text is its operator (`\\cap` or `\\setminus`)."""

    kind: str
    text: str = ""
    items: list = field(default_factory=list)
    brackets: str = ""  # for tuples/intervals: opening + closing bracket, e.g. "[)"
    rows: list = field(default_factory=list)


def _depth_scan(s: str):
    """Yield (index, char, depth) with `\\{`, `\\}`, `\\begin`/`\\end` counted as brackets."""
    depth = 0
    i = 0
    while i < len(s):
        c = s[i]
        if c == "\\":
            if s.startswith("\\begin", i):
                depth += 1
            elif s.startswith("\\end", i):
                depth -= 1
            elif i + 1 < len(s) and s[i + 1] in "{}":
                depth += 1 if s[i + 1] == "{" else -1
                yield i, s[i : i + 2], depth
                i += 2
                continue
            yield i, c, depth
            i += 1
            continue
        if c in _OPEN:
            depth += 1
        elif c in _CLOSE:
            depth -= 1
        yield i, c, depth
        i += 1


def split_top(s: str, sep: str) -> list[str]:
    """Split `s` on `sep` occurring at bracket depth 0."""
    parts, last = [], 0
    for i, _c, depth in _depth_scan(s):
        if depth == 0 and s.startswith(sep, i):
            parts.append(s[last:i])
            last = i + len(sep)
    parts.append(s[last:])
    return parts


def _closes_at_end(s: str) -> bool:
    """True when the bracket opened at s[0] is closed by the last character."""
    for i, _c, depth in _depth_scan(s):
        if depth == 0:
            return i == len(s) - 1 or (s.startswith("\\}", i) and i == len(s) - 2)
    return False


_THOUSANDS_RE = re.compile(r"^[+-]?\d{1,3}(,\d{3})+(\.\d+)?$")
_MATRIX_RE = re.compile(r"^\\begin\{([pbvBV]?matrix|array|smallmatrix)\}(?:\{[^{}]*\})?(.*)\\end\{\1\}$", re.S)


def _items(parts: list[str]) -> list[str]:
    out = []
    for p in parts:
        p = re.sub(r"^\s*(?:and|or)\s+", "", p.strip()).strip()
        if p:
            out.append(p)
    if len(out) > MAX_ITEMS:
        raise ValueError("too many items")
    return out


def _expand_pm(s: str) -> list[str] | None:
    """`1 \\pm \\sqrt 2` -> ["1 + \\sqrt 2", "1 - \\sqrt 2"]; every \\pm branches (at most 3)."""
    if "\\pm" not in s and "\\mp" not in s:
        return None
    out = [s]
    for _ in range(3):
        nxt = []
        for t in out:
            m = re.search(r"\\(pm|mp)(?![a-zA-Z])", t)
            if not m:
                nxt.append(t)
                continue
            first, second = ("+", "-") if m.group(1) == "pm" else ("-", "+")
            nxt += [t[: m.start()] + first + t[m.end() :], t[: m.start()] + second + t[m.end() :]]
        out = nxt
    return [t.strip() for t in out]


_SET_OPS = ("\\cup", "\\cap", "\\setminus")
_EMPTY_SET_RE = re.compile(r"^(?:\\emptyset|\\varnothing|\\\{\s*\\\})$")


def parse_structure(s: str, depth: int = 0) -> Node:
    """Parse normalized answer text into a Node tree."""
    s = s.strip()
    if depth > 6:
        return Node("scalar", s)
    ops = [op for op in _SET_OPS if op in s and len(split_top(s, op)) > 1]
    if len(ops) > 1:  # mixed set operators have no standard precedence: no structure
        return Node("scalar", s)
    if ops:
        items = [parse_structure(p, depth + 1) for p in _items(split_top(s, ops[0]))]
        return Node("union", items=items) if ops[0] == "\\cup" else Node("setop", ops[0], items=items)
    if _EMPTY_SET_RE.match(s):
        return Node("set")
    m = _MATRIX_RE.match(s)
    if m:
        rows = [r for r in (split_top(r, "&") for r in m.group(2).split("\\cr")) if "".join(r).strip()]
        return Node("matrix", rows=[[c.strip() for c in r] for r in rows])
    if s.startswith("\\{") and s.endswith("\\}") and _closes_at_end(s):
        return Node("set", items=[parse_structure(p, depth + 1) for p in _items(split_top(s[2:-2], ","))])
    if s[:1] in "([" and s[-1:] in ")]" and _closes_at_end(s):
        inner = split_top(s[1:-1], ",")
        if len(inner) > 1:
            return Node("tuple", items=[parse_structure(p, depth + 1) for p in _items(inner)], brackets=s[0] + s[-1])
    if not _THOUSANDS_RE.match(s):
        parts = split_top(s, ",")
        if len(parts) == 1:
            parts = re.split(r"\s+(?:and|or)\s+", s)
        if len(parts) > 1:
            return Node("list", items=[parse_structure(p, depth + 1) for p in _items(parts)])
    pm = _expand_pm(s)
    if pm:
        return Node("list", items=[Node("scalar", t) for t in pm])
    return Node("scalar", s)


ScalarEq = Callable[[str, str], bool]


def _unordered_match(a: list[Node], b: list[Node], eq) -> bool:
    """Perfect matching between a and b under eq (augmenting paths; lists are short)."""
    if len(a) != len(b):
        return False
    cache: dict[tuple[int, int], bool] = {}

    def ok(i: int, j: int) -> bool:
        if (i, j) not in cache:
            cache[(i, j)] = eq(a[i], b[j])
        return cache[(i, j)]

    match_b: dict[int, int] = {}

    def augment(i: int, seen: set[int]) -> bool:
        for j in range(len(b)):
            if j not in seen and ok(i, j):
                seen.add(j)
                if j not in match_b or augment(match_b[j], seen):
                    match_b[j] = i
                    return True
        return False

    return all(augment(i, set()) for i in range(len(a)))


def _dedupe(items: list[Node], eq) -> list[Node]:
    out: list[Node] = []
    for it in items:
        if not any(eq(it, o) for o in out):
            out.append(it)
    return out


def _as_vector(n: Node) -> list[Node] | None:
    if n.kind == "matrix" and n.rows and (len(n.rows) == 1 or all(len(r) == 1 for r in n.rows)):
        cells = n.rows[0] if len(n.rows) == 1 else [r[0] for r in n.rows]
        return [Node("scalar", c) for c in cells]
    if n.kind == "tuple" and n.brackets == "()":
        return n.items
    return None


_SET_BUILDER_RE = re.compile(r"\\mid|\||:|\\[lc]?dots|\\in(?![a-zA-Z])|<|>|=")


def _evaluate_sets(n: Node, eq) -> Node:
    """The set a union/setop of explicit finite sets denotes (membership by `eq`), else `n`."""
    if (
        n.kind not in ("union", "setop")
        or len(n.items) < 2
        or not all(
            x.kind == "set" and not any(y.kind == "scalar" and _SET_BUILDER_RE.search(y.text) for y in x.items)
            for x in n.items
        )
    ):
        return n
    first, rest = n.items[0].items, n.items[1:]
    if n.kind == "union":
        items = [y for x in n.items for y in x.items]
    elif n.text == "\\cap":
        items = [y for y in first if all(any(eq(y, z) for z in x.items) for x in rest)]
    else:
        items = [y for y in first if not any(eq(y, z) for x in rest for z in x.items)]
    return Node("set", items=items)


def nodes_equal(g: Node, p: Node, scalar_eq: ScalarEq) -> bool:
    """Structural equality of gold `g` and prediction `p` (rules in the module docstring)."""

    def eq(x: Node, y: Node) -> bool:
        return nodes_equal(x, y, scalar_eq)

    g, p = _evaluate_sets(g, eq), _evaluate_sets(p, eq)

    def ordered(xs: list[Node], ys: list[Node]) -> bool:
        return len(xs) == len(ys) and all(eq(x, y) for x, y in zip(xs, ys))

    if g.kind == "scalar" and p.kind == "scalar":
        return scalar_eq(g.text, p.text)
    if g.kind == "matrix" and p.kind == "matrix":
        return len(g.rows) == len(p.rows) and all(
            len(r) == len(q) and all(scalar_eq(x, y) for x, y in zip(r, q)) for r, q in zip(g.rows, p.rows)
        )
    if "matrix" in (g.kind, p.kind):
        gv, pv = _as_vector(g), _as_vector(p)
        return gv is not None and pv is not None and ordered(gv, pv)
    if g.kind == "tuple" and p.kind == "tuple":
        return g.brackets == p.brackets and ordered(g.items, p.items)
    if {g.kind, p.kind} == {"tuple", "list"}:
        t = g if g.kind == "tuple" else p
        return t.brackets == "()" and ordered(g.items, p.items)
    if g.kind in ("set", "list") and p.kind in ("set", "list"):
        if "set" in (g.kind, p.kind):
            return _unordered_match(_dedupe(g.items, eq), _dedupe(p.items, eq), eq)
        return _unordered_match(g.items, p.items, eq)
    if g.kind == "union" and p.kind == "union":
        return _unordered_match(g.items, p.items, eq)
    if g.kind == "setop" and p.kind == "setop" and g.text == p.text:
        return _unordered_match(g.items, p.items, eq) if g.text == "\\cap" else ordered(g.items, p.items)
    return False
