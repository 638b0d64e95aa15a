"""Answer phrases ("The answer is", "Final Answer:", "####", "Réponse :", "答案：", ...) and the
reduction of a sentence to the answer it states ("The largest $n$ is 34." -> `34`).

A sentence is reduced only when that is unambiguous: the part after its last copula ("is",
"are", "=", "是", ...), else its last `$...$` math, else its one run of mathematical tokens; two
separate numbers ("3 apples and 4 pears") or a number followed by a scale word ("3 million") are
left as they are.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .delimiters import math_spans
from .normalize import CJK as _CJK
from .normalize import NOT_UNIT_RE

_MARKER_RE = re.compile(
    r"(?:final\s+answer\s+is|answer\s+is|final\s+answer\s*[:：]|answer\s*[:：]|####"
    r"|r[ée]ponse(?:\s+finale)?\s*(?:est|[:：])|respuesta(?:\s+final)?\s*(?:es|[:：])"
    r"|resposta(?:\s+final)?\s*(?:é|[:：])|risposta(?:\s+finale)?\s*(?:è|[:：])"
    r"|antwort\s*(?:ist|lautet|[:：])|ответ\s*(?:[:：]|—)|答案\s*(?:是|为|[:：])|答え\s*(?:は|[:：]))"
    r"\s*(?:[:：]\s*)?",
    re.IGNORECASE,
)
_MARKER_WORDS = ("answer", "####", "ponse", "respuesta", "resposta", "risposta", "antwort", "ответ", "答案", "答え")
_COPULA_RE = re.compile(rf"\s(?:is|are|was|were|equals|est|es|ist|sind|será|sera)\s|=|(?<=[{_CJK}])(?:是|为|等于)")
_WORD_RE = re.compile(r"^[^\W\d_][^\W\d_'’-]*$")
_CONNECTIVES = {"and", "or"}


@dataclass
class Phrase:
    """The text an answer phrase introduces and where the phrase starts."""

    answer: str
    start: int


def _mask_math(s: str) -> str:
    """`s` with its math spans blanked out (same length), so prose rules do not look inside."""
    pieces, last = [], 0
    for start, end, _ in math_spans(s):
        pieces += [s[last:start], " " * (end - start)]
        last = end
    return "".join(pieces) + s[last:]


def words(s: str) -> list[str]:
    """Prose words of `s`: math spans, text commands and LaTeX commands left out; CJK characters each count."""
    s = _mask_math(s)
    s = re.sub(r"\\[a-zA-Z]+\s*(?:\{[^{}]*\})?", " ", s)
    s = re.sub(rf"([{_CJK}])", r" \1 ", s)
    out = []
    for tok in s.split():
        tok = tok.strip(".,;:!?()\"'")
        if _WORD_RE.match(tok) and (len(tok) >= 2 or not tok.isascii()) and tok.lower() not in _CONNECTIVES:
            out.append(tok)
    return out


def is_prose(s: str) -> bool:
    """Two or more words of prose (a sentence rather than an answer)."""
    return len(words(s)) >= 2


def _math_runs(s: str) -> list[tuple[str, str]]:
    """Maximal runs of non-prose tokens in `s`, each with the prose word that follows it ('' if none)."""
    s = re.sub(rf"([{_CJK}])", r" \1 ", s)
    runs: list[tuple[str, str]] = []
    current: list[str] = []
    for tok in s.split():
        bare = tok.strip(".,;:!?\"'")
        if _WORD_RE.match(bare) and (len(bare) >= 2 or not bare.isascii()):
            if current:
                runs.append((" ".join(current), bare))
                current = []
        elif bare not in ("", "$"):
            current.append(tok)
    if current:
        runs.append((" ".join(current), ""))
    return runs


def reduce_sentence(s: str) -> str:
    """The answer a sentence states, or `s` unchanged when it is not a sentence or is ambiguous."""
    if not is_prose(s):
        return s
    masked = _mask_math(s)
    cuts = [m.end() for m in _COPULA_RE.finditer(masked)]
    rest = s[cuts[-1] :].strip() if cuts else s
    if not is_prose(rest):
        return rest.strip(" .。")
    spans = math_spans(rest)
    if spans:
        return spans[-1][2]
    runs = [(r, nxt) for r, nxt in _math_runs(rest) if re.search(r"\d|\\", r)]
    if len(runs) == 1 and not NOT_UNIT_RE.fullmatch(runs[0][1]):
        return runs[0][0].strip(" .,;:。")
    return s


def last_phrase(text: str) -> Phrase | None:
    """What the last answer phrase in `text` introduces: its `$...$` math, else the rest of its
    sentence (to ". " or the end of the line)."""
    lowered = text.lower()
    starts = [i for i in (lowered.find(k) for k in _MARKER_WORDS) if i >= 0]
    if not starts:  # a quick test first: the full pattern is slow to try at every position
        return None
    # start a little before the first keyword ("final ", "ré"); lower() may change lengths, then start at 0
    begin = max(0, min(starts) - 16) if len(lowered) == len(text) else 0
    last = None
    for found in _MARKER_RE.finditer(text, begin):
        last = found
    if last is None:
        return None
    rest = text[last.end() :].split("\n", 1)[0]
    rest = re.sub(r'^\s*\\?["“]', "", rest)
    if rest.lstrip().startswith(("$", "\\(", "\\[")):
        rest = rest.lstrip()
        spans = math_spans(rest)
        if spans and spans[0][0] == 0:
            group = [spans[0]]  # `$12$ and $13$`: math joined by connectives is one answer
            for nxt in spans[1:]:
                if not re.fullmatch(r"\s*,?\s*(?:and|or)?\s*", rest[group[-1][1] : nxt[0]]):
                    break
                group.append(nxt)
            return Phrase(", ".join(content for _, _, content in group), last.start())
    m = re.match(r"(.*?)(?:\.\s|\.$|。|$)", rest)
    return Phrase(m.group(1) if m else rest, last.start())
