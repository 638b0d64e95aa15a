"""Attention alone, forward + backward: the dot path (full masked score matrix) vs the blocked kernel.

    python benchmarks/attention_fwd_bwd.py [--batch 4] [--seq 512] [--heads 8] [--kv-heads 8] [--head-dim 64]
        [--window 0] [--packed] [--dtype float32] [--reps 9]

The gradient of sum(out * w) for a random w (a constant cotangent would let XLA simplify the
backward), packed rows optional. Calls alternate between the two so machine noise hits both; prints
JSON with median wall and process CPU seconds (CPU time is steadier on a shared machine).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, default in (
        ("batch", 4),
        ("seq", 512),
        ("heads", 8),
        ("kv-heads", 8),
        ("head-dim", 64),
        ("window", 0),
        ("reps", 9),
    ):
        ap.add_argument(f"--{name}", type=int, default=default)
    ap.add_argument("--packed", action="store_true", help="rows of 64-token examples instead of one sequence")
    ap.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    args = ap.parse_args()

    import jax
    import jax.numpy as jnp
    import numpy as np

    from mathjax_train.model.attention import attention_mask, blocked_attention, dot_product_attention, query_block

    b, t = args.batch, args.seq
    rng = np.random.default_rng(0)
    q, k, v = (
        jnp.asarray(rng.standard_normal((b, t, n, args.head_dim)), args.dtype)
        for n in (args.heads, args.kv_heads, args.kv_heads)
    )
    w = jnp.asarray(rng.standard_normal((b, t, args.heads, args.head_dim)), jnp.float32)
    slots = jnp.arange(t)
    seg = (slots // 64 + 1 if args.packed else jnp.ones(t, jnp.int32))[None].repeat(b, 0)
    pos = (slots % 64 if args.packed else slots)[None].repeat(b, 0)
    paths = {
        "dot": lambda q, k, v: dot_product_attention(
            q, k, v, attention_mask(slots, slots, pos, pos, seg, seg, args.window)
        ),
        "blocked": lambda q, k, v: blocked_attention(
            q, k, v, seg, pos, sliding_window=args.window, block=query_block(t)
        ),
    }
    grads = {
        n: jax.jit(jax.grad(lambda q, k, v, f=f: jnp.sum(f(q, k, v).astype(jnp.float32) * w), argnums=(0, 1, 2)))
        for n, f in paths.items()
    }
    for g in grads.values():
        jax.block_until_ready(g(q, k, v))
    wall, cpu = {n: [] for n in grads}, {n: [] for n in grads}
    for _ in range(args.reps):
        for n, g in grads.items():
            w0, c0 = time.perf_counter(), time.process_time()
            jax.block_until_ready(g(q, k, v))
            wall[n].append(time.perf_counter() - w0)
            cpu[n].append(time.process_time() - c0)
    med = lambda xs: round(statistics.median(xs), 4)  # noqa: E731
    print(
        json.dumps(
            {
                "shape": {k: v for k, v in vars(args).items() if k != "reps"},
                "block": query_block(t),
                "wall_s": {n: med(x) for n, x in wall.items()},
                "cpu_s": {n: med(x) for n, x in cpu.items()},
                "speedup_cpu": round(med(cpu["dot"]) / med(cpu["blocked"]), 2),
                "load_average": os.getloadavg()[0],
                "device": jax.devices()[0].device_kind,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
