"""Sandbox throughput: executions/s through InterpreterPool and the overhead per call vs `exec`.

    python benchmarks/sandbox_throughput.py [--workers N] [--snippets N] [--preload]

Overhead = mean latency of one sandboxed call (pool of 1, calls made one after another) minus
the mean time of `exec` of the same snippet in this process (stdout captured).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from mathjax_train.tools.interpreter import DEFAULT_PRELOAD, InterpreterPool, execute  # noqa: E402

SNIPPETS = {
    "print": "print(6 * 7)",
    "loop": "total = 0\nfor i in range(10000):\n    total += i * i\ntotal",
    "sympy": "import sympy as sp\nx = sp.Symbol('x')\nsp.factor(x**4 - 1)",
}


def in_process_s(code: str, repeats: int) -> float:
    compiled = compile(code, "<cell>", "exec")
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            exec(compiled, {"__name__": "__main__"})
        times.append(time.perf_counter() - t0)
    return statistics.mean(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--snippets", type=int, default=500)
    ap.add_argument("--preload", action="store_true", help="preload sympy/numpy in supervisors")
    args = ap.parse_args()
    preload = DEFAULT_PRELOAD if args.preload else ()
    names = [n for n in SNIPPETS if n != "sympy" or args.preload]

    print(f"$ python {' '.join(sys.argv)}")
    print(f"cores={os.cpu_count()} workers={args.workers} snippets={args.snippets} preload={list(preload)}")
    with InterpreterPool(workers=args.workers, preload=preload) as pool:
        print(f"isolation={pool.report['mode']}")
        rows = []
        for name in names:
            code = SNIPPETS[name]
            pool.map([code] * 2 * args.workers)  # warm-up
            t0 = time.perf_counter()
            results = pool.map([code] * args.snippets)
            rate = args.snippets / (time.perf_counter() - t0)
            assert all(r.ok for r in results), results[0]
            rows.append([name, rate])
    with InterpreterPool(workers=1, preload=preload) as pool:
        for row in rows:
            code = SNIPPETS[row[0]]
            pool.execute(code)
            lat = []
            for _ in range(50):
                t0 = time.perf_counter()
                pool.execute(code)
                lat.append(time.perf_counter() - t0)
            base = in_process_s(code, 50)
            row += [statistics.mean(lat) * 1e3, base * 1e3, (statistics.mean(lat) - base) * 1e3]
    one_shot = []
    for _ in range(10):
        t0 = time.perf_counter()
        execute(SNIPPETS["print"])
        one_shot.append(time.perf_counter() - t0)

    print()
    print("| snippet | pool exec/s | sandboxed call ms | in-process exec ms | overhead ms |")
    print("|---------|------------:|------------------:|-------------------:|------------:|")
    for name, rate, lat, base, over in rows:
        print(f"| {name} | {rate:.0f} | {lat:.2f} | {base:.3f} | {over:.2f} |")
    print(f"\none-shot execute() (fresh supervisor per call): {statistics.mean(one_shot) * 1e3:.0f} ms")
    print(
        "(sympy: exec in-process runs with sympy already imported and its caches warm; a "
        "sandboxed call forks from the preloaded supervisor, so caches start cold)"
    )


if __name__ == "__main__":
    main()
