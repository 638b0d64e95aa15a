"""`serve` throughput on SmolLM2-135M-Instruct, CPU: batched server vs one-at-a-time vs no HTTP.

    python benchmarks/serve_throughput.py [--clients 32] [--new-tokens 32] [--max-batch 8] [--rounds 2]

Three ways to answer the same `--clients` greedy completion requests, in one process, same
machine: (a) `serve` with --max-batch N and all clients at once (official AsyncOpenAI client),
(b) `serve` with --max-batch 1 (every request its own generate call), (c) the Generator called
directly in batches of N with the same padded shapes (no HTTP, no queue). Each is warmed up once
(compilation excluded), then the rounds alternate a, b, c, a, b, c so machine noise hits all.
Prints JSON: tokens/s (from the usage counts) and the ratios a/b and a/c; checks that all three
produce the same texts.
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
    return [f"Question {i}: Sam has {3 + i} {TOPICS[i % len(TOPICS)]} and buys {2 * i + 1} more. "
            f"How many {TOPICS[i % len(TOPICS)]} does Sam have now? Answer step by step." for i in range(n)]


async def via_http(url: str, texts: list[str], new_tokens: int) -> tuple[float, int, list[str]]:
    import openai

    client = openai.AsyncOpenAI(base_url=url, api_key="unused", max_retries=0, timeout=3600)
    try:
        start = time.perf_counter()
        rs = await asyncio.gather(*(client.completions.create(model="m", prompt=p, max_tokens=new_tokens,
                                                              temperature=0) for p in texts))
        seconds = time.perf_counter() - start
    finally:
        await client.close()
    return seconds, sum(r.usage.completion_tokens for r in rs), [r.choices[0].text for r in rs]


def direct(model, gen, texts: list[str], new_tokens: int, batch: int) -> tuple[float, int, list[str]]:
    from mathjax_train.infer import SamplingParams
    from mathjax_train.serve.batcher import bucket

    ids = [model.tokenizer.encode(t) for t in texts]
    plen = bucket(max(len(i) for i in ids), model.cfg.max_position_embeddings)
    sp = SamplingParams(max_new_tokens=bucket(new_tokens, 1 << 30))
    start, tokens, out = time.perf_counter(), 0, []
    for b in range(0, len(ids), batch):
        chunk = ids[b:b + batch]
        padded = chunk + [chunk[-1]] * (batch - len(chunk))
        gens = gen.generate(padded, sp, [0] * batch, prompt_len=plen)[:len(chunk)]
        for g in gens:
            kept = g.token_ids[:new_tokens]
            eos = next((k for k, t in enumerate(kept) if t in gen.eos_ids), None)
            kept = kept if eos is None else kept[:eos + 1]
            tokens += len(kept)
            out.append(model.tokenizer.decode([t for t in kept if t not in gen.eos_ids]))
    return time.perf_counter() - start, tokens, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--workdir", default=None, help="reuse a directory holding hf/ and ckpt/")
    args = ap.parse_args()

    from mathjax_train.infer import Generator
    from mathjax_train.infer.loading import load_for_inference
    from mathjax_train.serve.app import ServeApp
    from mathjax_train.serve.server import start_server
    from smollm2_dirs import smollm2_dirs

    _, ckpt = smollm2_dirs(args.workdir, "serve_bench_")
    model = load_for_inference(ckpt, dtype="float32")
    batched = start_server(ServeApp(model, "m", max_batch=args.max_batch), "127.0.0.1", 0)
    single = start_server(ServeApp(model, "m", max_batch=1), "127.0.0.1", 0)
    gen = Generator(model.cfg, model.params, eos_ids=batched.app.batcher.eos_ids)
    texts = prompts(args.clients)

    runs = {
        "serve_batched": lambda: asyncio.run(via_http(batched.url, texts, args.new_tokens)),
        "serve_max_batch_1": lambda: asyncio.run(via_http(single.url, texts, args.new_tokens)),
        "direct_generator": lambda: direct(model, gen, texts, args.new_tokens, args.max_batch),
    }
    outputs, rates = {}, {k: [] for k in runs}
    for name, fn in runs.items():  # warm-up: compile every shape once
        outputs[name] = fn()[2]
    for _ in range(args.rounds):
        for name, fn in runs.items():
            seconds, tokens, texts_out = fn()
            assert texts_out == outputs[name]
            rates[name].append(tokens / seconds)
    batched.close()
    single.close()
    tps = {k: statistics.median(v) for k, v in rates.items()}
    print(json.dumps({
        "model": "SmolLM2-135M-Instruct (float32, CPU)", "clients": args.clients, "new_tokens": args.new_tokens,
        "max_batch": args.max_batch, "rounds": args.rounds, "load_average_1m_at_end": os.getloadavg()[0],
        "tokens_per_second": {k: round(v, 1) for k, v in tps.items()},
        "ratio_batched_over_max_batch_1": round(tps["serve_batched"] / tps["serve_max_batch_1"], 2),
        "ratio_batched_over_direct_generator": round(tps["serve_batched"] / tps["direct_generator"], 2),
        "same_texts": outputs["serve_batched"] == outputs["serve_max_batch_1"] == outputs["direct_generator"],
    }, indent=1))


if __name__ == "__main__":
    main()
