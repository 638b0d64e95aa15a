"""A stand-in for lm-evaluation-harness's `local-completions` backend, stdlib only.

It sends what that backend sends to an OpenAI-compatible server: one prompt per POST to
`{base_url}/completions`, from a pool of `concurrency` threads, and it renders GSM8K five-shot
prompts the way lm-eval's `gsm8k` task does. Used to time servers (ours, vLLM) on the same load.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

GSM8K_STOP = ["Question:", "</s>", "<|im_end|>"]  # lm-eval gsm8k's `until`


def _post_json(url: str, body: dict, timeout_s: float) -> dict:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=timeout_s) as resp:
        return json.load(resp)


def run_completions(
    base_url: str,
    model: str,
    prompts: list[str],
    *,
    stop: list[str],
    max_tokens: int,
    concurrency: int = 4,
    temperature: float = 0.0,
    timeout_s: float = 600,
) -> dict:
    """POST every prompt to `{base_url}/completions`, `concurrency` at a time.

    Returns {"wall_s", "texts" (in prompt order), "completion_tokens" (sum of usage counts)}.
    """
    url = base_url.rstrip("/") + "/completions"

    def one(prompt: str) -> dict:
        return _post_json(
            url,
            {
                "model": model,
                "prompt": prompt,
                "max_tokens": max_tokens,
                "temperature": temperature,
                "stop": stop,
                "seed": 1234,
            },
            timeout_s,
        )

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        answers = list(pool.map(one, prompts))
    wall_s = time.perf_counter() - start
    return {
        "wall_s": wall_s,
        "texts": [a["choices"][0]["text"] for a in answers],
        "completion_tokens": sum(a.get("usage", {}).get("completion_tokens", 0) for a in answers),
    }


def wait_ready(base_url: str, timeout_s: float) -> None:
    """Poll `{base_url}/models` until it answers 200; TimeoutError after `timeout_s`."""
    url = base_url.rstrip("/") + "/models"
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer 200 within {timeout_s} s")
        time.sleep(1)


def _read_jsonl(path: str, limit: int) -> list[dict]:
    rows = []
    with open(path) as f:
        for line in f:
            if len(rows) == limit:
                break
            if line.strip():
                rows.append(json.loads(line))
    return rows


def gsm8k_fewshot_prompts(data_dir: str, n_questions: int = 20, shots: int = 5) -> list[str]:
    """The first `n_questions` GSM8K test questions, each after the first `shots` train rows,
    as lm-eval's gsm8k task renders them ("Question: ...\\nAnswer: ...\\n\\n" per shot)."""
    train = _read_jsonl(os.path.join(data_dir, "gsm8k", "train.jsonl"), shots)
    test = _read_jsonl(os.path.join(data_dir, "gsm8k", "test.jsonl"), n_questions)
    context = "".join(f"Question: {r['question']}\nAnswer: {r['answer']}\n\n" for r in train)
    return [f"{context}Question: {r['question']}\nAnswer:" for r in test]
