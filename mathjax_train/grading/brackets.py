"""Bracket depth in answer text: splitting at the top level and finding where a bracket closes.

`(`, `[`, `{`, `\\{`, `\\begin` open and `)`, `]`, `}`, `\\}`, `\\end` close; an interval such as `[0, 1)`
mixes them, so any closer closes any opener.
"""

from __future__ import annotations

_OPEN = "([{"
_CLOSE = ")]}"


def depth_scan(s: str):
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
    for i, _c, depth in depth_scan(s):
        if depth == 0 and s.startswith(sep, i):
            parts.append(s[last:i])
            last = i + len(sep)
    parts.append(s[last:])
    return parts


def closes_at_end(s: str) -> bool:
    """True when the bracket opened at s[0] is closed by the last character."""
    for i, _c, depth in depth_scan(s):
        if depth == 0:
            return i == len(s) - 1 or (s.startswith("\\}", i) and i == len(s) - 2)
    return False
