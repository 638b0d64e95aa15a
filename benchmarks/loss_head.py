"""The output head + loss alone, forward and backward: full logits vs vocabulary chunks (train/loss.py).

    python benchmarks/loss_head.py [--batch 4] [--seq 512] [--d-model 512] [--vocab 32000] [--chunks 0 4096 8192]

Gradients wrt the hidden states and the head weight of loss + z-loss, jitted, on the first device.
Per chunk size (0 = full logits): XLA's temporary bytes of the compiled program (its peak working
memory besides inputs and outputs) and the median of --repeats timed calls, the settings interleaved
so machine noise hits all of them. Prints JSON.
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
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--d-model", type=int, default=512)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="compute dtype")
    ap.add_argument("--chunks", type=int, nargs="+", default=[0, 4096, 8192])
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()

    import jax
    import jax.numpy as jnp

    from mathjax_train.train.loss import chunked_cross_entropy, weighted_cross_entropy

    k = jax.random.split(jax.random.PRNGKey(0), 3)
    dt = jnp.dtype(args.dtype)
    hidden = jax.random.normal(k[0], (args.batch, args.seq, args.d_model)).astype(dt)
    kernel = jax.random.normal(k[1], (args.d_model, args.vocab)) * args.d_model**-0.5
    targets = jax.random.randint(k[2], (args.batch, args.seq), 0, args.vocab)
    weights = jnp.ones((args.batch, args.seq))

    def objective(chunk):
        def f(h, w):
            if chunk:
                s = chunked_cross_entropy(h, w, targets, weights, 1e-4, chunk)
            else:
                s = weighted_cross_entropy(jnp.einsum("bte,ev->btv", h, w.astype(h.dtype)), targets, weights, 1e-4)
            return s["loss"] + s["z_loss"]

        return jax.jit(jax.value_and_grad(f, argnums=(0, 1)))

    runs = {}
    for chunk in args.chunks:
        fn = objective(chunk)
        compiled = fn.lower(hidden, kernel).compile()
        t = time.perf_counter()
        jax.block_until_ready(compiled(hidden, kernel))
        runs[chunk] = {
            "compiled": compiled,
            "first_s": time.perf_counter() - t,
            "times": [],
            "temp_bytes": compiled.memory_analysis().temp_size_in_bytes,
            "loss": float(compiled(hidden, kernel)[0]),
        }
    for _ in range(args.repeats):
        for chunk, r in runs.items():
            t = time.perf_counter()
            jax.block_until_ready(r["compiled"](hidden, kernel))
            r["times"].append(time.perf_counter() - t)
    logits_bytes = args.batch * args.seq * args.vocab * 4
    print(
        json.dumps(
            {
                "shape": {
                    "batch": args.batch,
                    "seq": args.seq,
                    "d_model": args.d_model,
                    "vocab": args.vocab,
                    "dtype": args.dtype,
                },
                "device": jax.devices()[0].device_kind,
                "jax": jax.__version__,
                "float32_logits_mib": round(logits_bytes / 2**20, 1),
                "runs": [
                    {
                        "loss_vocab_chunk": chunk,
                        "median_s": round(statistics.median(r["times"]), 4),
                        "times_s": [round(x, 4) for x in r["times"]],
                        "xla_temp_mib": round(r["temp_bytes"] / 2**20, 1),
                        "loss": r["loss"],
                    }
                    for chunk, r in runs.items()
                ],
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
