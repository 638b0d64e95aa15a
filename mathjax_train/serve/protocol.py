"""OpenAI API request validation and response shapes for /v1/completions and /v1/chat/completions.

Every rejected request raises ApiError, which becomes `{"error": {"message", "type", "param",
"code"}}` with the HTTP status OpenAI uses (400 bad input, 404 unknown model or path, ...).
Unknown request fields are rejected by name, as OpenAI does, rather than silently ignored. Two
vLLM extensions are accepted: `top_k` (0 = off) and `ignore_eos`. `logprobs` gives the model's log
probability of each sampled token; the top alternatives are not computed (their lists are empty).
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass
from typing import Any

MAX_N = 16
MAX_STOP = 4
ROLES = ("system", "developer", "user", "assistant")

# Fields accepted for compatibility only when they carry their no-op value.
_NOOP_FIELDS: dict[str, tuple | None] = {
    "frequency_penalty": (0, 0.0),
    "presence_penalty": (0, 0.0),
    "logit_bias": ({},),
    "user": None,
    "echo": (False,),
    "best_of": (1,),
    "suffix": ("",),
    "parallel_tool_calls": None,
    "store": (False,),
    "metadata": None,
    "service_tier": None,
}
_COMMON_FIELDS = {
    "model",
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "ignore_eos",
    "n",
    "stop",
    "seed",
    "stream",
    "stream_options",
    "logprobs",
}
MAX_LOGPROBS = 5  # /v1/completions `logprobs`, as OpenAI
MAX_TOP_LOGPROBS = 20  # /v1/chat/completions `top_logprobs`, as OpenAI


class ApiError(Exception):
    """A request the server refuses; `body()` is the OpenAI-shaped error object."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def bad(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code)


@dataclass
class Options:
    """Sampling options shared by both endpoints, validated."""

    max_tokens: int | None  # None: what fits in the context
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    ignore_eos: bool = False
    n: int = 1
    stop: tuple[str, ...] = ()
    seed: int | None = None  # None: a random seed per request
    stream: bool = False
    include_usage: bool = False
    logprobs: bool = False  # return the log probability of each sampled token


@dataclass
class CompletionRequest:
    model: str
    prompts: list  # each a str or a list of token ids
    options: Options


@dataclass
class ChatRequest:
    model: str
    messages: list[dict]  # {"role", "content": str}
    options: Options


def _number(body: dict, name: str, lo: float, hi: float, default: float) -> float:
    v = body.get(name)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise bad(f"'{name}' must be a number, got {v!r:.40}", name)
    if not lo <= v <= hi:
        raise bad(f"{v} is not a valid value for '{name}': it must be between {lo} and {hi}", name)
    return float(v)


def _int(body: dict, name: str, lo: int, hi: int | None, default):
    v = body.get(name)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int):
        raise bad(f"'{name}' must be an integer, got {v!r:.40}", name)
    if v < lo or (hi is not None and v > hi):
        limit = f"at least {lo}" if hi is None else f"between {lo} and {hi}"
        raise bad(f"{v} is not a valid value for '{name}': it must be {limit}", name)
    return v


def _check_fields(body: dict, allowed: set[str]) -> None:
    for name, value in body.items():
        if name in allowed:
            continue
        if name in _NOOP_FIELDS:
            ok = _NOOP_FIELDS[name]
            if value is None or ok is None or value in ok:
                continue
            raise bad(f"'{name}' is not supported by this server (only its default value is accepted)", name)
        raise bad(f"Unrecognized request argument supplied: {name}", name)


def _bool(body: dict, name: str) -> bool:
    v = body.get(name)
    if v is None:
        return False
    if not isinstance(v, bool):
        raise bad(f"'{name}' must be a boolean, got {v!r:.40}", name)
    return v


def _options(body: dict, max_tokens_field: str = "max_tokens", chat: bool = False) -> Options:
    stop = body.get("stop")
    if stop is None:
        stops: tuple[str, ...] = ()
    elif isinstance(stop, str):
        stops = (stop,)
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        stops = tuple(stop)
    else:
        raise bad("'stop' must be a string or a list of strings", "stop")
    if len(stops) > MAX_STOP:
        raise bad(f"'stop' may hold at most {MAX_STOP} strings, got {len(stops)}", "stop")
    if any(s == "" for s in stops):
        raise bad("'stop' strings must not be empty", "stop")
    stream = _bool(body, "stream")
    so = body.get("stream_options")
    include_usage = False
    if so is not None:
        if not stream:
            raise bad("'stream_options' is only allowed when 'stream' is true", "stream_options")
        if not isinstance(so, dict) or set(so) - {"include_usage", "include_obfuscation"}:
            raise bad("'stream_options' must be an object with 'include_usage'", "stream_options")
        include_usage = bool(so.get("include_usage", False))
    if chat:  # `logprobs: true`, `top_logprobs: k` (alternatives are not returned: their lists are empty)
        logprobs = _bool(body, "logprobs")
        top = _int(body, "top_logprobs", 0, MAX_TOP_LOGPROBS, None)
        if top is not None and not logprobs:
            raise bad("'top_logprobs' needs 'logprobs' set to true", "top_logprobs")
    else:  # `logprobs: k` (alternatives are not returned: their dicts are empty)
        logprobs = _int(body, "logprobs", 0, MAX_LOGPROBS, None) is not None
    top_p = _number(body, "top_p", 0.0, 1.0, 1.0)
    if top_p == 0:
        raise bad("0 is not a valid value for 'top_p': it must be above 0 and at most 1", "top_p")
    return Options(
        max_tokens=_int(body, max_tokens_field, 1, None, None),
        temperature=_number(body, "temperature", 0.0, 2.0, 1.0),
        top_p=top_p,
        top_k=_int(body, "top_k", 0, None, 0),
        ignore_eos=_bool(body, "ignore_eos"),
        n=_int(body, "n", 1, MAX_N, 1),
        stop=stops,
        seed=_int(body, "seed", -(2**63), 2**63 - 1, None),
        stream=stream,
        include_usage=include_usage,
        logprobs=logprobs,
    )


def _model(body: dict) -> str:
    model = body.get("model")
    if model is None:
        raise bad("you must provide a model parameter", "model")
    if not isinstance(model, str):
        raise bad("'model' must be a string", "model")
    return model


def parse_completion(body: Any) -> CompletionRequest:
    """Validate a /v1/completions body."""
    if not isinstance(body, dict):
        raise bad("the request body must be a JSON object")
    _check_fields(body, _COMMON_FIELDS | {"prompt"})
    model = _model(body)
    prompt = body.get("prompt")
    if prompt is None:
        raise bad("you must provide a prompt parameter", "prompt")
    if isinstance(prompt, str):
        prompts: list = [prompt]
    elif isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        prompts = list(prompt)
    elif isinstance(prompt, list) and prompt and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
        prompts = [list(prompt)]
    elif (
        isinstance(prompt, list)
        and prompt
        and all(isinstance(p, list) and p for p in prompt)
        and all(isinstance(t, int) and not isinstance(t, bool) for p in prompt for t in p)
    ):
        prompts = [list(p) for p in prompt]
    else:
        raise bad(
            "'prompt' must be a string, a non-empty list of strings, a list of token ids, "
            "or a list of lists of token ids",
            "prompt",
        )
    if any(isinstance(p, str) and not p for p in prompts):
        raise bad("'prompt' must not be empty", "prompt")
    return CompletionRequest(model, prompts, _options(body))


def _content_text(content: Any, i: int) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for j, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise bad(
                    f"messages[{i}].content[{j}]: only parts of type 'text' with a string 'text' are supported",
                    f"messages.[{i}].content",
                )
            parts.append(part["text"])
        return "".join(parts)
    raise bad(f"messages[{i}].content must be a string or a list of text parts", f"messages.[{i}].content")


def parse_chat(body: Any) -> ChatRequest:
    """Validate a /v1/chat/completions body (text messages only; no tools)."""
    if not isinstance(body, dict):
        raise bad("the request body must be a JSON object")
    if body.get("max_tokens") is not None and body.get("max_completion_tokens") is not None:
        raise bad("give 'max_tokens' or 'max_completion_tokens', not both", "max_completion_tokens")
    _check_fields(body, _COMMON_FIELDS | {"messages", "max_completion_tokens", "response_format", "top_logprobs"})
    rf = body.get("response_format")
    if rf is not None and rf != {"type": "text"}:
        raise bad("only response_format {'type': 'text'} is supported", "response_format")
    model = _model(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad("'messages' must be a non-empty list", "messages")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise bad(f"messages[{i}] must be an object", f"messages.[{i}]")
        role = m.get("role")
        if role not in ROLES:
            raise bad(f"messages[{i}].role: {role!r} is not one of {list(ROLES)}", f"messages.[{i}].role")
        extra = set(m) - {"role", "content", "name"}
        if extra:
            raise bad(f"messages[{i}]: unsupported field(s) {sorted(extra)}", f"messages.[{i}]")
        if "content" not in m:
            raise bad(f"messages[{i}] has no 'content'", f"messages.[{i}].content")
        out.append({"role": "system" if role == "developer" else role, "content": _content_text(m["content"], i)})
    field_name = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    return ChatRequest(model, out, _options(body, field_name, chat=True))


# ---- responses ------------------------------------------------------------------------------


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def finish_reason(engine_reason: str) -> str:
    """The engine's eos|stop|length as OpenAI names them (an end of sequence is a "stop" there)."""
    return {"eos": "stop", "stop": "stop", "length": "length"}.get(engine_reason, engine_reason)


def _logprob(x: float) -> float:
    return max(float(x), -9999.0)  # JSON has no -Infinity


def completion_logprobs(tokens: list[str], logprobs: list[float], offset: int = 0) -> dict:
    """The legacy completions `logprobs` object for sampled tokens; `top_logprobs` entries are empty
    (alternatives are not computed). `offset`: where the first token starts in the completion text."""
    offsets = []
    for t in tokens:
        offsets.append(offset)
        offset += len(t)
    return {
        "tokens": tokens,
        "token_logprobs": [_logprob(x) for x in logprobs],
        "top_logprobs": [{} for _ in tokens],
        "text_offset": offsets,
    }


def chat_logprobs(tokens: list[str], logprobs: list[float]) -> dict:
    """The chat `logprobs` object for sampled tokens; `top_logprobs` lists are empty (not computed)."""
    return {
        "content": [
            {"token": t, "logprob": _logprob(x), "bytes": list(t.encode("utf-8")), "top_logprobs": []}
            for t, x in zip(tokens, logprobs)
        ],
        "refusal": None,
    }


def completion_body(rid: str, model: str, choices: list[tuple[str, str, dict | None]], use: dict) -> dict:
    """choices: (text, OpenAI finish_reason, logprobs object or None) in choice-index order."""
    return {
        "id": rid,
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": None,
        "choices": [
            {"index": i, "text": t, "logprobs": lp, "finish_reason": f} for i, (t, f, lp) in enumerate(choices)
        ],
        "usage": use,
    }


def completion_chunk(
    rid: str, model: str, index: int, text: str, finish: str | None, logprobs: dict | None = None
) -> dict:
    return {
        "id": rid,
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": None,
        "choices": [{"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish}],
    }


def chat_body(rid: str, model: str, choices: list[tuple[str, str, dict | None]], use: dict) -> dict:
    return {
        "id": rid,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": i,
                "message": {"role": "assistant", "content": t, "refusal": None},
                "logprobs": lp,
                "finish_reason": f,
            }
            for i, (t, f, lp) in enumerate(choices)
        ],
        "usage": use,
    }


def chat_chunk(rid: str, model: str, index: int, delta: dict, finish: str | None, logprobs: dict | None = None) -> dict:
    return {
        "id": rid,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": None,
        "choices": [{"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}],
    }


def usage_chunk(rid: str, model: str, obj: str, use: dict) -> dict:
    """The last stream chunk when stream_options.include_usage is set: no choices, only usage."""
    return {
        "id": rid,
        "object": obj,
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": None,
        "choices": [],
        "usage": use,
    }


def models_body(model: str, created: int) -> dict:
    return {"object": "list", "data": [model_body(model, created)]}


def model_body(model: str, created: int) -> dict:
    return {"id": model, "object": "model", "created": created, "owned_by": "mathjax-train"}
