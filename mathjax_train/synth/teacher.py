"""The teacher that writes questions and solutions: one interface, two backends.

`CheckpointTeacher` samples from one of our checkpoints in this process; `HttpTeacher` calls any
OpenAI-compatible endpoint (ours from `mathjax-train serve`, vLLM, OpenAI, ...) with the API key
read from an environment variable. Both take plain-text requests (one user message each) and
return n completions per request; `describe()` is the provenance written into every row.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Sequence

from mathjax_train.config import InputError
from mathjax_train.infer.params import sample_seed


@dataclass(frozen=True)
class Sampling:
    """Sampling settings for one teacher call; recorded with every row they produced."""

    temperature: float = 0.7
    top_p: float = 1.0
    max_tokens: int = 512
    seed: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


class TeacherError(RuntimeError):
    """The teacher could not answer (endpoint down, bad response); the message says which call."""


class Teacher(ABC):
    @abstractmethod
    def ask(self, requests: Sequence[str], n: int, sampling: Sampling) -> list[list[str]]:
        """n completions for each request (a user message), in request order."""

    @abstractmethod
    def describe(self) -> dict:
        """JSON-serializable identity of the teacher, for provenance."""


class CheckpointTeacher(Teacher):
    """A checkpoint of ours, sampled in-process on the engine (the n answers of a request share its prefill).

    prompt_format: "chat" renders each request with the checkpoint's chat template (or the
    serve fallback format when it has none); "plain" feeds the request text as is.
    `batch_size` is the engine's slot count (0 = its default).
    """

    def __init__(self, ckpt_dir: str, *, dtype: str | None = "auto", batch_size: int = 0, prompt_format: str = "chat"):
        from mathjax_train.infer.loading import load_for_inference

        if prompt_format not in ("chat", "plain"):
            raise InputError(f"prompt_format must be 'chat' or 'plain', not {prompt_format!r}")
        self.ckpt_dir, self.batch_size, self.prompt_format = str(ckpt_dir), batch_size, prompt_format
        self.model = load_for_inference(ckpt_dir, dtype=dtype)
        self._engines: dict = {}

    def describe(self) -> dict:
        return {"kind": "checkpoint", "path": self.ckpt_dir, "prompt_format": self.prompt_format}

    def _encode(self, request: str) -> tuple[list[int], tuple[str, ...]]:
        from mathjax_train.infer.chat import render_chat

        if self.prompt_format == "plain":
            return self.model.tokenizer.encode(request), ()
        r = render_chat(self.model.tokenizer, [{"role": "user", "content": request}])
        return r.prompt_ids, r.implicit_stop

    def _engine(self, length: int):
        """An engine for sequences up to `length` tokens, rounded up to a power of two so that calls reuse it."""
        from mathjax_train.config import EngineConfig
        from mathjax_train.infer.engine import Engine

        size = min(1 << max(length - 1, 1).bit_length(), self.model.cfg.max_position_embeddings)
        if size not in self._engines:
            self._engines[size] = Engine(self.model, EngineConfig(num_slots=self.batch_size), max_seq_len=size)
        return self._engines[size]

    def ask(self, requests: Sequence[str], n: int, sampling: Sampling) -> list[list[str]]:
        from mathjax_train.infer.params import SamplingParams

        if not requests:
            return []
        encoded = [self._encode(r) for r in requests]
        context = self.model.cfg.max_position_embeddings
        longest = max(len(ids) for ids, _ in encoded)
        if longest + sampling.max_tokens > context:
            raise TeacherError(
                f"a request of {longest} tokens plus max_tokens {sampling.max_tokens} exceeds the "
                f"teacher's context of {context} tokens"
            )
        sp = SamplingParams(
            max_tokens=sampling.max_tokens, temperature=sampling.temperature, top_p=sampling.top_p, stop=encoded[0][1]
        )
        engine = self._engine(longest + sampling.max_tokens)
        groups = [
            engine.submit(ids, sp, [sample_seed(sampling.seed, i, j) for j in range(n)])
            for i, (ids, _) in enumerate(encoded)
        ]
        engine.run()
        return [[r.completion.text for r in g] for g in groups]


class HttpTeacher(Teacher):
    """An OpenAI-compatible endpoint: `{base_url}/chat/completions` (or `/completions`) over urllib.

    Requests run `concurrency` at a time; 429 and 5xx answers and dropped connections are retried
    with exponential backoff up to `max_retries` times, then raise TeacherError.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key_env: str | None = "OPENAI_API_KEY",
        api: str = "chat",
        concurrency: int = 8,
        timeout_s: float = 600.0,
        max_retries: int = 4,
    ):
        if api not in ("chat", "completions"):
            raise InputError(f"api must be 'chat' or 'completions', not {api!r}")
        self.base_url, self.model, self.api = base_url.rstrip("/"), model, api
        self.api_key_env = api_key_env
        self.api_key = os.environ.get(api_key_env) if api_key_env else None
        self.concurrency, self.timeout_s, self.max_retries = concurrency, timeout_s, max_retries

    def describe(self) -> dict:
        return {"kind": "openai_http", "base_url": self.base_url, "model": self.model, "api": self.api}

    def _post(self, path: str, body: dict) -> dict:
        url = f"{self.base_url}/{path}"
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = json.dumps(body).encode()
        for attempt in range(self.max_retries + 1):
            try:
                req = urllib.request.Request(url, data=data, headers=headers, method="POST")
                with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                    return json.loads(resp.read().decode("utf-8"))
            except urllib.error.HTTPError as e:
                detail = _error_message(e)
                if e.code in (429, 500, 502, 503, 504) and attempt < self.max_retries:
                    time.sleep(min(2**attempt, 30))
                    continue
                hint = f" (is {self.api_key_env} set?)" if e.code == 401 else ""
                raise TeacherError(f"POST {url}: HTTP {e.code}: {detail}{hint}") from None
            except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
                if attempt < self.max_retries:
                    time.sleep(min(2**attempt, 30))
                    continue
                raise TeacherError(f"POST {url}: {e}") from None
            except json.JSONDecodeError as e:
                raise TeacherError(f"POST {url}: the response is not JSON ({e})") from None
        raise AssertionError("unreachable")

    def _one(self, index: int, request: str, n: int, sampling: Sampling) -> list[str]:
        body = {
            "model": self.model,
            "n": n,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_tokens": sampling.max_tokens,
            "seed": sample_seed(sampling.seed, index),
        }
        if self.api == "chat":
            body["messages"] = [{"role": "user", "content": request}]
            resp = self._post("chat/completions", body)
        else:
            body["prompt"] = request
            resp = self._post("completions", body)
        try:
            choices = sorted(resp["choices"], key=lambda c: c["index"])
            texts = [c["message"]["content"] if self.api == "chat" else c["text"] for c in choices]
        except (KeyError, TypeError) as e:
            raise TeacherError(
                f"{self.base_url}: response to request {index} lacks field {e}: {str(resp):.200}"
            ) from None
        if len(texts) != n:
            raise TeacherError(f"{self.base_url}: asked for n={n} choices for request {index}, got {len(texts)}")
        return [t or "" for t in texts]

    def ask(self, requests: Sequence[str], n: int, sampling: Sampling) -> list[list[str]]:
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            futures = [pool.submit(self._one, i, r, n, sampling) for i, r in enumerate(requests)]
            return [f.result() for f in futures]


def _error_message(e: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(e.read().decode("utf-8"))
        return body["error"]["message"]
    except Exception:  # not an OpenAI-shaped error body; fall back to the reason phrase
        return str(e.reason)
