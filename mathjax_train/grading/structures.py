"""Answer structure: matrices, intervals/tuples, sets, unions and bare lists, and how they compare.

Parsing is purely syntactic on normalized text.  Comparison takes the scalar equality as an
argument, so the same rules serve the in-process fast path and the sympy worker.

Rules: tuples and intervals are ordered and their brackets must match (`[1,2]` != `(1,2)`);
`\\{...\\}` sets are unordered with duplicates dropped; a bare list (`1, 2`, roots; separated by
commas, by `;`, or by `and`/`or`) is an unordered multiset; `a \\pm b` is the bare list `a+b, a-b`,
also as one item of a list; a bare list also equals a parenthesized tuple written in the same
order; plain braces only group (`{1,3}` is the bare list); `(0;-2;6)` is a tuple; a one-row or
one-column matrix equals a parenthesized tuple of its entries.  A record (`AB=4, CD=5`: distinct
labels) equals another record label by label, or unlabelled values in the written order.
A chain of one set operator (`\\cup`, `\\cap` or `\\setminus`, left to right) over explicit finite
sets is evaluated to the set it denotes, so `\\{1,2\\}\\cup\\{3\\}` = `\\{1,2,3\\}` and
`\\{1\\}\\cap\\{2\\}` = `\\emptyset`; membership uses the scalar equality.  Chains mixing operators
(no standard precedence) and set-builder sets are not evaluated.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

from .brackets import closes_at_end, depth_scan, split_top
from .labels import canonical_label, split_label

MAX_ITEMS = 40


@dataclass
class Node:
    """One parsed answer: kind in {scalar, tuple, set, list, record, union, setop, matrix}; a
    setop's text is its operator (`\\cap` or `\\setminus`); a record's items are values with labels."""

    kind: str
    text: str = ""
    items: list = field(default_factory=list)
    brackets: str = ""  # for tuples/intervals: opening + closing bracket, e.g. "[)"
    rows: list = field(default_factory=list)
    labels: list = field(default_factory=list)  # for records: the canonical label of each item


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


_WORD_SEP_RE = re.compile(r"\s+(?:and|or)\s+|(?<=[)\]}])\s*(?:and|or)\s*(?=[(\[\\])")
_WRAPPED_MATRIX_RE = re.compile(r"^[(\[]\s*(\\begin\{(\w+)\}.*\\end\{\2\})\s*[)\]]$", re.S)


def _split_words(s: str) -> list[str]:
    """Split on the connectives `and` / `or` at bracket depth 0."""
    if "and" not in s and "or" not in s:
        return [s]
    top = {i for i, _c, depth in depth_scan(s) if depth == 0}
    parts, last = [], 0
    for m in _WORD_SEP_RE.finditer(s):
        if m.start() in top:
            parts.append(s[last : m.start()])
            last = m.end()
    return parts + [s[last:]]


def _separated(s: str, sep: str) -> list[str]:
    if sep not in s:
        return []
    parts = split_top(s, sep)
    return parts if len(parts) > 1 else []


def _list(parts: list[str], depth: int) -> Node:
    """A bare list: nested bare lists are spliced in; an item with `\\pm` counts as its two values;
    `L1 = a, L2 = b` with distinct labels is a record."""
    items = _items(parts)
    labelled = [split_label(p) for p in items]
    names = [canonical_label(label) for label, _ in labelled if label]
    if len(names) == len(items) > 1 and len(set(names)) == len(names):
        return Node("record", items=[Node("scalar", v) for _, v in labelled], labels=names)
    out: list[Node] = []
    for p in items:
        node = parse_structure(p, depth + 1)
        if node.kind == "scalar" and _expand_pm(node.text):
            node = Node("list", items=[Node("scalar", t) for t in _expand_pm(node.text) or []])
        out += node.items if node.kind == "list" else [node]
    if len(out) > MAX_ITEMS:
        raise ValueError("too many items")
    return Node("list", items=out)


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
    if s[:1] == "{" and closes_at_end(s):  # plain braces only group: `{1,3}` is the list 1, 3
        return parse_structure(s[1:-1], depth + 1)
    m = _WRAPPED_MATRIX_RE.match(s)
    if m and closes_at_end(s):
        s = m.group(1)
    m = _MATRIX_RE.match(s) if s.count("\\begin{") == 1 else None
    if m:
        rows = [r for r in (split_top(r, "&") for r in m.group(2).split("\\cr")) if "".join(r).strip()]
        return Node("matrix", s, rows=[[c.strip() for c in r] for r in rows])
    if s.startswith("\\{") and s.endswith("\\}") and closes_at_end(s):
        members = _separated(s[2:-2], ",") or _separated(s[2:-2], ";") or [s[2:-2]]
        return Node("set", items=[parse_structure(p, depth + 1) for p in _items(members)])
    if s[:1] in "([" and s[-1:] in ")]" and closes_at_end(s):
        inner = _separated(s[1:-1], ",") or _separated(s[1:-1], ";")  # `(0;-2;6)`: a tuple too
        if inner:
            return Node("tuple", items=[parse_structure(p, depth + 1) for p in _items(inner)], brackets=s[0] + s[-1])
    if _THOUSANDS_RE.match(s):
        return Node("scalar", s)
    for split in (lambda: _separated(s, ";"), lambda: _split_words(s), lambda: _separated(s, ",")):
        parts = split()
        if len(parts) > 1:
            return _list(parts, depth)
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


def _by_label(n: Node) -> dict | None:
    """label -> value of a record, or of a list whose items are all `L = v` with distinct labels."""
    if n.kind == "record":
        return dict(zip(n.labels, n.items))
    if n.kind != "list" or not all(x.kind == "scalar" for x in n.items):
        return None
    pairs = [split_label(x.text) for x in n.items]
    names = [canonical_label(label) for label, _ in pairs if label]
    if len(names) != len(pairs) or len(set(names)) != len(names):
        return None
    return {name: Node("scalar", v) for name, (_, v) in zip(names, pairs)}


def _records_equal(g: Node, p: Node, eq) -> bool:
    """Two labelled answers match label by label; against unlabelled values, in the written order."""
    gm, pm = _by_label(g), _by_label(p)
    if gm is not None and pm is not None:
        return gm.keys() == pm.keys() and all(eq(gm[k], pm[k]) for k in gm)
    other = p if g.kind == "record" else g
    if other.kind not in ("list", "tuple") or (other.kind == "tuple" and other.brackets != "()"):
        return False
    if any(x.kind == "scalar" and split_label(x.text)[0] for x in other.items) or len(g.items) != len(p.items):
        return False
    return all(eq(x, y) for x, y in zip(g.items, p.items))


def nodes_equal(g: Node, p: Node, scalar_eq: ScalarEq) -> bool:
    """Structural equality of gold `g` and prediction `p` (rules in the module docstring)."""

    def eq(x: Node, y: Node) -> bool:
        return nodes_equal(x, y, scalar_eq)

    g, p = _evaluate_sets(g, eq), _evaluate_sets(p, eq)

    def ordered(xs: list[Node], ys: list[Node]) -> bool:
        return len(xs) == len(ys) and all(eq(x, y) for x, y in zip(xs, ys))

    if g.kind == "scalar" and p.kind == "scalar":
        return scalar_eq(g.text, p.text)
    if "record" in (g.kind, p.kind):
        return _records_equal(g, p, eq)
    if {g.kind, p.kind} == {"matrix", "scalar"} and "\\begin{" in (g.text + p.text):
        return scalar_eq(g.text, p.text)  # a matrix against matrix arithmetic: the symbolic path
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
