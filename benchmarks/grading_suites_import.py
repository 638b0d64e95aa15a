"""Import the public graders' own test cases as data: tests/data/grading_suites/*.jsonl.

Reads the test files of four projects from local git clones (their pytest/unittest sources are
parsed with `ast`, never imported or run) and writes one JSON line per (gold, prediction,
expected verdict) case, with its source: repository, commit, file, test function, index.

  huggingface/Math-Verify    tests/*.py (Apache-2.0)      cases of compare_strings / parse+verify
  huggingface/lighteval      tests/unit/metrics/test_extractive_match.py (MIT): the math cases
                             (the multiple-choice letter tests are not math answers) that are not
                             already in Math-Verify's suite
  NVIDIA/NeMo-Skills         tests/test_math_equal.py (Apache-2.0): each pair in both orders
  hendrycks/math             modeling/math_equivalence_test.py (MIT)

Each case says how a grader is called on it: `texts` (both sides are texts to extract an answer
from, as the suite's parse() does) or `answers` (both sides are answers, as math_equal/is_equiv
take them), and the suite's own options (match types, precision, strict, ...).
Run: python benchmarks/grading_suites_import.py --clone huggingface/Math-Verify=DIR ... [--out DIR]
(DIR: a git directory; the commit read is its HEAD unless given as DIR@COMMIT).
"""

from __future__ import annotations

import argparse
import ast
import json
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "data" / "grading_suites"

SUITES = {
    "huggingface/Math-Verify": ("math_verify", "Apache-2.0"),
    "huggingface/lighteval": ("lighteval", "MIT"),
    "NVIDIA/NeMo-Skills": ("nemo_skills", "Apache-2.0"),
    "hendrycks/math": ("hendrycks_math", "MIT"),
}
MV_FILES = [
    "tests/test_all.py",
    "tests/test_boxed.py",
    "tests/test_numina_cases.py",
    "tests/test_open_thoughts.py",
    "tests/test_strict.py",
    "tests/test_yujianll.py",
]
LIGHTEVAL_FILE = "tests/unit/metrics/test_extractive_match.py"
NEMO_FILE = "tests/test_math_equal.py"
HENDRYCKS_FILE = "modeling/math_equivalence_test.py"


def git_show(gitdir: str, commit: str, path: str) -> str:
    return subprocess.run(
        ["git", "--git-dir", gitdir, "show", f"{commit}:{path}"], check=True, capture_output=True, text=True
    ).stdout


def git_head(gitdir: str) -> str:
    return subprocess.run(
        ["git", "--git-dir", gitdir, "rev-parse", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.strip()


def literal(node: ast.AST):
    """A literal value; `Language.FRENCH` -> "FRENCH"; `5 / 2` -> 2.5; anything else raises ValueError."""
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
        return literal(node.left) / literal(node.right)
    if isinstance(node, (ast.List, ast.Tuple)):
        return [literal(e) for e in node.elts]
    return ast.literal_eval(node)


def _parametrize(fn: ast.FunctionDef) -> tuple[list[str], list[ast.AST]] | None:
    for dec in fn.decorator_list:
        if isinstance(dec, ast.Call) and getattr(dec.func, "attr", "") == "parametrize":
            names = literal(dec.args[0])
            names = [n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)
            values = dec.args[1]
            assert isinstance(values, (ast.List, ast.Tuple))
            return names, list(values.elts)
    return None


def _call_options(fn: ast.FunctionDef) -> tuple[str, dict]:
    """How the test calls the grader: compare_strings(...) keywords, or parse()/verify() defaults."""
    for node in ast.walk(fn):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "compare_strings":
            opts: dict = {}
            if len(node.args) > 2:
                arg = node.args[2]
                opts["language"] = arg.id if isinstance(arg, ast.Name) else literal(arg)
            if len(node.args) > 3:
                arg = node.args[3]
                opts["match_types"] = arg.id if isinstance(arg, ast.Name) else literal(arg)
            for kw in node.keywords:
                opts[kw.arg] = kw.value.id if isinstance(kw.value, ast.Name) else literal(kw.value)
            return "compare_strings", opts
    return "parse_verify", {}


def _row(suite, repo, commit, path, test, index, gold, pred, expected, call, options, order=""):
    case_id = f"{suite}:{Path(path).name}::{test}[{index}]{order}"
    return {
        "id": case_id,
        "repo": repo,
        "commit": commit,
        "file": path,
        "test": test,
        "gold": gold,
        "pred": pred,
        "expected": bool(expected),
        "call": call,
        "options": options,
    }


def pytest_cases(suite: str, repo: str, commit: str, path: str, source: str, skip_tests=()) -> list[dict]:
    """Every parametrized (gold, pred, expected) case of a compare_strings/parse+verify style file."""
    rows = []
    for fn in ast.parse(source).body:
        if not isinstance(fn, ast.FunctionDef) or not fn.name.startswith("test") or fn.name in skip_tests:
            continue
        params = _parametrize(fn)
        if params is None:
            continue
        names, values = params
        if "gold" not in names or "pred" not in names:
            continue
        kind, opts = _call_options(fn)
        for i, node in enumerate(values):
            try:
                vals = dict(zip(names, literal(node)))
            except ValueError:
                continue
            expected = vals.get("expected", vals.get("result"))
            options = {
                "kind": kind,
                "match_types": ["latex", "expr"],
                "precision": 6,
                "strict": True,
                "allow_set_relation_comp": False,
                "language": "ENGLISH",
            }
            for k, v in opts.items():  # a keyword naming a parameter takes that case's value
                options[k] = vals[v] if isinstance(v, str) and v in vals else v
            rows.append(
                _row(suite, repo, commit, path, fn.name, i, vals["gold"], vals["pred"], expected, "texts", options)
            )
    return rows


def nemo_cases(repo: str, commit: str, source: str) -> list[dict]:
    rows = []
    for fn in ast.parse(source).body:
        if not isinstance(fn, ast.FunctionDef):
            continue
        params = _parametrize(fn)
        if params is None:
            continue
        expected = fn.name == "test_correct_examples"
        for i, node in enumerate(params[1]):
            a, b = literal(node)
            for order, (g, p) in (("", (a, b)), (":swapped", (b, a))):
                rows.append(_row("nemo", repo, commit, NEMO_FILE, fn.name, i, g, p, expected, "answers", {}, order))
    return rows


def unittest_cases(repo: str, commit: str, source: str) -> list[dict]:
    rows = []
    for cls in ast.parse(source).body:
        if not isinstance(cls, ast.ClassDef):
            continue
        for fn in cls.body:
            if not isinstance(fn, ast.FunctionDef):
                continue
            values, expected = {}, None
            for node in ast.walk(fn):
                if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
                    values[node.targets[0].id] = literal(node.value)
                if isinstance(node, ast.Call) and getattr(node.func, "attr", "") in ("assertTrue", "assertFalse"):
                    expected = node.func.attr == "assertTrue"
            rows.append(
                _row(
                    "hendrycks",
                    repo,
                    commit,
                    HENDRYCKS_FILE,
                    fn.name,
                    0,
                    values["test_in"],
                    values["test_out"],
                    expected,
                    "answers",
                    {},
                )
            )
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clone", action="append", required=True, help="OWNER/NAME=GITDIR[@COMMIT]")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    clones = {}
    for spec in args.clone:
        repo, where = spec.split("=", 1)
        gitdir, _, commit = where.partition("@")
        clones[repo] = (gitdir, commit or git_head(gitdir))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    mv_pairs = set()
    if "huggingface/Math-Verify" in clones:
        gitdir, commit = clones["huggingface/Math-Verify"]
        rows = []
        for path in MV_FILES:
            rows += pytest_cases("mv", "huggingface/Math-Verify", commit, path, git_show(gitdir, commit, path))
        mv_pairs = {(r["gold"], r["pred"]) for r in rows}
        written["math_verify"] = rows
    if "huggingface/lighteval" in clones:
        gitdir, commit = clones["huggingface/lighteval"]
        src = git_show(gitdir, commit, LIGHTEVAL_FILE)
        letters = ("test_extraction_abc", "test_multilingual_extraction_abc")  # multiple choice, not math
        rows = pytest_cases("lighteval", "huggingface/lighteval", commit, LIGHTEVAL_FILE, src, skip_tests=letters)
        written["lighteval"] = [r for r in rows if (r["gold"], r["pred"]) not in mv_pairs]
    if "NVIDIA/NeMo-Skills" in clones:
        gitdir, commit = clones["NVIDIA/NeMo-Skills"]
        written["nemo_skills"] = nemo_cases("NVIDIA/NeMo-Skills", commit, git_show(gitdir, commit, NEMO_FILE))
    if "hendrycks/math" in clones:
        gitdir, commit = clones["hendrycks/math"]
        written["hendrycks_math"] = unittest_cases("hendrycks/math", commit, git_show(gitdir, commit, HENDRYCKS_FILE))
    for name, rows in written.items():
        with open(out / f"{name}.jsonl", "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        print(f"{name}: {len(rows)} cases -> {out / (name + '.jsonl')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
