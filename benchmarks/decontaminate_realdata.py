"""Decontamination on the real benchmarks: catch rate on a known rewrite of GSM8K test, flags on
the train splits, and speed, for several n-gram sizes side by side, and at 13-grams with the
distinctive-n-gram filters (informative words, max_df) switched off one by one.

    MATHJAX_DATA_DIR=/work/shared/data python benchmarks/decontaminate_realdata.py

Catch rate: MetaMath's GSM8K "backward" rewrites (extra/metamath_gsm8k_backward.jsonl: each test
question with one number replaced by x and a sentence appended) caught with the right test id.
Train flags: GSM8K / MATH train questions flagged against the test sets (near-duplicates that
really exist, plus false positives: lower is not automatically better). Prints JSON.
"""

from __future__ import annotations

import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def main() -> None:
    from mathjax_train.data import manual_dir
    from mathjax_train.synth.decontaminate import Decontaminator, load_test_questions

    root = manual_dir.resolve_root(None)
    tests = load_test_questions(("gsm8k", "math"), root)
    id_of = {t.question: t.id for t in tests}
    backward = [json.loads(line) for line in open(root / "extra" / "metamath_gsm8k_backward.jsonl")]
    gsm_train = [json.loads(line)["question"] for line in open(root / "gsm8k" / "train.jsonl")]
    math_train = [json.loads(line)["problem"] for line in open(root / "math" / "train.jsonl")]
    results = []
    variants = [(n, True, 2) for n in (8, 10, 13)] + [(13, True, None), (13, False, None)]
    for n, informative, max_df in variants:
        t0 = time.perf_counter()
        deco = Decontaminator(tests, n, informative=informative, max_df=max_df)
        build = time.perf_counter() - t0
        t0 = time.perf_counter()
        caught = sum(id_of[r["original_question"]] in [h.test_id for h in deco.check(r["question"])] for r in backward)
        gsm_flags = sum(bool(deco.check(q)) for q in gsm_train)
        math_flags = sum(bool(deco.check(q)) for q in math_train)
        checked = len(backward) + len(gsm_train) + len(math_train)
        rate = checked / (time.perf_counter() - t0)
        results.append(
            {
                "ngram": n,
                "informative_filter": informative,
                "max_df": max_df,
                "metamath_backward_caught": f"{caught}/{len(backward)}",
                "metamath_backward_rate": round(caught / len(backward), 4),
                "gsm8k_train_flagged": f"{gsm_flags}/{len(gsm_train)}",
                "math_train_flagged": f"{math_flags}/{len(math_train)}",
                "index_seconds": round(build, 2),
                "rows_per_second": round(rate),
            }
        )
    print(json.dumps({"test_questions": len(tests), "results": results}, indent=1))


if __name__ == "__main__":
    main()
