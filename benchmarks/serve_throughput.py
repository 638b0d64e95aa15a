"""`serve` throughput on SmolLM2-135M-Instruct, CPU: continuous batching vs one slot vs the Engine alone.

    python benchmarks/serve_throughput.py [--clients 32] [--new-tokens 32] [--num-slots 8] [--rounds 2]
                                          [--checkpoint CKPT]

Three ways to answer the same `--clients` greedy completion requests, in one process, same
machine: (a) `serve` with --num-slots N and all clients at once (official AsyncOpenAI client),
(b) `serve` with one slot (requests decode one after another), (c) the Engine called directly with
N slots (no HTTP, no engine thread). Each is warmed up once (compilation excluded), then the rounds
alternate a, b, c, a, b, c so machine noise hits all. Prints JSON: tokens/s (from the usage
counts) and the ratios a/b and a/c; checks that all three produce the same texts. `--checkpoint`
uses another checkpoint instead of SmolLM2 (e.g. a tiny one for a smoke run).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

TOPICS = ["apples", "marbles", "books", "pencils", "coins", "cookies", "stamps", "shells"]


def prompts(n: int) -> list[str]:
    return [
        f"Question {i}: Sam has {3 + i} {TOPICS[i % len(TOPICS)]} and buys {2 * i + 1} more. "
        f"How many {TOPICS[i % len(TOPICS)]} does Sam have now? Answer step by step."
        for i in range(n)
    ]


async def via_http(url: str, texts: list[str], new_tokens: int) -> tuple[float, int, list[str]]:
    import openai

    client = openai.AsyncOpenAI(base_url=url, api_key="unused", max_retries=0, timeout=3600)
    try:
        start = time.perf_counter()
        rs = await asyncio.gather(
            *(client.completions.create(model="m", prompt=p, max_tokens=new_tokens, temperature=0) for p in texts)
        )
        seconds = time.perf_counter() - start
    finally:
        await client.close()
    return seconds, sum(r.usage.completion_tokens for r in rs), [r.choices[0].text for r in rs]


def direct(engine, texts: list[str], new_tokens: int) -> tuple[float, int, list[str]]:
    from mathjax_train.infer import SamplingParams

    ids = [engine.tokenizer.encode(t) for t in texts]
    start = time.perf_counter()
    out = engine.generate(ids, SamplingParams(max_tokens=new_tokens), [[0]] * len(ids))
    seconds = time.perf_counter() - start
    return seconds, sum(len(c.token_ids) for (c,) in out), [c.text for (c,) in out]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--num-slots", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--workdir", default=None, help="reuse a directory holding hf/ and ckpt/")
    ap.add_argument("--checkpoint", default=None, help="serve this checkpoint instead of SmolLM2")
    args = ap.parse_args()

    from mathjax_train.config import EngineConfig
    from mathjax_train.infer.engine import Engine
    from mathjax_train.infer.loading import load_for_inference
    from mathjax_train.serve.app import ServeApp
    from mathjax_train.serve.server import start_server

    if args.checkpoint:
        ckpt, label = args.checkpoint, args.checkpoint
    else:
        from smollm2_dirs import smollm2_dirs

        _, ckpt = smollm2_dirs(args.workdir, "serve_bench_")
        label = "SmolLM2-135M-Instruct"
    model = load_for_inference(ckpt, dtype="float32")
    slots = EngineConfig(num_slots=args.num_slots)
    batched = start_server(ServeApp(model, "m", slots), "127.0.0.1", 0)
    single = start_server(ServeApp(model, "m", EngineConfig(num_slots=1)), "127.0.0.1", 0)
    engine = Engine(model, slots)
    texts = prompts(args.clients)

    runs = {
        "serve_batched": lambda: asyncio.run(via_http(batched.url, texts, args.new_tokens)),
        "serve_one_slot": lambda: asyncio.run(via_http(single.url, texts, args.new_tokens)),
        "direct_engine": lambda: direct(engine, texts, args.new_tokens),
    }
    outputs, rates = {}, {k: [] for k in runs}
    for name, fn in runs.items():  # warm-up: compile every shape once
        outputs[name] = fn()[2]
    for _ in range(args.rounds):
        for name, fn in runs.items():
            seconds, tokens, texts_out = fn()
            assert texts_out == outputs[name], f"{name}: greedy texts changed between rounds"
            rates[name].append(tokens / seconds)
    batched.close()
    single.close()
    tps = {k: statistics.median(v) for k, v in rates.items()}
    print(
        json.dumps(
            {
                "model": f"{label} (float32, CPU)",
                "clients": args.clients,
                "new_tokens": args.new_tokens,
                "num_slots": args.num_slots,
                "rounds": args.rounds,
                "load_average_1m_at_end": os.getloadavg()[0],
                "tokens_per_second": {k: round(v, 1) for k, v in tps.items()},
                "ratio_batched_over_one_slot": round(tps["serve_batched"] / tps["serve_one_slot"], 2),
                "ratio_batched_over_direct_engine": round(tps["serve_batched"] / tps["direct_engine"], 2),
                "same_texts": outputs["serve_batched"] == outputs["serve_one_slot"] == outputs["direct_engine"],
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
