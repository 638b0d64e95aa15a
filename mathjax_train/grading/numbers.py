"""Exact parsing and comparison of plain numbers (the in-process fast path, no sympy).

Accepted forms: integers (with `1,000` thousands groups), decimals, scientific notation (`1.5e3`,
`1.5\\times10^{3}`), fractions (`\\frac{3}{4}`, `\\frac34`, `3/4`) and mixed numbers (`2\\frac{1}{3}`
= 7/3).  Values are exact `Fraction`s; exponents and digit counts are bounded so that nothing here
can take long.

Tolerance policy (the one the whole grader uses, sympy path included): exact values compare
exactly; when either side is written as a decimal with digits after the point (an approximation),
the two values match when |a-b| <= REL_TOL * max(|a|,|b|) with REL_TOL = 1e-4, the relative
tolerance of Qwen2.5-Math's `math_equal` (`isclose(rel_tol=1e-4)`).  This holds for decimals
against exact constants too: `3.1416` = `\\pi` and `6.2832` = `2\\pi` (relative error 2e-6), while
`3.14` != `\\pi` and `6.28` != `2\\pi` (5e-4).  There is no absolute floor (0 matches only 0) and
decimals are never rounded to match (`0.33` != 1/3, `0.3333` = 1/3).
"""

from __future__ import annotations

import re
from fractions import Fraction

MAX_DIGITS = 400
MAX_EXPONENT = 400
REL_TOL = Fraction(1, 10**4)  # see the tolerance policy above

_INT = r"(?:\d{1,3}(?:,\d{3})+|\d+)"
_DEC = rf"(?:{_INT}(?:\.\d*)?|\.\d+)"
_DECIMAL_RE = re.compile(rf"^([+-]?)\s*({_DEC})$")
_SCI_E_RE = re.compile(rf"^([+-]?)\s*({_DEC})\s*[eE]\s*([+-]?\d+)$")
_SCI_TIMES_RE = re.compile(rf"^([+-]?)\s*(?:({_DEC})\s*(?:\\times|\\cdot|\*|x)\s*)?10\s*\^\s*\{{?\s*([+-]?\d+)\s*\}}?$")
_FRAC_RE = re.compile(r"^([+-]?)\s*\\frac\s*(?:\{\s*([+-]?\s*[\d.]+)\s*\}|(\d))\s*(?:\{\s*([+-]?\s*[\d.]+)\s*\}|(\d))$")
_SLASH_RE = re.compile(rf"^([+-]?)\s*\(?\s*({_DEC})\s*\)?\s*/\s*\(?\s*({_DEC})\s*\)?$")
_MIXED_RE = re.compile(r"^([+-]?)\s*(\d+)\s*\\frac\s*(?:\{\s*(\d+)\s*\}|(\d))\s*(?:\{\s*(\d+)\s*\}|(\d))$")
_PAREN_RE = re.compile(r"^\(\s*([^()]*)\s*\)$|^\{\s*([^{}]*)\s*\}$")


def _decimal(text: str) -> Fraction | None:
    digits = text.replace(",", "")
    if len(digits) > MAX_DIGITS:
        return None
    if digits.endswith("."):
        digits = digits[:-1]
    return Fraction(digits) if digits else None


def _signed_decimal(text: str) -> Fraction | None:
    text = text.replace(" ", "")
    sign, body = (text[0], text[1:]) if text[:1] in "+-" else ("", text)
    return _signed(sign, _decimal(body)) if re.fullmatch(_DEC, body) else None


def _signed(sign: str, value: Fraction | None) -> Fraction | None:
    if value is None:
        return None
    return -value if sign == "-" else value


def parse_number(s: str) -> Fraction | None:
    """The exact value of a plain number written in one of the accepted forms, else None."""
    s = s.strip()
    if not s or len(s) > MAX_DIGITS + 40:
        return None
    m = _PAREN_RE.match(s)
    if m:  # "(5)" or "{5}" as a whole answer
        return parse_number(m.group(1) if m.group(1) is not None else m.group(2))
    m = _DECIMAL_RE.match(s)
    if m:
        return _signed(m.group(1), _decimal(m.group(2)))
    m = _SCI_E_RE.match(s)
    if m:
        return _scaled(m.group(1), m.group(2), m.group(3))
    m = _SCI_TIMES_RE.match(s)
    if m:
        return _scaled(m.group(1), m.group(2) or "1", m.group(3))
    m = _MIXED_RE.match(s)
    if m:
        whole, top, bottom = int(m.group(2)), int(m.group(3) or m.group(4)), int(m.group(5) or m.group(6))
        if bottom == 0 or top >= bottom:  # "2\frac{5}{3}" is a product, not a mixed number
            return None
        return _signed(m.group(1), whole + Fraction(top, bottom))
    m = _FRAC_RE.match(s)
    if m:
        num = _signed_decimal(m.group(2) or m.group(3))
        den = _signed_decimal(m.group(4) or m.group(5))
        if num is None or not den:
            return None
        return _signed(m.group(1), num / den)
    m = _SLASH_RE.match(s)
    if m:
        num, den = _decimal(m.group(2)), _decimal(m.group(3))
        if num is None or not den:
            return None
        return _signed(m.group(1), num / den)
    return None


def _scaled(sign: str, mantissa: str, exponent: str) -> Fraction | None:
    e = int(exponent)
    if abs(e) > MAX_EXPONENT:
        return None
    base = _decimal(mantissa)
    if base is None:
        return None
    return _signed(sign, base * Fraction(10) ** e)


def numbers_close(a: Fraction, b: Fraction) -> bool:
    """|a-b| <= REL_TOL * max(|a|,|b|): relative only, so 0 matches only 0 and 2^-99 != 2^-98.

    Used only when a side is a decimal approximation; exact values are compared with ==."""
    return abs(a - b) <= REL_TOL * max(abs(a), abs(b))


_BASE_RE = re.compile(r"^([0-9A-Za-z]+)\s*_\s*\{?\s*\(?(\d+)\)?\s*\}?$")


def parse_base_number(s: str) -> tuple[str, int] | None:
    """`204_5` / `152A_{11}` -> (digits upper-cased without leading zeros, base); None otherwise."""
    m = _BASE_RE.match(s.strip())
    if not m:
        return None
    digits, base = m.group(1).upper().lstrip("0") or "0", int(m.group(2))
    if not 2 <= base <= 36:
        return None
    try:
        int(digits, base)
    except ValueError:
        return None
    return digits, base


_TIME_RE = re.compile(r"^(\d{1,2})(?::(\d{2}))?\s*(a\.?\s*m\.?|p\.?\s*m\.?)?$", re.I)


def parse_time(s: str) -> tuple[int, bool] | None:
    """A time of day -> (minutes after midnight, has_am_pm); requires `h:mm` or an am/pm mark."""
    m = _TIME_RE.match(s.strip())
    if not m or (m.group(2) is None and m.group(3) is None):
        return None
    hour, minute = int(m.group(1)), int(m.group(2) or 0)
    if hour > 24 or minute > 59:
        return None
    mark = (m.group(3) or "").lower().replace(".", "").replace(" ", "")
    if mark:
        if not 1 <= hour <= 12:
            return None
        hour = hour % 12 + (12 if mark == "pm" else 0)
    return hour * 60 + minute, bool(mark)


def times_equal(a: tuple[int, bool], b: tuple[int, bool]) -> bool:
    """Equal clock times; when either side lacks am/pm, compare on a 12-hour dial."""
    if a[1] and b[1]:
        return a[0] == b[0]
    return a[0] % 720 == b[0] % 720
