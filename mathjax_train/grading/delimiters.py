"""Where the math and the brace groups of a completion are, each found in one linear pass.

Completions can be long and hostile (thousands of unclosed `\\[` or `\\boxed{`); a regular
expression or a scan per opener would take quadratic time on them, these scans do not.
"""

from __future__ import annotations

import re

_BRACE_TOKEN_RE = re.compile(r"\\.|[{}]", re.S)


def math_spans(text: str) -> list[tuple[int, int, str]]:
    """(start, end, content) of every `$$..$$`, `\\[..\\]` (may span lines), `$..$` and `\\(..\\)`
    (one line), left to right; `\\$` is an escaped dollar, never a delimiter."""
    out: list[tuple[int, int, str]] = []
    n, i = len(text), 0
    absent_from: dict[str, int] = {}  # closer -> it does not occur in [that position, its stop)
    absent_stop: dict[str, int] = {}
    newline = -1  # the next newline at or after i (n when none)

    def find(closer: str, start: int, stop: int) -> int:
        if absent_from.get(closer, n + 1) <= start and absent_stop[closer] == stop:
            return -1
        j = text.find(closer, start, stop)
        if j < 0:
            absent_from[closer], absent_stop[closer] = start, stop
        return j

    while i < n:
        c = text[i]
        if c == "$" and text.startswith("$$", i):
            j = find("$$", i + 2, n)
            if j >= 0:
                out.append((i, j + 2, text[i + 2 : j].strip()))
                i = j + 2
                continue
        elif c == "\\" and i + 1 < n and text[i + 1] in "([":
            if newline < i:
                newline = text.find("\n", i)
                newline = n if newline < 0 else newline
            closer = "\\]" if text[i + 1] == "[" else "\\)"
            j = find(closer, i + 2, n if closer == "\\]" else newline)
            if j >= 0:
                out.append((i, j + 2, text[i + 2 : j].strip()))
                i = j + 2
                continue
            i += 2
            continue
        elif c == "\\":
            i += 2
            continue
        elif c == "$":
            j = i + 1
            while j < n and text[j] not in "$\n":
                j += 2 if text[j] == "\\" else 1
            if j < n and text[j] == "$" and j > i + 1:
                out.append((i, j + 1, text[i + 1 : j].strip()))
                i = j + 1
                continue
        i += 1
    return out


def brace_pairs(text: str, start: int = 0) -> dict[int, int]:
    """Index of each `{` from `start` on -> index just past its matching `}` (unmatched ones left
    out); a backslash escapes the character after it.  Text before `start` cannot change the pairs
    after it, so callers start at the first brace they care about."""
    pairs: dict[int, int] = {}
    stack: list[int] = []
    for m in _BRACE_TOKEN_RE.finditer(text, start):
        c = m.group(0)
        if c == "{":
            stack.append(m.start())
        elif c == "}" and stack:
            pairs[stack.pop()] = m.end()
    return pairs
