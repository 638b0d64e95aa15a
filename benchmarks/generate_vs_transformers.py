"""Generation throughput: our engine vs transformers' `generate` on SmolLM2-135M-Instruct, CPU.

    python benchmarks/generate_vs_transformers.py [--batch 8] [--new-tokens 128] [--repeats 3]

Both sides get the same 8 prompts (tokenized by the HF tokenizer), greedy decoding, fixed 128 new
tokens (EOS ignored on both sides so the work is identical), float32. Ours is timed after one
warm-up call (compilation reported separately); transformers likewise after a warm-up. The
rounds alternate (ours, theirs, ours, ...) so machine noise hits both. Prints JSON with tokens/s
for each and the ratio ours/theirs, and how many greedy rows equal transformers' batched
(left-padded) and unbatched outputs.
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

PROMPTS = [
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether?",
    "What is the sum of the first 20 positive odd numbers? Explain step by step.",
    "The capital of France is",
    "def fibonacci(n):\n",
    "Solve for x: 3x + 7 = 22.",
    "A train travels 60 miles per hour for 3 hours. How far does it go?",
    "List three prime numbers greater than 50.",
    "Once upon a time, in a small village by the sea,",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workdir", default=None, help="reuse a directory holding hf/ and ckpt/")
    args = ap.parse_args()

    import torch
    import transformers

    from mathjax_train.config import EngineConfig
    from mathjax_train.infer import SamplingParams
    from mathjax_train.infer.engine import Engine
    from mathjax_train.infer.loading import load_for_inference
    from smollm2_dirs import smollm2_dirs

    hf_dir, ckpt = smollm2_dirs(args.workdir, "genbench-")

    tok = transformers.AutoTokenizer.from_pretrained(hf_dir)
    prompts = [tok(p).input_ids for p in (PROMPTS * ((args.batch + 7) // 8))[: args.batch]]
    n = args.new_tokens

    model = load_for_inference(ckpt, dtype="float32")
    engine = Engine(model, EngineConfig(num_slots=len(prompts)), max_seq_len=max(map(len, prompts)) + n)
    sp = SamplingParams(max_tokens=n, ignore_eos=True)  # exactly n tokens per row

    def ours():
        return [c for (c,) in engine.generate(prompts, sp, [[0]] * len(prompts))]

    t = time.perf_counter()
    ours_tokens = ours()
    first_call = time.perf_counter() - t

    hf = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    tok.padding_side = "left"
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])

    def theirs():
        with torch.no_grad():
            return hf.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=n,
                min_new_tokens=n,
                do_sample=False,
                pad_token_id=pad,
            )

    ref = theirs()  # warm-up

    ours_s, theirs_s = [], []
    for _ in range(args.repeats):
        t = time.perf_counter()
        ours()
        ours_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        theirs()
        theirs_s.append(time.perf_counter() - t)

    total = n * len(prompts)
    agree = sum(o.token_ids == ref[i, width:].tolist() for i, o in enumerate(ours_tokens))
    with torch.no_grad():  # each prompt alone: no padding, the reference our tests use
        alone = [
            hf.generate(torch.tensor([p]), max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=pad)[
                0, len(p) :
            ].tolist()
            for p in prompts
        ]
    agree_alone = sum(o.token_ids == a for o, a in zip(ours_tokens, alone))
    ours_tps, theirs_tps = total / statistics.median(ours_s), total / statistics.median(theirs_s)
    print(
        json.dumps(
            {
                "model": "SmolLM2-135M-Instruct",
                "batch": len(prompts),
                "new_tokens": n,
                "dtype": "float32",
                "threads": torch.get_num_threads(),
                "ours_tokens_per_s": round(ours_tps, 1),
                "transformers_tokens_per_s": round(theirs_tps, 1),
                "ratio_ours_over_transformers": round(ours_tps / theirs_tps, 2),
                "ours_first_call_s_incl_compile": round(first_call, 1),
                "greedy_rows_identical_to_batched": f"{agree}/{len(prompts)}",
                "greedy_rows_identical_to_unbatched": f"{agree_alone}/{len(prompts)}",
                "ours_s": [round(x, 2) for x in ours_s],
                "transformers_s": [round(x, 2) for x in theirs_s],
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
