"""RFT-shaped sampling: our engine vs vLLM for CPU, side by side in one run, SmolLM2-135M-Instruct, fp32.

    python benchmarks/sampling_vs_vllm.py --vllm-python /path/to/vllm-venv/bin/python [--questions 16]
        [--k 8] [--max-tokens 256] [--slots 128] [--sweep]
    python benchmarks/sampling_vs_vllm.py --cli --questions 24 --vllm-python ...  # as a user runs it

The job: GSM8K train questions in the model's chat template (the HF tokenizer renders them; both
sides get the same token ids), k samples each at temperature 0.7, up to --max-tokens new tokens,
EOS ends a row. Each side is timed after its own start-up and a short warm-up. vLLM compiles its model in its
start-up; ours does too (`Engine.compile_ahead`: every program a run can need), and with --lazy it
is also timed compiling as the job goes, as `rft` does (that compilation then counts in its tokens/s).
Start-up (loading, engine construction, compilation, warm-up) is reported separately and in the
wall time. vLLM runs in its own venv (benchmarks/vllm_side.py; set up as the
README says). --sweep also runs ours at 8, 32 and 128 slots and at k = 1, 8, 32, in the same process
after the main run, each compiling in its own start-up what the runs before it did not.
--cli times ours as a user runs it instead: `mathjax-train generate` with default flags (but the job's
samples, temperature and length), a first run on an empty compilation cache and a second run of the same
command, each a fresh process; tokens/s is the job's own figure, wall time includes the process start.
--vllm-env passes settings to vLLM (e.g. VLLM_CPU_NUM_OF_RESERVED_CPU=0: its model on every core).
Prints one JSON object; ratio > 1 means we are faster.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))


def gsm8k_train_questions(n: int) -> list[str]:
    data = os.environ.get("MATHJAX_DATA_DIR") or os.path.join(HERE, "..", "..", "shared", "data")
    path = os.path.join(data, "gsm8k", "train.jsonl")
    if not os.path.exists(path):
        sys.exit(f"{path} is missing: set MATHJAX_DATA_DIR to the directory holding gsm8k/train.jsonl")
    with open(path) as f:
        return [json.loads(line)["question"] for _, line in zip(range(n), f)]


def ours(ckpt: str, prompts: list[list[int]], k: int, max_tokens: int, slots: int, compile_ahead: bool = True) -> dict:
    from mathjax_train.config import EngineConfig
    from mathjax_train.infer.engine import Engine
    from mathjax_train.infer.loading import load_for_inference
    from mathjax_train.infer.params import SamplingParams, sample_seed

    t0 = time.perf_counter()
    model = load_for_inference(ckpt, dtype="float32")
    engine = Engine(model, EngineConfig(num_slots=slots), max_seq_len=max(map(len, prompts)) + max_tokens)
    if compile_ahead:  # every program a run can need, in start-up, as vLLM compiles in its own
        engine.compile_ahead()
    engine.generate(prompts[:1], SamplingParams(max_tokens=8), [[0]])  # warm-up, like vLLM's
    startup = time.perf_counter() - t0
    sp = SamplingParams(max_tokens=max_tokens, temperature=0.7)
    t = time.perf_counter()
    out = engine.generate(prompts, sp, [[sample_seed(0, i, j) for j in range(k)] for i in range(len(prompts))])
    seconds = time.perf_counter() - t
    tokens = sum(c.num_tokens for g in out for c in g)
    finish = {}
    for g in out:
        for c in g:
            finish[c.finish_reason] = finish.get(c.finish_reason, 0) + 1
    return {
        "slots": engine.num_slots,
        "k": k,
        "generated_tokens": tokens,
        "generate_s": round(seconds, 1),
        "tokens_per_s": round(tokens / seconds, 1),
        "startup_s": round(startup, 1),
        "wall_s": round(startup + seconds, 1),
        "finish_reasons": finish,
        "prefills": engine.stats.prompt_prefills,
        "preemptions": engine.stats.preemptions,
        "compiled_shapes": len(engine.shapes),
        "compile_ahead": compile_ahead,
    }


def lazy_run(args, workdir: str) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--only-ours-lazy", "--workdir", workdir]
    cmd += ["--questions", str(args.questions), "--k", str(args.k), "--max-tokens", str(args.max_tokens)]
    run = subprocess.run(cmd + ["--slots", str(args.slots)], capture_output=True, text=True, check=True)
    return json.loads(run.stdout)


COMPILED = re.compile(r"compiled (\d+) programs in ([\d.]+) s; read (\d+) from the cache")


def cli_runs(ckpt: str, texts: list[str], k: int, max_tokens: int, workdir: str) -> list[dict]:
    """The job as a user runs it: `mathjax-train generate` with its default flags but the job's own (samples,
    temperature, length), twice, in fresh processes sharing a compilation cache that starts empty."""
    prompts, cache = os.path.join(workdir, "cli_prompts.jsonl"), os.path.join(workdir, "cli_jax_cache")
    shutil.rmtree(cache, ignore_errors=True)
    with open(prompts, "w") as f:
        f.writelines(json.dumps({"prompt": t}) + "\n" for t in texts)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_COMPILATION_CACHE", "JAX_PERSISTENT"))}
    env["MATHJAX_COMPILE_CACHE"] = cache
    runs = []
    for name in ("first_run", "second_run"):
        out = os.path.join(workdir, f"cli_{name}.jsonl")
        cmd = [sys.executable, "-m", "mathjax_train.cli", "generate", "--checkpoint", ckpt, "--prompts", prompts]
        cmd += ["--output", out, "--num-samples", str(k), "--temperature", "0.7", "--max-new-tokens", str(max_tokens)]
        t = time.perf_counter()
        run = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=os.path.join(HERE, ".."))
        wall = time.perf_counter() - t
        if run.returncode != 0:
            sys.exit(f"{' '.join(cmd)} failed:\n{run.stderr[-3000:]}")
        job = json.loads(run.stdout.strip().splitlines()[-1])
        compiled = COMPILED.search(run.stderr)
        runs.append(
            {
                "run": name,
                "generated_tokens": job["new_tokens"],
                "generate_s": job["seconds"],
                "tokens_per_s": round(job["tokens_per_second"], 1),
                "wall_s_incl_process_start": round(wall, 1),
                "compiled_programs": int(compiled.group(1)) if compiled else None,
                "compile_s": float(compiled.group(2)) if compiled else None,
                "programs_from_cache": int(compiled.group(3)) if compiled else None,
            }
        )
    return runs


def vllm(python: str, hf_dir: str, prompts: list[list[int]], k: int, max_tokens: int, env: dict) -> dict:
    with tempfile.TemporaryDirectory() as d:
        job, out = os.path.join(d, "job.json"), os.path.join(d, "out.json")
        with open(job, "w") as f:
            json.dump(
                {
                    "model": hf_dir,
                    "prompt_token_ids": prompts,
                    "n": k,
                    "temperature": 0.7,
                    "top_p": 1.0,
                    "max_tokens": max_tokens,
                    "seed": 0,
                },
                f,
            )
        t = time.perf_counter()
        subprocess.run(
            [python, os.path.join(HERE, "vllm_side.py"), "offline", job, out],
            check=True,
            env={**os.environ, **env},
            stdout=subprocess.DEVNULL,
        )
        wall = time.perf_counter() - t
        with open(out) as f:
            r = json.load(f)
    finish = {}
    for row in r["finish_reasons"]:
        for x in row:
            finish[x] = finish.get(x, 0) + 1
    return {
        "generated_tokens": r["generated_tokens"],
        "generate_s": round(r["generate_s"], 1),
        "tokens_per_s": round(r["generated_tokens"] / r["generate_s"], 1),
        "startup_s": round(r["startup_s"], 1),
        "wall_s_incl_process_start": round(wall, 1),
        "finish_reasons": finish,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vllm-python", default="", help="python of the vLLM venv; empty: ours only")
    ap.add_argument("--vllm-env", action="append", default=[], help="KEY=VALUE for the vLLM process (repeatable)")
    ap.add_argument("--questions", type=int, default=16)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--slots", type=int, default=128)
    ap.add_argument("--sweep", action="store_true")
    ap.add_argument("--lazy", action="store_true", help="also time ours compiling as the job goes (as rft does)")
    ap.add_argument("--only-ours-lazy", action="store_true", help=argparse.SUPPRESS)  # the child of --lazy
    ap.add_argument("--workdir", default=None, help="reuse a directory holding hf/ and ckpt/")
    ap.add_argument(
        "--cli",
        action="store_true",
        help="time ours as a user runs it instead: `mathjax-train generate`, a first and a second run",
    )
    args = ap.parse_args()

    import transformers

    from machine import cpu_description
    from smollm2_dirs import smollm2_dirs

    hf_dir, ckpt = smollm2_dirs(args.workdir, "vllmbench-")
    tok = transformers.AutoTokenizer.from_pretrained(hf_dir)
    prompts = [
        tok.apply_chat_template(
            [{"role": "user", "content": q}], add_generation_prompt=True, tokenize=True, return_dict=False
        )
        for q in gsm8k_train_questions(args.questions)
    ]
    if args.cli:
        texts = [
            tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=False)
            for q in gsm8k_train_questions(args.questions)
        ]
        assert [tok.encode(t) for t in texts] == prompts  # both sides sample from the same token ids
    if args.only_ours_lazy:
        print(json.dumps(ours(ckpt, prompts, args.k, args.max_tokens, args.slots, compile_ahead=False)))
        return
    result = {
        "model": "SmolLM2-135M-Instruct",
        "dtype": "float32",
        "questions": len(prompts),
        "k": args.k,
        "max_tokens": args.max_tokens,
        "temperature": 0.7,
        "machine": cpu_description(),
    }
    if args.cli:
        result["ours_cli"] = cli_runs(ckpt, texts, args.k, args.max_tokens, os.path.dirname(hf_dir))
    else:
        result["ours"] = ours(ckpt, prompts, args.k, args.max_tokens, args.slots)
    if args.lazy:
        # what `rft` does: programs compiled when the job first needs them, inside the timed run (in a child
        # process, so that nothing the run above compiled is reused)
        result["ours_lazy_compile"] = lazy_run(args, os.path.dirname(hf_dir))
    if args.vllm_python:
        env = dict(kv.split("=", 1) for kv in args.vllm_env)
        result["vllm"] = vllm(args.vllm_python, hf_dir, prompts, args.k, args.max_tokens, env)
        result["vllm"]["env"] = env
        v = result["vllm"]
        if args.cli:
            for r in result["ours_cli"]:
                r["ratio_tokens_per_s_ours_over_vllm"] = round(r["tokens_per_s"] / v["tokens_per_s"], 2)
                r["ratio_wall_vllm_over_ours"] = round(
                    v["wall_s_incl_process_start"] / r["wall_s_incl_process_start"], 2
                )
        else:
            result["ratio_tokens_per_s_ours_over_vllm"] = round(result["ours"]["tokens_per_s"] / v["tokens_per_s"], 2)
            result["ratio_wall_vllm_over_ours"] = round(v["wall_s_incl_process_start"] / result["ours"]["wall_s"], 2)
    if args.sweep:
        result["slots_sweep"] = [ours(ckpt, prompts, args.k, args.max_tokens, s) for s in (8, 32, 128)]
        result["k_sweep"] = [ours(ckpt, prompts, k, args.max_tokens, args.slots) for k in (1, 8, 32)]
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
