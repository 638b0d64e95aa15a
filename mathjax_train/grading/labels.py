"""Labels: the names an answer may put before `=` (`x = 2`, `AB = 4`, `|AB| = 1`, `V_1:V_2 = 11:21`).

A label is a name, never a computation: a letter with optional subscript and primes, a Greek
letter, a segment (`AB`), `|AB|`, `\\angle ABC`, `f(x)`, a ratio or quotient of names (`V_1:V_2`,
`\\frac{NO}{BO}`); `x+1` or `2x` is not.  `x = 2` answers what `2` answers; two labelled answers
must have the same label.
"""

from __future__ import annotations

import re

from .brackets import split_top

_GREEK = (
    r"\\(?:alpha|beta|gamma|delta|epsilon|varepsilon|zeta|eta|theta|vartheta|kappa|lambda|mu|nu|xi|rho|sigma|tau|phi"
    r"|varphi|chi|psi|omega|Gamma|Delta|Theta|Lambda|Sigma|Phi|Psi|Omega)"
)
_NAME = rf"(?:[A-Za-z](?:_\{{?[\w,]+\}}?)?'*|{_GREEK}(?:_\{{?\w+\}}?)?|[A-Z]{{2,4}})"
_ATOM = (
    rf"(?:{_NAME}|\|[A-Z]{{1,4}}\||\\angle\s*[A-Z]{{1,3}}|m\s*\\angle\s*[A-Z]{{1,3}}|[a-zA-Z]\s*\(\s*[a-zA-Z]\s*\)"
    r"|\\frac\{[A-Z]{1,4}\}\{[A-Z]{1,4}\})"
)
LABEL_RE = re.compile(rf"^{_ATOM}(?:\s*:\s*{_ATOM})*$")


def is_label(s: str) -> bool:
    return bool(LABEL_RE.match(s.strip()))


def canonical_label(s: str) -> str:
    """`a_{3}` and `a_3` name the same thing."""
    return re.sub(r"[\s{}]", "", s)


def split_label(s: str) -> tuple[str | None, str]:
    """(`L`, `v`) for `L = v` with `L` a label, else (None, s)."""
    if "=" not in s:
        return None, s
    parts = split_top(s, "=")
    if len(parts) == 2 and parts[0].strip()[-1:] not in "<>!" and is_label(parts[0]):
        return parts[0].strip(), parts[1].strip()
    return None, s
