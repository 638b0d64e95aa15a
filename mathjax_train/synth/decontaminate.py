"""Find synthetic rows that copy a GSM8K or MATH test question, exactly or lightly edited.

Four checks, strongest first, each reported by name with the test ids it hits:
- `exact`: equal after normalization (Unicode NFKC, lower case, punctuation and whitespace
  squeezed out), so whitespace/punctuation/case edits are caught;
- `exact_masked`: equal once every number is also replaced by a placeholder (numbers changed);
- `ngram` / `ngram_masked`: shares a word n-gram (default 13, as in the GPT-3 report) with a test
  question, before / after number masking (sentences added, removed, reworded).
Only distinctive n-grams count: at least half real words (not numbers, LaTeX commands or single
letters), outside [asy] figure code, and found in at most `max_df` test questions (boilerplate
such as "Express your answer as a common fraction" recurs across many). Measured on the real
sets in benchmarks/decontaminate_realdata.py.
Test ids are the problem ids of data/problems.py (GSM8K `gsm8k/test/<record index>`, MATH its
`unique_id`), the ids `evaluate` gives the same questions.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import unicodedata
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from etils import epath

from mathjax_train.config import DECONTAMINATE_BENCHMARKS, DECONTAMINATE_NGRAM, DecontaminateConfig, InputError
from mathjax_train.data import problems
from mathjax_train.data.jsonl_source import read_jsonl_numbered
from mathjax_train.data.problems import Problem

BENCHMARKS = DECONTAMINATE_BENCHMARKS  # the named test sets (MATH's covers MATH500); the default is all of them
DEFAULT_NGRAM = DECONTAMINATE_NGRAM
DEFAULT_MAX_DF = 2
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_TOKEN = re.compile(r"\\[a-z]+|[^\W_]+")  # a LaTeX command (backslash kept) or a run of letters/digits
_ASY = re.compile(r"\[asy\].*?(?:\[/asy\]|\Z)", re.IGNORECASE | re.DOTALL)
NUM = "0"  # the placeholder a masked number becomes (after masking no other digit is left)


def words(text: str, mask_numbers: bool = False) -> list[str]:
    """Normalized tokens: NFKC, lower case, punctuation dropped; numbers -> "0" if masked."""
    t = unicodedata.normalize("NFKC", text).lower()
    if mask_numbers:
        t = _NUMBER.sub(f" {NUM} ", t)
    return _TOKEN.findall(t)


def _is_word(token: str) -> bool:
    return len(token) > 1 and token.isalpha()


def ngrams(tokens: Sequence[str], n: int, informative: bool = True) -> set[tuple[str, ...]]:
    """The word n-grams of `tokens`; with `informative`, only those at least half real words.
    Runs of numbers, symbols and LaTeX commands would otherwise match unrelated problems once
    numbers are masked."""
    grams = (tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
    return {g for g in grams if not informative or 2 * sum(map(_is_word, g)) >= n}


def ngram_words(text: str, mask_numbers: bool = False) -> list[str]:
    """Tokens for the n-gram checks: as `words`, without [asy] figure code."""
    return words(_ASY.sub(" ", text), mask_numbers)


@dataclass
class Hit:
    test_id: str
    method: str  # exact | exact_masked | ngram | ngram_masked
    shared_ngrams: int = 0  # for the n-gram methods: how many distinct n-grams are shared

    def as_dict(self) -> dict:
        d: dict[str, object] = {"test_id": self.test_id, "method": self.method}
        if self.method.startswith("ngram"):
            d["shared_ngrams"] = self.shared_ngrams
        return d


def load_test_questions(benchmarks: Iterable[str] = BENCHMARKS, data_dir=None) -> list[Problem]:
    """The test questions of each benchmark from the manual data directory (MATHJAX_DATA_DIR), or of
    a JSONL file named instead of a benchmark (its rows need `question`; `source` is the file)."""
    out: list[Problem] = []
    for name in benchmarks:
        if name in BENCHMARKS:
            out += problems.load_named(name, "test", data_dir)
        elif name.endswith(".jsonl"):  # any JSONL with `question` rows, e.g. a held-out evaluation set
            out += [dataclasses.replace(p, source=name) for p in problems.read_jsonl(name, require_answer=False)]
        else:
            raise InputError(f"unknown benchmark {name!r}; known: {list(BENCHMARKS)} or a .jsonl file")
    return out


def benchmark(p: Problem) -> str:
    """The benchmark a test question belongs to: gsm8k, math (source math/<subject>) or its file."""
    head = p.source.split("/", 1)[0]
    return head if head in BENCHMARKS else p.source


class Decontaminator:
    """An index of test questions; `check(text)` lists the ones `text` copies."""

    def __init__(
        self,
        tests: Sequence[Problem],
        n: int = DEFAULT_NGRAM,
        informative: bool = True,
        max_df: int | None = DEFAULT_MAX_DF,
    ):
        """`informative=False, max_df=None` counts every n-gram (the plain GPT-3-style rule)."""
        if n < 1:
            raise InputError(f"n-gram size must be >= 1, got {n}")
        self.n, self.size, self.informative = n, len(tests), informative
        self.benchmark_of = {t.id: benchmark(t) for t in tests}
        self._exact: dict[str, list[str]] = defaultdict(list)
        self._exact_masked: dict[str, list[str]] = defaultdict(list)
        self._grams: dict[tuple, list[str]] = defaultdict(list)
        self._grams_masked: dict[tuple, list[str]] = defaultdict(list)
        for t in tests:
            plain, masked = words(t.question), words(t.question, mask_numbers=True)
            self._exact[" ".join(plain)].append(t.id)
            self._exact_masked[" ".join(masked)].append(t.id)
            for g in ngrams(ngram_words(t.question), n, informative):
                self._grams[g].append(t.id)
            for g in ngrams(ngram_words(t.question, True), n, informative):
                self._grams_masked[g].append(t.id)
        if max_df is not None:  # boilerplate shared by many test questions identifies none of them
            for index in (self._grams, self._grams_masked):
                for g in [g for g, ids in index.items() if len(ids) > max_df]:
                    del index[g]

    @classmethod
    def from_data_dir(cls, data_dir=None, benchmarks: Iterable[str] = BENCHMARKS, n: int = DEFAULT_NGRAM):
        return cls(load_test_questions(benchmarks, data_dir), n)

    def check(self, text: str) -> list[Hit]:
        """Every test question `text` matches, each once under its strongest method."""
        plain, masked = words(text), words(text, mask_numbers=True)
        found: dict[str, Hit] = {}

        def add(test_id: str, method: str, shared: int = 0) -> None:
            if test_id not in found:
                found[test_id] = Hit(test_id, method, shared)

        for tid in self._exact.get(" ".join(plain), ()):
            add(tid, "exact")
        for tid in self._exact_masked.get(" ".join(masked), ()):
            add(tid, "exact_masked")
        grams_plain = ngrams(ngram_words(text), self.n, self.informative)
        grams_masked = ngrams(ngram_words(text, True), self.n, self.informative)
        for method, grams, index in (
            ("ngram", grams_plain, self._grams),
            ("ngram_masked", grams_masked, self._grams_masked),
        ):
            counts: dict[str, int] = defaultdict(int)
            for g in grams:
                for tid in index.get(g, ()):
                    counts[tid] += 1
            for tid, c in sorted(counts.items(), key=lambda kv: -kv[1]):
                add(tid, method, c)
        return list(found.values())


@dataclass
class ContaminationReport:
    """Which rows were dropped and why; `as_dict()` is the JSON written next to the output."""

    rows_checked: int = 0
    rows_contaminated: int = 0
    test_questions: int = 0
    ngram: int = DEFAULT_NGRAM
    fields: tuple[str, ...] = ("question",)
    by_method: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    by_benchmark: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    rows: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "rows_checked": self.rows_checked,
            "rows_contaminated": self.rows_contaminated,
            "rows_kept": self.rows_checked - self.rows_contaminated,
            "test_questions": self.test_questions,
            "ngram": self.ngram,
            "fields": list(self.fields),
            "by_method": dict(self.by_method),
            "by_benchmark": dict(self.by_benchmark),
            "contaminated": self.rows,
        }


def new_report(deco: Decontaminator, fields: Sequence[str] = ("question",)) -> ContaminationReport:
    return ContaminationReport(test_questions=deco.size, ngram=deco.n, fields=tuple(fields))


def check_row(row: dict, deco: Decontaminator, report: ContaminationReport, where) -> bool:
    """True when the row is clean; otherwise it is recorded in `report` (named by `where`)."""
    report.rows_checked += 1
    hits: dict[str, Hit] = {}
    for f in report.fields:
        value = row.get(f)
        if isinstance(value, str):
            for h in deco.check(value):
                hits.setdefault(h.test_id, h)
    if not hits:
        return True
    report.rows_contaminated += 1
    for h in hits.values():
        report.by_method[h.method] += 1
        report.by_benchmark[deco.benchmark_of[h.test_id]] += 1
    entry = {
        "row": where,
        "question": str(row.get("question", ""))[:200],
        "test_ids": sorted(hits),
        "hits": [h.as_dict() for h in hits.values()],
    }
    for key in ("id", "question_id", "seed_id", "method"):
        if key in row:
            entry[key] = row[key]
    report.rows.append(entry)
    return False


def decontaminate_file(
    input_path,
    output_path,
    *,
    data_dir=None,
    benchmarks: Sequence[str] = BENCHMARKS,
    n: int = DEFAULT_NGRAM,
    fields: Sequence[str] = ("question",),
) -> ContaminationReport:
    """Copy the JSONL rows of `input_path` that copy no test question to `output_path` (streamed;
    rows lacking a string `fields[0]` are errors naming path:line)."""
    if os.path.abspath(os.fspath(input_path)) == os.path.abspath(os.fspath(output_path)):
        raise InputError(f"--output must differ from the input file {input_path}")
    deco = Decontaminator.from_data_dir(data_dir, benchmarks, n)
    report = new_report(deco, fields)
    out = epath.Path(output_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / (out.name + ".partial")
    with tmp.open("w") as f:
        for lineno, row in read_jsonl_numbered(input_path, {fields[0]: str}):
            if check_row(row, deco, report, f"{os.fspath(input_path)}:{lineno}"):
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    if out.exists():
        out.unlink()
    tmp.rename(out)  # the output appears only once every row has been checked
    return report


SUMMARY_KEYS = ("rows_checked", "rows_contaminated", "rows_kept", "by_method", "by_benchmark")


def decontaminate_with(cfg: DecontaminateConfig, output_path, report_path=None) -> dict:
    """`decontaminate_file` as `cfg` says (the `decontaminate` command and pipeline stage); the full
    report goes to `report_path` when given, and the summary counts are returned."""
    report = decontaminate_file(
        cfg.input, output_path, data_dir=cfg.data_dir or None, benchmarks=cfg.benchmarks, n=cfg.ngram, fields=cfg.fields
    )
    body = report.as_dict()
    if report_path:
        epath.Path(report_path).write_text(json.dumps(body, indent=1))
    return {k: body[k] for k in SUMMARY_KEYS}
