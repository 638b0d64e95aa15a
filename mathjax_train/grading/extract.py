"""`extract_answer(text)`: pull the final answer out of a model completion or a reference solution.

Order of preference: `\\boxed{...}` / `\\boxed X` / `\\fbox{...}` (brace-balanced); else the
last of the phrases "The (final) answer is", "#### ", "Final Answer:"; else, only with
`fallback="last_number"` (GSM8K-style data), the last number in the text.  Markdown bold, `$`
wrappers and trailing punctuation are removed from the result.

Several boxes: `boxed="last"` (default) returns the last one; `boxed="all"` returns every
distinct boxed answer, in order, joined with ", " (so a solution boxing 3 and -3 yields "3, -3",
which the grader compares with a gold "3, -3" or "-3, 3" as an unordered list).
"""

from __future__ import annotations

import re

from .normalize import find_group, repair_control_chars, strip_outer_math

_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![a-zA-Z])")
_MARKER_RE = re.compile(
    r"(?:the\s+final\s+answer\s+is|the\s+answer\s+is|final\s+answer\s*:|answer\s*:|####)\s*(?::\s*)?", re.IGNORECASE
)
_NUMBER_RE = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?|-?\.\d+")


def boxed_contents(text: str) -> list[str]:
    """Contents of every `\\boxed{...}`, `\\boxed X` and `\\fbox{...}`, in order of appearance."""
    out = []
    for m in _BOX_RE.finditer(text):
        i = m.end()
        while i < len(text) and text[i] == " ":
            i += 1
        if i < len(text) and text[i] == "{":
            end = find_group(text, i)
            if end < 0:
                continue
            out.append(text[i + 1 : end - 1].strip())
        elif i > m.end():  # "\boxed 5": the argument runs to the next space or `$`
            arg = re.match(r"[^\s$]+", text[i:])
            if arg:
                out.append(arg.group(0).rstrip(".,"))
    return out


def _clean(ans: str) -> str:
    ans = ans.strip()
    ans = re.sub(r"\s*I hope it is correct\.?\s*$", "", ans, flags=re.I)
    for _ in range(3):
        before = ans
        ans = re.sub(r"^\*\*(.*)\*\*$", r"\1", ans, flags=re.S).strip()
        ans = re.sub(r"^__(.*)__$", r"\1", ans, flags=re.S).strip()
        ans = strip_outer_math(ans)
        ans = ans.strip("* ")
        if ans == before:
            break
    return ans


def _after_marker(text: str) -> str | None:
    last = None
    for found in _MARKER_RE.finditer(text):
        last = found
    if last is None:
        return None
    rest = text[last.end() :]
    rest = rest.split("\n", 1)[0]
    inner = boxed_contents(rest)
    if inner:
        return inner[-1]
    # the sentence ends at ". " (not a decimal point) or at the end of the line
    if rest.lstrip().startswith("$"):
        m = re.match(r"\s*\$\$?(.+?)\$", rest)
        if m:
            return m.group(1)
    m = re.match(r"(.*?)(?:\.\s|\.$|$)", rest)
    return m.group(1) if m else rest


def extract_answer(text, *, boxed: str = "last", fallback: str | None = None) -> str | None:
    """The final answer in `text`, or None.

    boxed: "last" (the last box) or "all" (distinct boxes joined with ", ").
    fallback: None (default; MATH-style data must box or state the answer) or "last_number".
    """
    if not isinstance(text, str) or not text.strip():
        return None
    if boxed not in ("last", "all"):
        raise ValueError(f"boxed must be 'last' or 'all', not {boxed!r}")
    if fallback not in (None, "last_number"):
        raise ValueError(f"fallback must be None or 'last_number', not {fallback!r}")
    text = repair_control_chars(text)
    boxes = [b for b in boxed_contents(text) if b]
    if boxes:
        if boxed == "last":
            return _clean(boxes[-1])
        distinct: list[str] = []
        for b in boxes:
            if _clean(b) not in distinct:
                distinct.append(_clean(b))
        return ", ".join(distinct)
    found = _after_marker(text)
    if found is not None and _clean(found):
        return _clean(found)
    if fallback == "last_number":
        numbers = _NUMBER_RE.findall(text)
        if numbers:
            return numbers[-1].rstrip(",")
    return None
