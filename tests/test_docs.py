"""The README stays short and reaches every docs page in one click; links in the README, docs/ and
benchmarks/RESULTS.md point at files that exist; none of them narrates how the project was developed."""

import re

import pytest

from train_helpers import REPO

README = REPO / "README.md"
DOCS = sorted((REPO / "docs").glob("*.md"))
PAGES = [README, *DOCS, REPO / "benchmarks" / "RESULTS.md"]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
NARRATION = [  # phrases about the project's history, not about what it does
    "this stop",
    "previous stop",
    "the last stop",
    "next stop",
    "lent to",
    "lent for",
    "was lent",
    "were lent",
    "this session",
    "previous session",
    "last session",
    "we fixed",
    "previous machine",
]


def _prose(text: str) -> str:
    """The text without fenced code blocks, whose brackets are not links."""
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def test_readme_is_short():
    lines = README.read_text().count("\n")
    assert lines <= 260, f"README.md has {lines} lines; move detail to docs/"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_point_at_files(page):
    broken = []
    for target in LINK.findall(_prose(page.read_text())):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue  # a web address or an anchor in the same page
        path = target.split("#")[0]
        if not (page.parent / path).exists():
            broken.append(target)
    assert not broken, f"{page.relative_to(REPO)} links to missing files: {broken}"


def test_no_development_narration():
    found = []
    patterns = [(p, re.compile(rf"\b{re.escape(p)}\b", re.I)) for p in NARRATION]
    for page in PAGES:
        for number, line in enumerate(page.read_text().splitlines(), 1):
            found += [
                f"{page.relative_to(REPO)}:{number}: {p!r}: {line.strip()}" for p, rx in patterns if rx.search(line)
            ]
    assert not found, "pages narrate development:\n" + "\n".join(found)


def test_narration_check_matches_words_only():
    rx = re.compile(r"\blent to\b", re.I)
    assert rx.search("no GPU was Lent to it") and not rx.search("is equivalent to the gold")


def test_readme_links_every_docs_page():
    linked = {t.split("#")[0] for t in LINK.findall(README.read_text())}
    missing = [f"docs/{d.name}" for d in DOCS if f"docs/{d.name}" not in linked]
    assert not missing, f"README.md does not link {missing}"
    assert {"docs/rl.md", "docs/tpu.md", "benchmarks/RESULTS.md"} <= linked
