"""`extract_answer(text)`: pull the final answer out of a model completion or a reference solution.

Order of preference:
1. `\\boxed{...}` / `\\boxed X` / `\\fbox{...}` (brace-balanced; policy for several boxes in
   boxes.py), or an answer phrase ("The (final) answer is", "Final Answer:", "####", and the same
   in French, Spanish, Portuguese, Italian, German, Russian, Chinese, Japanese; see phrases.py),
   whichever comes last in the text; a phrase that states no value ("our answer is correct") never
   beats a box.
   A phrase followed by a sentence is reduced to the answer it states ("Final Answer: The largest
   $n$ is 34." -> `34`).
2. A text that is nothing but an answer (one short line, no words but units): the text itself.
3. The last `$...$` / `$$...$$` / `\\(...\\)` / `\\[...\\]` math (with the math "and"/"or" joins to
   it: `$1$, $2$ and $3$`), or with `fallback="last_number"` (GSM8K-style data) the last number,
   whichever comes last.
Markdown bold, `$` wrappers and trailing punctuation are removed from the result.
"""

from __future__ import annotations

import re

from . import boxes as bx
from .delimiters import math_spans
from .normalize import UNIT_WORDS, repair_escapes, strip_outer_math
from .phrases import is_prose, last_phrase, reduce_sentence, words

DEFAULT_BOXED = "group"
MAX_BARE_CHARS = 80
_BARE_WORDS = UNIT_WORDS | {"percent", "pct", "percentage"}
_BARE_RE = re.compile(r"[\w .,+\-*/^=()\[\]{}<>|:;%$\\'!&]+", re.ASCII)
_NUMBER_RE = re.compile(r"(?<![A-Za-z0-9_.])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?|(?<![A-Za-z0-9_.])-?\.\d+")


def _clean(ans: str) -> str:
    ans = ans.strip()
    hope = re.search(r"I hope it is correct\.?\s*$", ans, flags=re.I)
    ans = ans[: hope.start()].rstrip() if hope else ans
    for _ in range(3):
        before = ans
        ans = re.sub(r"^\*\*(.*)\*\*$", r"\1", ans, flags=re.S).strip()
        ans = re.sub(r"^__(.*)__$", r"\1", ans, flags=re.S).strip()
        ans = re.sub(r'^\\?["“](.*?)\\?["”]$', r"\1", ans, flags=re.S).strip()
        ans = strip_outer_math(ans)
        ans = ans.strip("* ")
        if ans == before:
            break
    return ans


def _bare(text: str) -> str | None:
    """`text` itself when it is only an answer: one short line of ASCII math with a digit or a
    command, math delimiters only around it, no words but units (`28 percent`, `\\frac{1}{3}`)."""
    if len(text) > 4 * MAX_BARE_CHARS:
        return None
    t = _clean(text)
    if not t or len(t) > MAX_BARE_CHARS or not _BARE_RE.fullmatch(t) or not re.search(r"[\d\\]", t):
        return None
    if re.search(r"(?<!\\)\$|\\[(\[]|\\boxed|\\fbox", t):
        return None
    if any(w.lower() not in _BARE_WORDS for w in words(t)):
        return None
    return t


def _math_group(text: str, spans: list[tuple[int, int, str]]) -> str:
    """The last math span, with the spans before it when "and"/"or" joins them (`$1$, $2$ and $3$`)."""
    group = [spans[-1]]
    for prev in reversed(spans[:-1]):
        m = re.fullmatch(r"\s*,?\s*(and|or)?\s*", text[prev[1] : group[0][0]])
        word_needed = len(group) == 1  # the last two spans must be joined by "and"/"or", not a bare comma
        if not m or (word_needed and not m.group(1)) or len(group) >= bx.MAX_GROUP:
            break
        group.insert(0, prev)
    return ", ".join(_clean(reduce_sentence(content)) for _, _, content in group)


def _states_a_value(s: str) -> bool:
    """A phrase's answer that can overrule an earlier box: a value, not words ("our answer is correct")."""
    return not is_prose(s) and bool(re.search(r"[\d\\]", s))


def _joined(chosen: list[bx.Box]) -> str:
    distinct: list[str] = []
    for b in chosen:
        cleaned = _clean(b.content)
        if cleaned not in distinct:
            distinct.append(cleaned)
    return ", ".join(distinct)


def extract_answer(text, *, boxed: str = DEFAULT_BOXED, fallback: str | None = None) -> str | None:
    """The final answer in `text`, or None.

    boxed: "group" (default: the last box with the boxes that only connectives join to it),
    "last" (the last box) or "all" (every distinct box); several boxes are joined with ", ".
    fallback: None (default; MATH-style data must box, state or typeset the answer) or "last_number".
    """
    if not isinstance(text, str) or not text.strip():
        return None
    if boxed not in bx.POLICIES:
        raise ValueError(f"boxed must be one of {bx.POLICIES}, not {boxed!r}")
    if fallback not in (None, "last_number"):
        raise ValueError(f"fallback must be None or 'last_number', not {fallback!r}")
    text = repair_escapes(text)
    chosen = bx.choose(text, bx.find_boxes(text), boxed)
    phrase = last_phrase(text)
    if phrase is not None and (not chosen or phrase.start > chosen[-1].end):
        stated = _clean(reduce_sentence(phrase.answer))
        if stated and (not chosen or _states_a_value(stated)):
            return stated
    if chosen:
        return _joined(chosen)
    bare = _bare(text)
    if bare is not None:
        return bare
    candidates = []  # (end position, answer)
    spans = [s for s in math_spans(text) if re.search(r"[^\s.,;:]", s[2])]
    if spans:
        candidates.append((spans[-1][1], _math_group(text, spans)))
    if fallback == "last_number":
        numbers = list(_NUMBER_RE.finditer(text))
        if numbers:
            candidates.append((numbers[-1].end(), numbers[-1].group(0).rstrip(",")))
    candidates = [c for c in candidates if c[1]]
    return max(candidates)[1] if candidates else None
