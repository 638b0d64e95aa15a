"""The grader and math-verify on the public graders' own test suites and on our labelled battery.

Labelled set: the cases of huggingface/Math-Verify, huggingface/lighteval (math cases not in
Math-Verify's), NVIDIA/NeMo-Skills (both argument orders) and hendrycks/math
(tests/data/grading_suites/, imported by benchmarks/grading_suites_import.py), plus the pairs of
tests/test_grading_battery.py.  Each case is graded by both graders the way its suite calls a grader
(tests/grading_suites.py; for math-verify: parse + verify with the suite's options).

Prints, per suite and per category: cases, right, false positives and false negatives of each
grader, against the suites' own verdicts and against the adjudicated labels (the suite's verdict,
except for the cases docs/grader.md lists as deliberate disagreements, where our verdict is the
label); the suite score under each `boxed` policy; and pairs/s of each grader on the same pairs.
Run:  .venv/bin/python benchmarks/grading_suites_vs_math_verify.py [--out FILE] [--repeat N]
Needs `pip install math-verify` (benchmark only; the tests do not).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import grading_suites as gs  # noqa: E402  (tests/grading_suites.py: the cases and how we grade them)
from machine import cpu_model  # noqa: E402
from test_grading_battery import CASES as BATTERY  # noqa: E402

from mathjax_train.grading import extract_answer, is_equivalent, stats  # noqa: E402


def labelled_set() -> list[dict]:
    """Suite cases plus battery pairs, each with `source`, `category` and the adjudicated `label`."""
    disputed = gs.disagreements()
    out = []
    for name in gs.SUITES:
        for case in gs.load(name):
            label = disputed[case["id"]]["ours"] if case["id"] in disputed else case["expected"]
            out.append({**case, "source": name, "category": f"{name}/{case['test']}", "label": label})
    for category, rows in BATTERY.items():
        for i, (gold, pred, expected) in enumerate(rows):
            out.append(
                {
                    "id": f"battery:{category}[{i}]",
                    "gold": gold,
                    "pred": pred,
                    "expected": expected,
                    "label": expected,
                    "call": "answers",
                    "options": {},
                    "source": "battery",
                    "category": f"battery/{category}",
                }
            )
    return out


def ours(case: dict) -> bool:
    if isinstance(case["gold"], list):  # battery: several acceptable golds
        return case["pred"] is not None and is_equivalent(case["gold"], case["pred"])
    return gs.our_verdict(case)


def make_math_verify():
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    def answers(gold, pred) -> bool:
        golds = gold if isinstance(gold, list) else [gold]
        if pred is None:
            return False
        return any(
            g is not None and bool(verify(parse(f"${gs.as_text(g)}$"), parse(f"${gs.as_text(pred)}$"))) for g in golds
        )

    def theirs(case: dict) -> bool:
        try:
            if case["call"] == "answers":
                return answers(case["gold"], case["pred"])
            o = case["options"]
            if o["kind"] == "parse_verify":
                return bool(verify(parse(case["gold"]), parse(case["pred"])))
            targets = []
            for kind in o["match_types"]:
                if kind == "latex":  # Math-Verify's own tests give boxes top priority; lighteval's keep the default
                    lighteval = case["repo"].endswith("lighteval")
                    targets.append(
                        LatexExtractionConfig() if lighteval else LatexExtractionConfig(boxed_match_priority=0)
                    )
                elif kind == "expr":
                    targets.append(ExprExtractionConfig())
            return bool(
                verify(
                    parse(case["gold"], targets),
                    parse(case["pred"], targets),
                    float_rounding=o["precision"],
                    strict=o["strict"],
                    allow_set_relation_comp=o["allow_set_relation_comp"],
                )
            )
        except Exception:  # a grader that raises has not accepted the pair
            return False

    return theirs


def policy_scores(cases: list[dict]) -> dict:
    """Suite cases right (against the suites' verdicts) with each `boxed` policy of ours."""
    out: dict = {}
    for policy in ("last", "all", "group"):
        for case in cases:
            if case["source"] == "battery":
                continue
            gold, pred = gs.as_text(case["gold"]), gs.as_text(case["pred"])
            if case["call"] == "texts":
                gold = extract_answer(gold, boxed=policy) or gold
                pred = extract_answer(pred, boxed=policy, fallback=gs.fallback_for(case))
            verdict = gold is not None and pred is not None and is_equivalent(gold, pred)
            key = (policy, case["source"])
            out[key] = out.get(key, 0) + (verdict == case["expected"])
    return out


def tally(cases: list[dict], verdicts: dict[str, list[bool]], key: str, truth: str) -> dict:
    """{group: {grader: [cases, right, false positives, false negatives, positives, negatives]}}."""
    out: dict = defaultdict(lambda: defaultdict(lambda: [0, 0, 0, 0, 0, 0]))
    for i, case in enumerate(cases):
        t = case[truth]
        for grader, v in verdicts.items():
            row = out[case[key]][grader]
            row[0] += 1
            row[1] += v[i] == t
            row[2] += v[i] and not t
            row[3] += t and not v[i]
            row[4] += t
            row[5] += not t
    return out


def _rate(n: int, d: int) -> str:
    return f"{n}/{d} ({100 * n / d:.1f}%)" if d else "-"


def print_table(title: str, table: dict) -> None:
    print(f"\n{title}")
    print(
        f"{'':44s} {'cases':>5s} | {'ours right':>10s} {'FP':>13s} {'FN':>13s} | {'mv right':>9s} {'FP':>13s} {'FN':>13s}"
    )
    for group, by in table.items():
        o, m = by["mathjax_train"], by["math_verify"]
        print(
            f"{group[:44]:44s} {o[0]:5d} | {o[1]:10d} {_rate(o[2], o[5]):>13s} {_rate(o[3], o[4]):>13s} | "
            f"{m[1]:9d} {_rate(m[2], m[5]):>13s} {_rate(m[3], m[4]):>13s}"
        )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="grading_suites_vs_math_verify.json")
    ap.add_argument("--repeat", type=int, default=3, help="timing runs per grader (the best is kept)")
    args = ap.parse_args()
    try:
        import math_verify
        from importlib.metadata import version
    except ImportError:
        print("math-verify is not installed: pip install math-verify", file=sys.stderr)
        return 2
    theirs = make_math_verify()
    cases = labelled_set()
    is_equivalent("(x+1)^2", "x^2+2x+1")  # start the sympy worker before timing
    math_verify.parse("$1$")
    verdicts, seconds = {}, {}
    for grader, fn in (("mathjax_train", ours), ("math_verify", theirs)):
        best = float("inf")
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            v = [fn(c) for c in cases]
            best = min(best, time.perf_counter() - t0)
        verdicts[grader], seconds[grader] = v, best
    print(f"$ {Path(sys.executable).name} {' '.join(sys.argv)}")
    print(
        f"date {time.strftime('%Y-%m-%d')}; CPU {cpu_model()}; python {platform.python_version()}; "
        f"math-verify {version('math-verify')}; sympy {version('sympy')}"
    )
    print(f"labelled pairs: {len(cases)} ({sum(c['source'] != 'battery' for c in cases)} suite cases + battery)")
    print_table("Against the suites' own verdicts (battery: its labels)", tally(cases, verdicts, "source", "expected"))
    print_table(
        "Against the adjudicated labels (docs/grader.md: disagreements)", tally(cases, verdicts, "source", "label")
    )
    print_table("Per category, adjudicated labels", tally(cases, verdicts, "category", "label"))
    scores = policy_scores(cases)
    print("\nsuite cases right per `boxed` policy (ours, suites' verdicts):")
    for policy in ("last", "all", "group"):
        print(f"  {policy:6s} " + ", ".join(f"{s} {scores[(policy, s)]}" for s in gs.SUITES))
    rate = {g: len(cases) / s for g, s in seconds.items()}
    print(
        f"\nspeed on the same {len(cases)} pairs (best of {args.repeat}): mathjax_train {rate['mathjax_train']:.0f} "
        f"pairs/s, math_verify {rate['math_verify']:.0f} pairs/s: {rate['mathjax_train'] / rate['math_verify']:.1f}x"
    )
    print(f"grading counters: {stats()}")
    report = {
        "command": " ".join(sys.argv),
        "cpu": cpu_model(),
        "pairs_per_s": rate,
        "cases": [
            {
                "id": c["id"],
                "category": c["category"],
                "expected": c["expected"],
                "label": c["label"],
                **{g: v[i] for g, v in verdicts.items()},
            }
            for i, c in enumerate(cases)
        ],
    }
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(f"full report: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
