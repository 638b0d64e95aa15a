"""Pre-tokenized cache vs the source path for a synthetic JSONL task, side by side in one run.

    python benchmarks/cache_vs_source.py [--rows 20000] [--num-files 16] [--hosts 1,4] [--workers 1]

Writes N procedural problems as a synthetic JSONL file and the demo tokenizer (byte-level BPE, vocab
512), runs `data cache` with the DirectRunner, then reads one epoch of the `synthetic` task through
the trainer's iterator (packed batches of 8 x 512) from the source (tokenizing on the fly) and from
the cache, for host 0 of each host count. Every phase runs in its own process: wall seconds, seconds
to the first batch and peak RSS. Prints JSON, with cache/source ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)
SEQ, ROWS_PER_BATCH = 512, 8


def _overrides(work: str, cached: bool) -> list[str]:
    return [
        f"data.tokenizer={work}/tok",
        f"data.jsonl=[{work}/synthetic.jsonl]",
        "data.mixture=synthetic",
        f"train.seq_len={SEQ}",
        f"train.batch_size={ROWS_PER_BATCH}",
    ] + ([f"data.cache_dir={work}/cache"] if cached else [])


def _phase(args) -> dict:
    """Runs in a child process; returns what it measured."""
    from mathjax_train.config import load_config

    if args.phase == "prepare":
        from mathjax_train.data import procedural
        from mathjax_train.data.jsonl_source import write_jsonl
        from mathjax_train.config import TokenizerStageConfig
        from mathjax_train.data.tokenizer_training import build_tokenizer

        build_tokenizer(f"{args.work}/tok", TokenizerStageConfig(vocab_size=512, examples=5000))
        n = write_jsonl(f"{args.work}/synthetic.jsonl", procedural.iterate(seed=1, split="train", stop=args.rows))
        return {"rows": n, "jsonl_mb": round(os.path.getsize(f"{args.work}/synthetic.jsonl") / 2**20, 2)}
    if args.phase == "cache":
        from mathjax_train.data.cache import cache_tasks

        cfg = load_config(None, _overrides(args.work, cached=False))
        beam = ["--runner=DirectRunner", f"--direct_num_workers={args.workers}"]
        if args.workers > 1:
            beam.append("--direct_running_mode=multi_processing")
        s = cache_tasks(
            cfg,
            ["synthetic"],
            f"{args.work}/cache",
            num_files=args.num_files,
            pipeline_args=beam,
            overwrite=True,
            log=lambda *_: None,
        )
        return {"seconds": s["seconds"], "examples_per_second": s["examples_per_second"]}
    from mathjax_train.data.pipeline import make_iterator

    cfg = load_config(None, _overrides(args.work, cached=args.phase == "read-cache"))
    t0 = time.perf_counter()
    it = make_iterator(cfg, rows=ROWS_PER_BATCH, shard_index=0, num_shards=args.hosts, num_epochs=1)
    first = None
    for _ in it:
        first = first if first is not None else time.perf_counter() - t0
    seconds = time.perf_counter() - t0
    s = it.stats()
    return {
        "seconds": round(seconds, 3),
        "first_batch_s": round(first, 3),
        "examples": s["examples"],
        "batches": s["batches"],
        "tokens": s["tokens"],
        "tokens_per_second": round(s["tokens"] / seconds, 1),
        "read_from": s["tasks"]["synthetic"]["read_from"].split(":")[0],
    }


def _run_child(argv: list[str]) -> dict:
    proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), *argv], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"phase {argv} failed (exit {os.waitstatus_to_exitcode(status)}); run it alone to see why")
    result = json.loads(out.strip().splitlines()[-1])
    result["peak_rss_mb"] = round(usage.ru_maxrss / 1024, 1)
    return result


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=20000)
    p.add_argument("--num-files", type=int, default=16)
    p.add_argument("--hosts", default="1,4", help="host counts to read as (host 0 of each)")
    p.add_argument("--workers", type=int, default=1, help="DirectRunner workers for the cache job")
    p.add_argument("--work", default=None, help="working directory (default: a temporary one)")
    p.add_argument("--phase", default=None, help=argparse.SUPPRESS)
    p.add_argument("--host-count", dest="host_count", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.phase:
        args.hosts = args.host_count
        print(json.dumps(_phase(args)))
        return
    work = args.work or tempfile.mkdtemp(prefix="cache_bench_")
    common = [
        "--work",
        work,
        "--rows",
        str(args.rows),
        "--num-files",
        str(args.num_files),
        "--workers",
        str(args.workers),
    ]
    out = {
        "command": "python benchmarks/cache_vs_source.py " + " ".join(sys.argv[1:]),
        "rows": args.rows,
        "num_files": args.num_files,
        "seq_len": SEQ,
        "rows_per_batch": ROWS_PER_BATCH,
        "prepare": _run_child(["--phase", "prepare", *common]),
        "cache_job": _run_child(["--phase", "cache", *common]),
        "read": {},
    }
    for hosts in [int(h) for h in args.hosts.split(",")]:
        src = _run_child(["--phase", "read-source", "--host-count", str(hosts), *common])
        cached = _run_child(["--phase", "read-cache", "--host-count", str(hosts), *common])
        assert (src["examples"], src["tokens"]) == (cached["examples"], cached["tokens"]), (src, cached)
        out["read"][f"host 0 of {hosts}"] = {
            "source": src,
            "cache": cached,
            "cache_over_source": {
                k: round(cached[k] / src[k], 3)
                for k in ("seconds", "first_batch_s", "tokens_per_second", "peak_rss_mb")
            },
        }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
