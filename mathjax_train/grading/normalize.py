"""LaTeX/string normalization of answers before they are compared.

Only rewrites that cannot change the mathematical meaning live here (spacing, `\\dfrac` -> `\\frac`,
`\\left(` -> `(`, dollar signs); meaning-bearing marks (percent, degrees, units, `x=` prefixes) are
split off into a `Clean` record so the comparison can decide how to use them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .numbers import parse_number

# JSON strings written with single backslashes turn "\tfrac" into TAB+"frac", "\frac" into
# FORMFEED+"rac", etc.  A control character directly followed by a letter is such a casualty.
_CONTROL_ESCAPES = {"\t": "t", "\x0c": "f", "\x08": "b", "\r": "r", "\x07": "a", "\x0b": "v"}
_CONTROL_RE = re.compile("([\t\x0c\x08\r\x07\x0b])(?=[a-z])")
_OVER_ESCAPED_RE = re.compile(
    r"(?<!\\)\\\\(?=(?:[dtc]?frac|boxed|fbox|sqrt|left|right|pi|text\w*|math\w+|cdot|times|div|pm|mp|leq?|geq?"
    r"|neq?|infty|circ|approx|in|cup|cap|setminus|emptyset|varnothing|sin|cos|tan|log|ln|exp|[dt]?binom|dots|ldots"
    r"|cdots|angle|overline|operatorname|displaystyle|begin|end|quad|qquad)(?![a-zA-Z]))"
)

_STRAY_BACKSLASH_RE = re.compile(r"(?<!\\)\\\s*$")
_GROUP_SEPARATOR_RE = re.compile(r"\s*\{\s*,\s*\}\s*|,\s*\\!\s*")
_SPACING_RE = re.compile(r"\\[,:;> ]|\\quad|\\qquad|~|\\hspace\*?\{[^{}]*\}|\\displaystyle|\\mathstrut")
_SIZING_RE = re.compile(r"\\(?:left|right|bigl|bigr|Bigl|Bigr|biggl|biggr|Biggl|Biggr|big|Big|bigg|Bigg)(?![a-zA-Z])")
_FRAC_VARIANTS_RE = re.compile(r"\\[dtc]frac(?![a-zA-Z])")
_BINOM_VARIANTS_RE = re.compile(r"\\[dt]binom(?![a-zA-Z])")
_DEGREE_RE = re.compile(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|°|\\degree|\{\}\^\\circ")
_PERCENT_RE = re.compile(r"\\%|%|\\text\{\s*percent\s*\}|\bpercent\b")
_TEXT_CMD_RE = re.compile(
    r"\\(?:text|textbf|textit|textrm|textsf|texttt|textnormal|mbox|mathrm|mathbf|mathit|mathsf|operatorname|textup"
    r"|rm|bf)\s*\{"
)
CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af"  # kana, CJK ideographs, hangul
_UNIT_CMD = r"\\(?:text|textnormal|textbf|textit|textrm|textsf|mbox|mathrm)"

# Unit words accepted after any quantity ending in a digit (`x = 2 cm`); a bare letter is never a unit.
UNIT_WORDS = {
    "cm",
    "mm",
    "km",
    "m",
    "meter",
    "meters",
    "metre",
    "metres",
    "centimeter",
    "centimeters",
    "inch",
    "inches",
    "in",
    "ft",
    "foot",
    "feet",
    "yard",
    "yards",
    "mile",
    "miles",
    "mph",
    "unit",
    "units",
    "square",
    "sq",
    "cubic",
    "degree",
    "degrees",
    "dollar",
    "dollars",
    "cent",
    "cents",
    "second",
    "seconds",
    "minute",
    "minutes",
    "hour",
    "hours",
    "day",
    "days",
    "week",
    "weeks",
    "year",
    "years",
    "gram",
    "grams",
    "g",
    "kg",
    "gm",
    "pound",
    "pounds",
    "lb",
    "lbs",
    "liter",
    "liters",
    "ml",
    "ways",
    "way",
    "people",
    "students",
    "times",
    "points",
    "month",
    "months",
}
# After a plain number, any word of 3+ letters is taken as a unit (`332 legs`, `5 per hour`) except
# connectives, operator words and number words that scale or divide it (`3 million`, `2 fifths`).
NOT_UNIT_RE = re.compile(
    r"and|or|but|not|nor|plus|minus|over|divided|mod|modulo|choose|squared|cubed|factorial|dozens?"
    r"|hundreds?|thousands?|millions?|billions?|trillions?|halfs?|halves|thirds?|quarters?|[a-z]+ths?",
    re.I,
)


@dataclass
class Clean:
    """A normalized answer: the core text plus the marks that were split off it."""

    text: str
    percent: bool = False
    degree: bool = False


def repair_control_chars(s: str) -> str:
    """Undo JSON-mangled escapes such as TAB+"frac" (from an unescaped "\\tfrac")."""
    return _CONTROL_RE.sub(lambda m: "\\" + _CONTROL_ESCAPES[m.group(1)], s)


def repair_escapes(s: str) -> str:
    """Undo mangled escapes: control characters (above) and over-escaped commands (`\\\\frac` ->
    `\\frac`; a doubled backslash before a command name is never a line break in an answer)."""
    return _OVER_ESCAPED_RE.sub(r"\\", repair_control_chars(s))


def find_group(s: str, i: int, open_ch: str = "{", close_ch: str = "}") -> int:
    """Index just past the group opened at s[i] (an `open_ch`), or -1 if unbalanced."""
    depth = 0
    j = i
    while j < len(s):
        c = s[j]
        if c == "\\":
            j += 2
            continue
        if c == open_ch:
            depth += 1
        elif c == close_ch:
            depth -= 1
            if depth == 0:
                return j + 1
        j += 1
    return -1


def unwrap_text_commands(s: str) -> str:
    """Replace `\\text{abc}` (and \\mbox, \\mathrm, ...) by its content `abc`."""
    for _ in range(50):
        m = _TEXT_CMD_RE.search(s)
        if not m:
            break
        start, brace = m.start(), m.end() - 1
        end = find_group(s, brace)
        if end < 0:
            s = s[:start] + s[brace + 1 :]
            continue
        s = s[:start] + s[brace + 1 : end - 1] + s[end:]
    return s


def strip_outer_math(s: str) -> str:
    """Drop `$...$`, `\\(...\\)`, `\\[...\\]` wrappers, trailing punctuation and spaces."""
    s = s.strip()
    for _ in range(5):
        before = s
        if s.startswith("$$") and s.endswith("$$") and len(s) >= 4:
            s = s[2:-2].strip()
        elif s.startswith("$") and s.endswith("$") and len(s) >= 2:
            s = s[1:-1].strip()
        elif (s.startswith("\\(") and s.endswith("\\)")) or (s.startswith("\\[") and s.endswith("\\]")):
            s = s[2:-2].strip()
        s = re.sub(r"(?:\\text\{\s*[.,;]\s*\}|[.,;]|\\\\)\s*$", "", s).strip()
        if s == before:
            break
    return s


def _is_unit_phrase(words: list[str], quantity: str) -> bool:
    """True when `words` (after `quantity`) name a unit: known unit words after any quantity, or
    3+-letter words that are not `NOT_UNIT_RE` after a plain number (optionally `x = `-labelled)."""
    if all(w.lower() in UNIT_WORDS for w in words):
        return True
    plain = parse_number(re.sub(r"^[a-zA-Z]\s*=\s*", "", quantity)) is not None
    return plain and all(w.lower() in UNIT_WORDS or (len(w) >= 3 and not NOT_UNIT_RE.fullmatch(w)) for w in words)


def _strip_units(s: str) -> str:
    """Remove a trailing unit: a `\\text{...}` after a quantity, or unit words after a number."""
    # `\text{ cm}^2`, `\text{ square units}`, `\mbox{ cm}` after something: drop when a quantity precedes.
    m = re.search(
        rf"^(.*?\S)\s*{_UNIT_CMD}\s*\{{\s*([a-zA-Z][a-zA-Z .\n]*)\}}(\s*\^\s*\{{?\d\}}?)?\s*\.?$",
        s,
        re.S,
    )
    if (
        m
        and re.search(r"[\d}]|\\pi", m.group(1))
        and not re.search(r"\{\s*[ap]\.?\s*m\.?\s*\}", m.group(0), re.I)
        and not any(NOT_UNIT_RE.fullmatch(w) for w in m.group(2).split())
    ):
        s = m.group(1).strip()
    # a unit written in CJK characters after a quantity: "(\frac{2}{5}) 吨", "300分钟"
    m = re.match(rf"^(.*?[\d)}}])\s*[{CJK}]+$", s)
    if m:
        s = m.group(1).strip()
    # unit words after a number, bare or in one text command: "5 cm", "12 square feet", "\text{332 legs}"
    m = re.match(r"^(.*?\d)\s+([a-zA-Z][a-zA-Z ]*?)(\s*\^\s*\{?\d\}?)?\s*$", unwrap_text_commands(s))
    if m and _is_unit_phrase(m.group(2).split(), m.group(1)):
        s = m.group(1).strip()
    return s


def normalize(raw: str) -> Clean:
    """Normalize one answer string; see the module docstring for what is (not) rewritten."""
    s = repair_escapes(str(raw))
    s = _STRAY_BACKSLASH_RE.sub("", s)  # a stray backslash at the end (`185\\`)
    s = _GROUP_SEPARATOR_RE.sub(",", s)  # thousands: `14{,}916`, `11,\\! 111`
    s = s.replace("\n", " ").replace("\\\\", " \\cr ").replace("\\!", "")
    s = _SPACING_RE.sub(" ", s)
    s = _SIZING_RE.sub("", s)
    s = s.replace("\\left.", "").replace("\\right.", "")
    s = _FRAC_VARIANTS_RE.sub(r"\\frac", s)
    s = _BINOM_VARIANTS_RE.sub(r"\\binom", s)
    s = s.replace("\\$", "").replace("$", "")
    s = re.sub(r"\\(?:ge|geq|geqslant)(?![a-zA-Z])", ">=", s)
    s = re.sub(r"\\(?:le|leq|leqslant)(?![a-zA-Z])", "<=", s)
    s = re.sub(r"\\(?:ne|neq)(?![a-zA-Z])", "!=", s)
    s = s.replace("\\lt", "<").replace("\\gt", ">").replace("−", "-").replace("×", "\\times ")
    s = s.replace("\\infty", "\\infty ").replace("∞", "\\infty ")
    degree = bool(_DEGREE_RE.search(s))
    s = _DEGREE_RE.sub("", s)
    if re.search(r"\d\s*\\text\{\s*degrees?\s*\}\s*$", s) or re.search(r"\d\s*degrees?\s*$", s):
        degree = True
        s = re.sub(r"\\text\{\s*degrees?\s*\}\s*$|degrees?\s*$", "", s)
    percent = bool(_PERCENT_RE.search(s))
    s = _PERCENT_RE.sub("", s)
    s = strip_outer_math(s)
    s = _strip_units(s)
    s = re.sub(r"\s+", " ", s).strip()
    s = strip_outer_math(s)
    return Clean(s, percent=percent, degree=degree)


def canonical_text(s: str) -> str:
    """A lower-case, space-free key for comparing textual answers (`\\text{(A)}` -> `a`)."""
    s = unwrap_text_commands(s)
    s = re.sub(r"[\s{}]", "", s).lower()
    s = re.sub(r"^\((.)\)$", r"\1", s)  # multiple-choice "(a)" -> "a"
    return s.rstrip(".")
