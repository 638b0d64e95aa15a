"""Input pipeline throughput on CPU vs what the demo train step consumes, side by side in one run.

    python benchmarks/input_pipeline.py [--mixtures procedural_mix,gsm8k_math] [--seq 512] [--rows 8]
        [--batches 40] [--steps 5] [--no-train-step]

Builds the demo tokenizer (byte-level BPE, vocab 512, `data build-tokenizer`) unless --tokenizer is
given, then for each mixture draws batches synchronously (one thread, as the trainer's prefetch
thread does) and reports packed tokens/s (non-padding slots), batches/s and packing efficiency.
Finite mixtures are timed from a cold start, so their first-epoch tokenization is included.
With the train step on, it times the jitted step of a demo-sized decoder on the same batches,
alternating with the pipeline so machine noise hits both, and prints pipeline/step headroom ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def _data_dir() -> str | None:
    env = os.environ.get("MATHJAX_DATA_DIR")
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data")
    for d in (env, here):
        if d and os.path.isdir(os.path.join(d, "gsm8k")):
            return os.path.abspath(d)
    return None


def _pipeline_rates(it, batches: int, rows: int, seq: int) -> dict:
    times, tokens = [], 0
    t0 = time.perf_counter()
    for _ in range(batches):
        t = time.perf_counter()
        b = next(it)
        times.append(time.perf_counter() - t)
        tokens += int((b["segment_ids"] > 0).sum())
    total = time.perf_counter() - t0
    return {
        "batches": batches,
        "seconds": round(total, 3),
        "packed_tokens_per_s": round(tokens / total, 1),
        "batches_per_s": round(batches / total, 2),
        "median_batch_ms": round(1e3 * statistics.median(times), 2),
        "packing_efficiency": round(tokens / (batches * rows * seq), 4),
    }


def _train_step(tok_vocab: int, args):
    import jax

    from mathjax_train.config import load_config
    from mathjax_train.train.setup import build_step

    cfg = load_config(
        None,
        [
            f"model.vocab_size={tok_vocab}",
            f"model.hidden_size={args.d_model}",
            f"model.intermediate_size={4 * args.d_model}",
            f"model.num_layers={args.layers}",
            f"model.num_heads={args.heads}",
            f"model.num_kv_heads={args.heads}",
            f"model.max_position_embeddings={args.seq}",
            "model.dtype=float32",
            f"train.batch_size={args.rows}",
            f"train.seq_len={args.seq}",
            "mesh.data=1",
        ],
    )
    setup = build_step(cfg, devices=jax.devices()[:1])
    mesh, bsh, step = setup.mesh, setup.batch_sharding, setup.step
    state = setup.init_state(0)

    def run(batch):
        nonlocal state
        with jax.set_mesh(mesh):
            state, m = step(state, jax.device_put(batch, bsh))
        jax.block_until_ready(m["loss"])
        return float(m["loss"])

    return run, f"llama {args.layers}L d{args.d_model} heads{args.heads} vocab{tok_vocab} fp32"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--mixtures",
        default=None,
        help="comma-separated (default: procedural_mix, and gsm8k_math when the benchmark data directory exists)",
    )
    ap.add_argument("--tokenizer", default=None, help="tokenizer dir (default: build the demo one)")
    ap.add_argument("--template", default="alpaca_rft")
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--batches", type=int, default=40)
    ap.add_argument("--steps", type=int, default=5, help="train steps timed per mixture")
    ap.add_argument("--no-train-step", action="store_true")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--heads", type=int, default=4)
    args = ap.parse_args()

    from mathjax_train.config import load_config
    from mathjax_train.data.pipeline import make_train_iterator
    from mathjax_train.data.seqio_vocab import TokenizerVocabulary
    from mathjax_train.config import TokenizerStageConfig
    from mathjax_train.data.tokenizer_training import build_tokenizer

    tmp = tempfile.mkdtemp(prefix="pipeline_bench_")
    tok = args.tokenizer
    if tok is None:
        tok = os.path.join(tmp, "tok")
        build_tokenizer(tok, TokenizerStageConfig(vocab_size=512, examples=20000))
    vocab_size = TokenizerVocabulary(tok).vocab_size
    data_dir = _data_dir()
    mixtures = args.mixtures.split(",") if args.mixtures else ["procedural_mix"] + (["gsm8k_math"] if data_dir else [])
    step = None if args.no_train_step else _train_step(vocab_size, args)
    out = {
        "host_cpus": os.cpu_count(),
        "seq_len": args.seq,
        "rows": args.rows,
        "tokenizer_vocab": vocab_size,
        "template": args.template,
        "results": [],
    }
    if step:
        out["train_step_model"] = step[1]
    for mixture in mixtures:
        cfg = load_config(
            None,
            [
                f"data.mixture={mixture}",
                f"data.tokenizer={tok}",
                f"data.template={args.template}",
                f"train.seq_len={args.seq}",
                f"model.vocab_size={vocab_size}",
            ]
            + ([f"data.data_dir={data_dir}"] if data_dir else []),
        )
        t = time.perf_counter()
        it = make_train_iterator(cfg, rows=args.rows)
        res = {"mixture": mixture, "setup_s": round(time.perf_counter() - t, 2)}
        res.update(_pipeline_rates(it, args.batches, args.rows, args.seq))
        if step:
            run = step[0]
            run(next(it))  # compile
            pipe_s, step_s = [], []
            for _ in range(args.steps):  # alternate, as in training
                t = time.perf_counter()
                b = next(it)
                pipe_s.append(time.perf_counter() - t)
                t = time.perf_counter()
                run(b)
                step_s.append(time.perf_counter() - t)
            step_tps = args.rows * args.seq / statistics.median(step_s)
            res.update(
                {
                    "train_step_median_s": round(statistics.median(step_s), 3),
                    "train_step_slots_per_s": round(step_tps, 1),
                    "pipeline_median_batch_s_alternating": round(statistics.median(pipe_s), 4),
                    "headroom_batches": round(statistics.median(step_s) / statistics.median(pipe_s), 1),
                    "headroom_cold_pass": round(res["batches_per_s"] * statistics.median(step_s), 1),
                }
            )
        out["results"].append(res)
        print(json.dumps(res), file=sys.stderr, flush=True)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
