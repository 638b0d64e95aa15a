"""The matmuls of the default train step alone: XLA:CPU (jitted jnp.dot) vs torch, GFLOP/s per shape.

    python benchmarks/matmul_vs_torch.py [--repeat 5]

The shapes are those of `benchmarks/train_step_vs_torch.py`'s default step (2048 tokens, d512, MLP 1408,
vocabulary 32000), forward and the two backward products, float32, on all of the process's cores for both
sides. It shows how much of the train step's ratio comes from the matmul libraries (XLA's own emitters or
YNNPACK vs torch's MKL/oneDNN) rather than from the rest of the step. Prints JSON with the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

# (m, k, n): x (m, k) @ w (k, n); per layer, the projections and MLP, then the output head
SHAPES = {
    "q/k/v/o forward": (2048, 512, 512),
    "q/k/v/o weight grad": (512, 2048, 512),
    "mlp up forward": (2048, 512, 1408),
    "mlp down forward": (2048, 1408, 512),
    "mlp weight grad": (1408, 2048, 512),
    "head forward": (2048, 512, 32000),
    "head input grad": (2048, 32000, 512),
    "head weight grad": (512, 2048, 32000),
}


def best_seconds(fn, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()

    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch

    from machine import cpu_description

    machine = cpu_description()
    threads = machine["cores"]
    torch.set_num_threads(threads)
    dot = jax.jit(jnp.dot)
    rng = np.random.default_rng(0)
    rows = []
    for name, (m, k, n) in SHAPES.items():
        a, b = rng.standard_normal((m, k), np.float32), rng.standard_normal((k, n), np.float32)
        ja, jb = jnp.asarray(a), jnp.asarray(b)
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        ours = best_seconds(lambda: dot(ja, jb).block_until_ready(), args.repeat)
        theirs = best_seconds(lambda: torch.mm(ta, tb), args.repeat)
        flops = 2 * m * k * n
        rows.append(
            {
                "matmul": name,
                "m_k_n": [m, k, n],
                "xla_gflops": round(flops / ours / 1e9, 1),
                "torch_gflops": round(flops / theirs / 1e9, 1),
                "ratio_xla_over_torch": round(theirs / ours, 2),
            }
        )
    print(
        json.dumps(
            {
                "machine": machine,
                "threads": threads,
                "jax": jax.__version__,
                "torch": torch.__version__,
                "xla_flags": os.environ.get("XLA_FLAGS", ""),
                "matmuls": rows,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
