"""`\\boxed{...}` answers in a text and the policies that choose among several of them.

Policies: `last` (the last box), `all` (every distinct box, in order), `group` (the last box
together with the boxes just before it that only connectives separate: `\\boxed{1} and
\\boxed{2}`, `\\boxed{(2, 2)} \\quad \\text{and} \\quad \\boxed{(6, 2)}`, `y_1 = \\boxed{..}, y_2 =
\\boxed{..}`).  A sentence end, a word that starts a new statement ("then", "so", "wait", ...),
a digit or more than three other words between two boxes ends the group.  A box left open (a
completion cut off inside it) is skipped: its content may be a prefix of the answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .delimiters import brace_pairs

POLICIES = ("last", "all", "group")
_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![a-zA-Z])")

# between two boxes of one group: math delimiters, spacing, punctuation, `\text{ and }`, labels
# (`y_2 =`), part markers (`(a)`), decorative rules (`++++`) and connective words
_GAP_NOISE_RE = re.compile(
    r"\\[()\[\]]|\$|\\q?quad|\\[,;: !]|~|\\text(?:rm|normal)?\s*\{|[{}]|[,;&]|\\\\|"
    r"[A-Za-z](?:_\{?\w+\}?)?\s*=|\([a-z]\)|([-+*=_~])\1\1+|\s+"
)
_CONNECTIVES = {"and", "or", "also", "et", "ou", "und", "oder", "y", "o", "和", "或"}
# words that start a new statement: a box after them is a new answer, not a part of the same one
_CLAUSE_WORDS = {
    "then",
    "thus",
    "so",
    "but",
    "hence",
    "therefore",
    "however",
    "wait",
    "because",
    "since",
    "which",
    "where",
    "if",
    "when",
    "now",
    "next",
    "finally",
    "actually",
    "check",
    "not",
    "instead",
    "otherwise",
    "alternatively",
}
MAX_GAP_CHARS = 60
MAX_GAP_WORDS = 3
MAX_GROUP = 40  # boxes in one group (a list answer is never longer: structures.MAX_ITEMS)


@dataclass
class Box:
    """One box: its content and where it sits in the text."""

    content: str
    start: int
    end: int


def find_boxes(text: str) -> list[Box]:
    """Every `\\boxed{...}`, `\\boxed X` and `\\fbox{...}`, in order of appearance."""
    out = []
    found = list(_BOX_RE.finditer(text))
    pairs = brace_pairs(text, found[0].start()) if found else {}
    for m in found:
        i = m.end()
        while i < len(text) and text[i] == " ":
            i += 1
        if i < len(text) and text[i] == "{":
            end = pairs.get(i, -1)
            if end < 0:
                continue
            out.append(Box(text[i + 1 : end - 1].strip(), m.start(), end))
        elif i > m.end():  # "\boxed 5": the argument runs to the next space or `$`
            arg = re.match(r"[^\s$]+", text[i:])
            if arg:
                out.append(Box(arg.group(0).rstrip(".,"), m.start(), i + arg.end()))
    return [b for b in out if b.content]


def _joins(gap: str) -> bool:
    """True when the text between two boxes only connects them (no sentence in between)."""
    if len(gap) > MAX_GAP_CHARS or re.search(r"[.!?](?:\s|$)|\n\s*\n", gap):
        return False
    words = [w for w in _GAP_NOISE_RE.sub(" ", gap).split() if w.lower() not in _CONNECTIVES]
    if any(w.lower().strip(",:;") in _CLAUSE_WORDS for w in words):
        return False
    return len(words) <= MAX_GAP_WORDS and not any(re.search(r"\d", w) for w in words)


def choose(text: str, boxes: list[Box], policy: str) -> list[Box]:
    """The boxes that make up the answer under `policy` (see the module docstring)."""
    if not boxes:
        return []
    if policy == "last":
        return boxes[-1:]
    if policy == "all":
        return boxes
    group = [boxes[-1]]
    for prev in reversed(boxes[:-1]):
        if len(group) >= MAX_GROUP or not _joins(text[prev.end : group[0].start]):
            break
        group.insert(0, prev)
    return group
