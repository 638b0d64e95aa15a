"""Grading throughput and verdicts: mathjax_train.grading vs math-verify on the MATH test set.

Three pair sets, graded by both in the same run (extraction included for both sides):
  identity  - each MATH test solution against its own gold answer (5000 pairs; the gold is the
              solution's last box, so this mostly measures extraction; where a solution boxes
              several answers joined by "and", the default policy reads them all and the gold
              keeps one: 7 pairs);
  rewrites  - each gold against a rewritten prediction whose label is known by construction:
              meaning-preserving rewrites (a/b for \\frac{a}{b}, decimals, `x = ` prefixes,
              thousands commas, units, reordered root lists, k\\sqrt{m} as \\sqrt{k^2 m}, reordered
              sums, \\frac{a\\pi}{b} as \\frac{a}{b}\\pi) must pass, and meaning-changing ones (+1,
              swapped tuple entries, changed interval brackets, dropped \\pm, changed radicands) must fail;
  cross     - each gold against the next problem's solution (5000 pairs, unlabelled: nearly all
              should fail, as most wrong model answers do; this is where the symbolic path runs).
Prints pairs/s for both, accuracy on the labelled sets, and ~20 disagreements; writes all
disagreements to --out (JSON).  Run:
    .venv/bin/python benchmarks/grading_vs_math_verify.py [--data DIR] [--out FILE]
Needs `pip install math-verify` (benchmark only).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from fractions import Fraction
from pathlib import Path

from mathjax_train.grading import extract_answer, is_equivalent, stats

ROOT = Path(__file__).resolve().parents[1]


def rewrites(gold: str) -> list[tuple[str, bool, str]]:
    """(prediction, expected verdict, rewrite name) variants of one gold answer."""
    out = []
    g = gold.strip()
    m = re.fullmatch(r"(-?)\\[dt]?frac\{(\d+)\}\{(\d+)\}", g)
    if m:
        out.append((f"{m.group(1)}{m.group(2)}/{m.group(3)}", True, "frac->slash"))
        v = Fraction(int(m.group(2)), int(m.group(3)))
        if (v.denominator & (v.denominator - 1)) == 0 or 10**8 % v.denominator == 0:
            out.append((m.group(1) + str(float(v)), True, "frac->decimal"))
        out.append((f"{m.group(1)}\\frac{{{m.group(3)}}}{{{m.group(2)}}}", m.group(2) == m.group(3), "frac-inverted"))
    if re.fullmatch(r"-?\d+", g):
        n = int(g)
        out.append((f"x = {n}", True, "x= prefix"))
        out.append((f"{n}\\text{{ units}}", True, "units"))
        out.append((str(n + 1), False, "plus-one"))
        if abs(n) >= 1000:
            out.append((f"{n:,}", True, "thousands-commas"))
        if n != 0:
            out.append((f"{n / 100}", False, "x0.01 (no percent sign)"))
    m = re.fullmatch(r"\((-?\d+),\s*(-?\d+)\)", g)
    if m:
        out.append((f"({m.group(2)}, {m.group(1)})", m.group(1) == m.group(2), "tuple-swapped"))
        out.append((f"[{m.group(1)}, {m.group(2)}]", False, "brackets-changed"))
    m = re.fullmatch(r"(-?\d+),\s*(-?\d+)", g)
    if m and not re.fullmatch(r"-?\d{1,3}(,\d{3})+", g):  # `15,600` may be a number: no label by construction
        out.append((f"{m.group(2)}, {m.group(1)}", True, "roots-reordered"))
    if "\\pm" in g:
        out.append((g.replace("\\pm", "+"), False, "pm-dropped"))
    m = re.fullmatch(r"(\d+)\\sqrt\{(\d+)\}", g)
    if m:
        k, r = int(m.group(1)), int(m.group(2))
        out.append((f"\\sqrt{{{k * k * r}}}", True, "k-sqrt-m->sqrt(k^2 m)"))
        out.append((f"{k}\\sqrt{{{r + 1}}}", False, "radicand+1"))
    m = re.fullmatch(r"(\d+)\s*([+-])\s*(\d*\\sqrt\{\d+\})", g)
    if m:
        sign = "" if m.group(2) == "+" else "-"
        out.append((f"{sign}{m.group(3)}+{m.group(1)}", True, "sum-reordered"))
        out.append((f"{m.group(1)}{'-' if sign == '' else '+'}{m.group(3)}", False, "sign-flipped"))
    m = re.fullmatch(r"\\[dt]?frac\{(\d*)\\pi\}\{(\d+)\}", g)
    if m:
        out.append((f"\\frac{{{m.group(1) or 1}}}{{{m.group(2)}}}\\pi", True, "frac-pi-split"))
        out.append((f"\\frac{{{m.group(1) or 1}}}{{{int(m.group(2)) + 1}}}\\pi", False, "frac-pi-denominator+1"))
    m = re.fullmatch(r"(\d+)\^\\circ", g)
    if m:
        out.append((m.group(1), True, "degree-sign-dropped"))
    return out


def multi_answer_check(data: Path, rows: list[dict], theirs) -> dict:
    """The MATH test problems whose MARIO annotation lists several answers (the dataset's gold keeps
    only the last box): each solution against the full annotated answer, with our extraction
    policies boxed="last" (what `evaluate` uses) and boxed="all", and math-verify."""
    path = data / "extra" / "mario_math_test_annotation.jsonl"
    if not path.exists():
        return {}
    by_id = {r["unique_id"]: r for r in rows}
    pairs = []
    for line in open(path, encoding="utf-8"):
        ann = json.loads(line)
        gold = ann["answer"]
        if isinstance(gold, str) and gold.startswith('["'):
            gold = json.loads(gold)
        gold = ", ".join(gold) if isinstance(gold, list) else gold
        row = by_id[ann["unique_id"]]
        if gold.strip() != row["answer"].strip():
            pairs.append((ann["unique_id"], gold, row["solution"]))
    out = {"pairs": len(pairs), "rows": []}
    for uid, gold, sol in pairs:
        out["rows"].append(
            {
                "unique_id": uid,
                "gold": gold,
                "ours_group": is_equivalent(gold, extract_answer(sol)),
                "ours_last": is_equivalent(gold, extract_answer(sol, boxed="last")),
                "ours_all": is_equivalent(gold, extract_answer(sol, boxed="all")),
                "math_verify": theirs(gold, sol),
            }
        )
    for key in ("ours_group", "ours_last", "ours_all", "math_verify"):
        out[key] = sum(r[key] for r in out["rows"])
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("MATHJAX_DATA_DIR") or str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--out", default="grading_vs_math_verify.json")
    args = ap.parse_args()
    try:
        from math_verify import parse, verify
    except ImportError:
        print("math-verify is not installed: pip install math-verify", file=sys.stderr)
        return 2

    rows = [json.loads(line) for line in open(Path(args.data) / "math" / "test.jsonl", encoding="utf-8")]
    identity = [(r["answer"], r["solution"], True, "identity", r["unique_id"]) for r in rows]
    labelled = [
        (r["answer"], f"So the answer is $\\boxed{{{p}}}$.", e, name, r["unique_id"])
        for r in rows
        for p, e, name in rewrites(r["answer"])
    ]
    cross = [
        (a["answer"], b["solution"], None, "next-solution", a["unique_id"]) for a, b in zip(rows, rows[1:] + rows[:1])
    ]

    def ours(gold, text):
        return is_equivalent(gold, extract_answer(text))

    def theirs(gold, text):
        try:
            return bool(verify(parse("$" + gold + "$"), parse(text)))
        except Exception:
            return False

    is_equivalent("1", "1")  # import cost is not throughput; the worker pool starts on demand
    parse("$1$")
    report = {"command": " ".join(sys.argv), "sets": {}, "disagreements": []}
    for set_name, pairs in (("identity", identity), ("rewrites", labelled), ("cross", cross)):
        verdicts = {}
        for grader_name, fn in (("mathjax_train", ours), ("math_verify", theirs)):
            t0 = time.perf_counter()
            v = [fn(g, t) for g, t, _, _, _ in pairs]
            dt = time.perf_counter() - t0
            verdicts[grader_name] = v
            labelled_pairs = [(x, e) for x, (_, _, e, _, _) in zip(v, pairs) if e is not None]
            correct = sum(x == e for x, e in labelled_pairs)
            report["sets"].setdefault(set_name, {})[grader_name] = {
                "pairs": len(pairs),
                "seconds": round(dt, 3),
                "pairs_per_s": round(len(pairs) / dt, 1),
                "accepted": sum(v),
                "correct": correct,
                "accuracy": round(correct / len(labelled_pairs), 4) if labelled_pairs else None,
            }
        for (g, t, e, name, uid), a, b in zip(pairs, verdicts["mathjax_train"], verdicts["math_verify"]):
            if a != b:
                report["disagreements"].append(
                    {
                        "set": set_name,
                        "unique_id": uid,
                        "rewrite": name,
                        "gold": g,
                        "prediction": extract_answer(t),
                        "expected": e,
                        "mathjax_train": a,
                        "math_verify": b,
                    }
                )
    report["multi_answer"] = multi_answer_check(Path(args.data), rows, theirs)
    report["grading_stats"] = stats()

    print(f"$ {sys.executable} {' '.join(sys.argv)}")
    print(f"{'set':10s} {'grader':14s} {'pairs':>6s} {'seconds':>8s} {'pairs/s':>9s} {'accepted':>9s} {'accuracy':>9s}")
    for set_name, by in report["sets"].items():
        for grader_name, r in by.items():
            acc = "-" if r["accuracy"] is None else f"{r['accuracy']:.4f}"
            print(
                f"{set_name:10s} {grader_name:14s} {r['pairs']:6d} {r['seconds']:8.2f} {r['pairs_per_s']:9.1f} "
                f"{r['accepted']:9d} {acc:>9s}"
            )
        speedup = by["mathjax_train"]["pairs_per_s"] / by["math_verify"]["pairs_per_s"]
        print(f"{set_name:10s} speed-up mathjax_train / math_verify: {speedup:.1f}x")
    dis = report["disagreements"]
    by_rewrite: dict[str, list[int]] = {}
    for d in dis:
        s = by_rewrite.setdefault(f"{d['set']}/{d['rewrite']}", [0, 0, 0])
        s[2 if d["expected"] is None else 0 if d["mathjax_train"] == d["expected"] else 1] += 1
    print(
        f"\n{len(dis)} disagreements (set/rewrite: [mathjax_train right, math_verify right, unlabelled]): {by_rewrite}"
    )
    for d in dis[:: max(1, len(dis) // 20)][:20]:
        right = (
            "?" if d["expected"] is None else "mathjax_train" if d["mathjax_train"] == d["expected"] else "math_verify"
        )
        print(
            f"  {d['unique_id']:38s} {d['rewrite']:24s} gold={d['gold'][:40]!r:44s} pred={str(d['prediction'])[:30]!r:34s} "
            f"ours={d['mathjax_train']!s:5s} expected={d['expected']!s:5s} -> {right} is right"
        )
    mult = report["multi_answer"]
    if mult:
        print(
            f"multi-answer MATH problems (MARIO gold, {mult['pairs']} pairs) accepted: ours boxed=group "
            f"{mult['ours_group']}, boxed=last {mult['ours_last']}, boxed=all {mult['ours_all']}, "
            f"math_verify {mult['math_verify']}"
        )
    print(f"grading counters: {report['grading_stats']}")
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(f"full report: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
