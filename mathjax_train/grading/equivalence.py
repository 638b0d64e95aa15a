"""`is_equivalent(gold, pred)`: the dispatcher that decides whether a prediction matches the gold.

Rules (each has tests in tests/test_grading_battery.py):
- Exact values (integers, fractions, radicals, pi, ...) compare exactly: 1000000 != 1000001.
  When either side is written as a decimal with digits after the point (an approximation), a
  relative tolerance applies: |a-b| <= 1e-4*max(|a|,|b|) (Qwen2.5-Math's; numbers.py states the
  policy), also against constants: `3.1416` = `\\pi`, `3.14` != `\\pi`.  There is no absolute
  floor, so 0 matches only an exact 0 and 2^-99 != 2^-98; decimals are never rounded to match
  (0.33 != 1/3).
- Percent: a value written with `%` may be read as p (unit dropped, like `5 cm` = 5) or as p/100;
  a value without `%` has one reading.  So `50%` = `50` = `0.5`... only when one side carries `%`:
  `0.5` never equals gold `50`.  Degrees likewise: `30^\\circ` = `30` = `\\pi/6`.
- Units in `\\text{}`/`\\textnormal{}`/`\\textbf{}`/`\\mbox{}`, unit words after a number (`332 legs`, `5 per
  hour`; see normalize.py for which words) and `\\$` are dropped; bare letters inside expressions
  never are (`a+b+c` != `a+b`), nor connectives or number words (`3 and 4`, `3 million`).
- `x=2` / `f(x)=...` / `AB=4` / `V_1:V_2=11:21` equal their right-hand side (labels.py says what a
  label is); two equations with the same label compare their right sides (`y=2x` != `y=3x`);
  other equations are equal when lhs-rhs of one is a nonzero constant times lhs-rhs of the other
  (`x+1=0` != `x-1=0`, `2x+2=0` = `x+1=0`).  Chains of `=` and `\\approx` read as their final
  side, inequalities over one variable as intervals (notation.py); `x < 1` = `-x > -1` (a
  positive factor keeps the relation, a negative one flips it).
- Structures (tuples, intervals, sets, unions, root lists, labelled lists, matrices, `\\pm`): see
  structures.py; `\\cup`/`\\cap`/`\\setminus` of explicit finite sets equal the set they denote; a
  list that writes one value several ways (`x+11, 11+x`) equals that value.
- Base subscripts are exact: `204_5` equals `204_{5}` only, never `204`.  Times of day compare on
  a 12-hour dial unless both sides give am/pm (`5:00` = `5:00 PM` = `5 pm`, `5:00 PM` != `5:00 AM`).
- Words (`Monday`, `\\text{(A)}` = `A`) compare case-insensitively as text.
- `70,110` reads as the number 70110, and also as the list `70, 110` when the other side is a
  list or set and no group has a leading zero (MATH writes multi-answer golds that way).
- gold may be a list: any acceptable answer matches.  Inputs over MAX_INPUT_CHARS are False.
Plain numbers, text and identical strings are decided in-process; anything needing sympy runs
in a worker process with a hard time limit (timeouts.py), and a timeout counts as not equivalent.
"""

from __future__ import annotations

import re
from fractions import Fraction

from . import numbers as nb
from .labels import canonical_label, is_label
from .normalize import Clean, canonical_text, normalize, unwrap_text_commands
from .notation import final_side, relation_interval
from .structures import Node, nodes_equal, parse_structure, split_top
from .timeouts import count, run_symbolic

MAX_INPUT_CHARS = 2000
DEFAULT_TIMEOUT_S = 5.0
_PI = Fraction("3.14159265358979323846264338327950288419716939937510582097494459")


class NeedsSymbolic(Exception):
    """Raised by the fast path when a comparison needs sympy."""


_PREFIX_RE = re.compile(r"^(?:[a-zA-Z]\s*\\in|\([a-z, ]+\)\s*=|[a-zA-Z]\s*=(?=\s*[(\[\\{]|[^=]*,[^=]*$))\s*")
_WORD_RE = re.compile(r"(?<![\\a-zA-Z])([a-zA-Z]{3,})")
_FUNC_WORDS = {"sin", "cos", "tan", "cot", "sec", "csc", "log", "exp", "arcsin", "arccos", "arctan"}


def _squash(s: str) -> str:
    return re.sub(r"\s+|\{\}", "", s)


def _prep(c: Clean) -> str:
    s = unwrap_text_commands(c.text).strip()
    s = _PREFIX_RE.sub("", s, count=1)
    return s.strip()


def _is_text(s: str) -> bool:
    u = unwrap_text_commands(s).strip()
    if re.fullmatch(r"\(?[A-Z]\)?|\([a-zA-Z]\)", u):
        return True
    if re.fullmatch(r"[A-Za-z][A-Za-z' .-]*[A-Za-z.]", u) and re.search(r"[A-Za-z]{2}", u):
        return True
    return any(w.lower() not in _FUNC_WORDS for w in _WORD_RE.findall(u)) and "\\" not in u


def _split_eq(s: str) -> list[str] | None:
    parts = [p for p in split_top(s, "=")]
    merged: list[str] = []
    for p in parts:  # re-join "<=", ">=", "!=" that the split cut through
        if merged and merged[-1][-1:] in "<>!" and merged[-1]:
            merged[-1] += "=" + p
        else:
            merged.append(p)
    return [p.strip() for p in merged] if len(merged) > 1 else None


_APPROX_RE = re.compile(r"\d?\.\d")
_REL_RE = re.compile(r"(<=|>=|!=|<|>)")
_FLIP = {"<": ">", ">": "<", "<=": ">=", ">=": "<=", "!=": "!="}


def _as_time(s: str):
    t = nb.parse_time(s)
    if t is None and re.fullmatch(r"\d{1,2}", s.strip()) and 1 <= int(s) <= 12:
        t = (int(s) * 60, False)
    return t


def _readings(value, flagged_percent: bool, flagged_degree: bool, pi) -> list:
    out = [value]
    if flagged_percent:
        out.append(value / 100)
    if flagged_degree:
        out.append(value * pi / 180)
    return out


class _Comparer:
    """Scalar equality for one (gold, pred) pair; `symbolic` selects the sympy path."""

    def __init__(self, g: Clean, p: Clean, symbolic: bool):
        self.symbolic = symbolic
        # a mark applies its alternative readings only when the other side lacks it
        self.g_pct, self.p_pct = g.percent and not p.percent, p.percent and not g.percent
        self.g_deg, self.p_deg = g.degree and not p.degree, p.degree and not g.degree

    def __call__(self, a: str, b: str) -> bool:
        a, b = final_side(a.strip()).strip(), final_side(b.strip()).strip()
        if _squash(a) == _squash(b):
            return True
        if not a or not b:
            return False
        ea, eb = _split_eq(a), _split_eq(b)
        if ea or eb:
            return self.equations(ea, eb, a, b)
        if _is_text(a) or _is_text(b):
            return canonical_text(a) == canonical_text(b)
        ta, tb = nb.parse_time(a), nb.parse_time(b)
        if ta or tb:
            ta, tb = ta or _as_time(a), tb or _as_time(b)
            return bool(ta and tb and nb.times_equal(ta, tb))
        ba, bb = nb.parse_base_number(a), nb.parse_base_number(b)
        if ba or bb:
            ba = ba or (re.fullmatch(r"\d+", a) and (a.lstrip("0") or "0", 10))
            bb = bb or (re.fullmatch(r"\d+", b) and (b.lstrip("0") or "0", 10))
            return bool(ba and bb and ba == bb)
        ra, rb = _REL_RE.split(a), _REL_RE.split(b)
        if len(ra) > 1 or len(rb) > 1:
            return self.relations(ra, rb)
        return self.values(a, b)

    def equations(self, ea, eb, a: str, b: str) -> bool:
        if ea and eb:
            if len(ea) != 2 or len(eb) != 2:
                return False
            if is_label(ea[0]) and is_label(eb[0]):
                return canonical_label(ea[0]) == canonical_label(eb[0]) and self(ea[1], eb[1])
            if not self.symbolic:
                raise NeedsSymbolic
            from . import symbolic as sy

            try:
                da = sy.latex_to_sympy(ea[0]) - sy.latex_to_sympy(ea[1])
                db = sy.latex_to_sympy(eb[0]) - sy.latex_to_sympy(eb[1])
            except (sy.ParseError, ZeroDivisionError, TypeError):
                return False
            return sy.proportional(da, db)
        eq, other = (ea, b) if ea else (eb, a)
        if len(eq) != 2 or not is_label(eq[0]):
            return False
        return self(eq[1], other) if ea else self(other, eq[1])

    def relations(self, ra: list[str], rb: list[str]) -> bool:
        if len(ra) != len(rb):
            return False
        flipped = [_FLIP.get(x, x) for x in reversed(rb)]  # allow "a < b" == "b > a"
        for side in (rb, flipped):
            if ra[1::2] == side[1::2] and all(self(x, y) for x, y in zip(ra[0::2], side[0::2])):
                return True
        if len(ra) != 3:
            return False
        if not self.symbolic:
            raise NeedsSymbolic
        from . import symbolic as sy

        try:  # "x < 1" == "-x > -1": a - b and c - d differ by a positive factor (or a negative one, flipped)
            ratio = sy.constant_ratio(
                sy.latex_to_sympy(ra[0]) - sy.latex_to_sympy(ra[2]), sy.latex_to_sympy(rb[0]) - sy.latex_to_sympy(rb[2])
            )
        except (sy.ParseError, ZeroDivisionError, TypeError, ValueError):
            return False
        if ratio is None or ratio == 0:
            return False
        return ra[1] == (rb[1] if ratio > 0 else _FLIP[rb[1]])

    def values(self, a: str, b: str) -> bool:
        na, nb_ = nb.parse_number(a), nb.parse_number(b)
        approx = bool(_APPROX_RE.search(a) or _APPROX_RE.search(b))
        if na is not None and nb_ is not None:
            return any(
                (nb.numbers_close(x, y) if approx else x == y)
                for x in _readings(na, self.g_pct, self.g_deg, _PI)
                for y in _readings(nb_, self.p_pct, self.p_deg, _PI)
            )
        if not self.symbolic:
            raise NeedsSymbolic
        from . import symbolic as sy
        import sympy as sp

        try:
            xa = sp.Rational(na.numerator, na.denominator) if na is not None else sy.latex_to_sympy(a)
            xb = sp.Rational(nb_.numerator, nb_.denominator) if nb_ is not None else sy.latex_to_sympy(b)
        except (sy.ParseError, ZeroDivisionError, TypeError, ValueError):
            return False
        return any(
            sy.expressions_equal(x, y, approximate=approx)
            for x in _readings(xa, self.g_pct, self.g_deg, sp.pi)
            for y in _readings(xb, self.p_pct, self.p_deg, sp.pi)
        )


def compare_answers(gold: str, pred: str, symbolic: bool) -> bool:
    """Compare one gold string with one prediction; raises NeedsSymbolic when `symbolic` is False
    and the answer cannot be decided without sympy."""
    g, p = normalize(gold), normalize(pred)
    gs, ps = _prep(g), _prep(p)
    if not gs or not ps:
        return False
    if _squash(gs) == _squash(ps):
        return True
    comparer = _Comparer(g, p, symbolic)
    gn, pn = _intervals_for_relations(parse_structure(gs), parse_structure(ps))
    if nodes_equal(gn, pn, comparer):
        return True
    gl, pl = _comma_list(gs, pn), _comma_list(ps, gn)
    if (gl is not None and nodes_equal(gl, pn, comparer)) or (pl is not None and nodes_equal(gn, pl, comparer)):
        return True
    g1, p1 = _one_value(gn, pn, comparer), _one_value(pn, gn, comparer)
    return (g1 is not None and nodes_equal(g1, pn, comparer)) or (p1 is not None and nodes_equal(gn, p1, comparer))


def _one_value(n: Node, other: Node, comparer) -> Node | None:
    """A list that writes one value several ways (`x+11, 11+x`; `\\frac{25}{13}, 1\\frac{12}{13}`) read
    as that value, when the other side is a single value."""
    if other.kind != "scalar" or n.kind != "list" or len(n.items) < 2:
        return None
    first = n.items[0]
    return first if all(nodes_equal(first, x, comparer) for x in n.items[1:]) else None


def _intervals_for_relations(g: Node, p: Node) -> tuple[Node, Node]:
    """An inequality over one label against an interval or union: read the inequality as an interval."""
    interval_like = ("tuple", "union")
    if g.kind == "scalar" and p.kind in interval_like:
        g = relation_interval(g.text) or g
    elif p.kind == "scalar" and g.kind in interval_like:
        p = relation_interval(p.text) or p
    return g, p


_GROUPED_RE = re.compile(r"^-?\d{1,3}(?:,\d{3})+$")


def _comma_list(s: str, other: Node) -> Node | None:
    """`70,110` as the list 70, 110, when `other` is a list/set and every group is a plain integer."""
    if other.kind not in ("list", "set") or not _GROUPED_RE.match(s):
        return None
    parts = s.split(",")
    if any(len(x.lstrip("-")) > 1 and x.lstrip("-").startswith("0") for x in parts):
        return None
    return Node("list", items=[Node("scalar", x) for x in parts])


def is_equivalent(gold, pred, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> bool:
    """True when `pred` is a correct answer for `gold` (a string, or a list of acceptable strings).

    Never raises; returns within about `timeout_s` per gold alternative plus worker start-up.
    """
    try:
        if isinstance(gold, (list, tuple)):
            return any(is_equivalent(g, pred, timeout_s=timeout_s) for g in gold[:20])
        if gold is None or pred is None:
            return False
        gold, pred = str(gold), str(pred)
        if gold.strip() and gold.strip() == pred.strip():
            return True
        if len(gold) > MAX_INPUT_CHARS or len(pred) > MAX_INPUT_CHARS:
            return False
        try:
            verdict = compare_answers(gold, pred, symbolic=False)
            count("fast")
            return verdict
        except NeedsSymbolic:
            pass
        return run_symbolic(gold, pred, timeout_s)
    except Exception:  # a grader bug must not crash a training or eval loop; it is counted
        count("errors")
        return False
