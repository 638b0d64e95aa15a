"""`serve` vs vLLM's OpenAI server under an evaluation-harness client, SmolLM2-135M-Instruct, CPU, fp32.

    python benchmarks/serve_vs_vllm.py --vllm-python /path/to/vllm-venv/bin/python [--questions 20]
        [--shots 5] [--concurrency 4] [--max-tokens 256] [--vllm-env KEY=VALUE ...]
        [--baseline-repo /path/to/another/checkout] [--small-requests 256] [--small-concurrency 32]

The client is benchmarks/harness_client.py, shaped like lm-evaluation-harness's
`local-completions` backend: `--concurrency` requests at a time, one 5-shot GSM8K prompt each,
greedy, lm-eval's gsm8k stop strings. Each server is started, waited for, sent one warm-up request,
then timed over the same prompts, then over `--small-requests` short greedy requests (a few
tokens each, `--small-concurrency` at a time: requests/s); then it is stopped and the next one
starts (one run, same machine). `--baseline-repo` also times our server from another checkout
(e.g. a `git worktree` of an earlier commit) as "ours_before". Our server's compilation cache starts empty
for the timed run; a second start of it (reading its programs back, as a user's second start does) is then
timed up to its first answer (`second_start`). Prints JSON: wall seconds and
requests/s each, the ratios, and how many answers are identical.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed_server(
    cmd: list[str], port: int, env: dict, prompts: list[str], args, cwd: str | None = None, job: bool = True
) -> dict:
    """Start the server `cmd` (listening on `port`, run in `cwd`), time the client against it, stop it.
    Without `job`, only the start-up and the warm-up request are timed."""
    from harness_client import GSM8K_STOP, run_completions, wait_ready

    base = f"http://127.0.0.1:{port}/v1"
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        env={**os.environ, **env},
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_ready(base, 900)
        startup = time.perf_counter() - t0
        run_completions(base, "smol", prompts[:1], stop=GSM8K_STOP, max_tokens=8, concurrency=1)  # warm-up
        if not job:
            return {"startup_s": round(startup, 1), "startup_and_first_answer_s": round(time.perf_counter() - t0, 1)}
        r = run_completions(
            base, "smol", prompts, stop=GSM8K_STOP, max_tokens=args.max_tokens, concurrency=args.concurrency
        )
        small = [f"Question {i}: what is {i} + {i % 7}? Answer:" for i in range(args.small_requests)]
        s = run_completions(base, "smol", small, stop=GSM8K_STOP, max_tokens=4, concurrency=args.small_concurrency)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    return {
        "wall_s": round(r["wall_s"], 1),
        "startup_s": round(startup, 1),
        "completion_tokens": r["completion_tokens"],
        "texts": r["texts"],
        "small_requests_per_s": round(len(small) / s["wall_s"], 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vllm-python", default="", help="python of the vLLM venv; empty: ours only")
    ap.add_argument("--vllm-env", action="append", default=[], help="KEY=VALUE for the vLLM server (repeatable)")
    ap.add_argument("--questions", type=int, default=20)
    ap.add_argument("--shots", type=int, default=5)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--num-slots", type=int, default=0, help="our server's slots (0 = its default)")
    ap.add_argument("--workdir", default=None, help="reuse a directory holding hf/ and ckpt/")
    ap.add_argument("--baseline-repo", default="", help="also time our server from this checkout (ours_before)")
    ap.add_argument("--small-requests", type=int, default=256, help="short requests timed after the job")
    ap.add_argument("--small-concurrency", type=int, default=32)
    args = ap.parse_args()

    from harness_client import gsm8k_fewshot_prompts
    from machine import cpu_description
    from smollm2_dirs import smollm2_dirs

    hf_dir, ckpt = smollm2_dirs(args.workdir, "servebench-")
    data = os.environ.get("MATHJAX_DATA_DIR") or os.path.join(HERE, "..", "..", "shared", "data")
    prompts = gsm8k_fewshot_prompts(data, args.questions, args.shots)
    port = free_port()
    ours_cmd = [
        sys.executable,
        "-m",
        "mathjax_train.cli",
        "serve",
        ckpt,
        "--dtype",
        "float32",
        "--model-name",
        "smol",
        "--num-slots",
        str(args.num_slots),
        "--quiet",
        "--port",
        str(port),
    ]
    # our compilation cache starts empty: the first start compiles, the second reads back (the user's second run)
    cache = os.path.join(os.path.dirname(hf_dir), "serve_jax_cache")
    shutil.rmtree(cache, ignore_errors=True)
    ours_env = {"TF_CPP_MIN_LOG_LEVEL": "3", "MATHJAX_COMPILE_CACHE": cache}
    result = {
        "model": "SmolLM2-135M-Instruct",
        "questions": len(prompts),
        "shots": args.shots,
        "concurrency": args.concurrency,
        "max_tokens": args.max_tokens,
        "machine": cpu_description(),
        # `python -m` looks in its working directory first: each side runs in its own checkout
        "ours": timed_server(ours_cmd, port, ours_env, prompts, args, cwd=os.path.join(HERE, "..")),
    }
    port = free_port()
    second = timed_server(
        ours_cmd[:-1] + [str(port)], port, ours_env, prompts, args, os.path.join(HERE, ".."), job=False
    )
    result["ours"]["second_start"] = second
    if args.baseline_repo:
        port = free_port()
        before_cmd = ours_cmd[:-1] + [str(port)]
        repo = os.path.abspath(args.baseline_repo)
        env = {"TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": repo}
        result["ours_before"] = timed_server(before_cmd, port, env, prompts, args, cwd=repo)
        result["ours_before"]["repo"] = args.baseline_repo
        same = sum(a == b for a, b in zip(result["ours"]["texts"], result["ours_before"]["texts"]))
        result["identical_answers_before_after"] = f"{same}/{len(prompts)}"
        result["ratio_wall_before_over_after"] = round(result["ours_before"]["wall_s"] / result["ours"]["wall_s"], 2)
    if args.vllm_python:
        port = free_port()
        vllm_cmd = [args.vllm_python, os.path.join(HERE, "vllm_side.py"), "serve", hf_dir, str(port)]
        env = dict(kv.split("=", 1) for kv in args.vllm_env)
        result["vllm"] = timed_server(vllm_cmd, port, env, prompts, args)
        result["vllm"]["env"] = env
        same = sum(a == b for a, b in zip(result["ours"]["texts"], result["vllm"]["texts"]))
        result["identical_answers"] = f"{same}/{len(prompts)}"
        result["ratio_wall_vllm_over_ours"] = round(result["vllm"]["wall_s"] / result["ours"]["wall_s"], 2)
        result["ratio_small_rps_ours_over_vllm"] = round(
            result["ours"]["small_requests_per_s"] / result["vllm"]["small_requests_per_s"], 2
        )
    for side in ("ours", "ours_before", "vllm"):
        result.get(side, {}).pop("texts", None)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
