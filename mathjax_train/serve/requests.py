"""OpenAI request bodies as typed models, bounded to what the engine can hold.

`decode_json` parses a body without ever failing on the client's behalf with a 500: integers of more
than 100 digits and NaN/Infinity become values no field accepts (so the 400 names the field), and
JSON nested too deep for the parser is a 400 naming the top-level field that holds it.
`parse_completion` / `parse_chat` validate (pydantic, strict types: "7" is not an integer) and turn
the first problem into a 400 naming the field, as OpenAI does. Unknown fields are refused by name;
a few OpenAI fields are accepted only with their no-op value. Two vLLM extensions: `top_k` (0 = off)
and `ignore_eos`. Strings holding lone UTF-16 surrogates (which JSON can escape but UTF-8 cannot
carry) are refused. Prompt sizes and token ids are checked by the app, which knows the tokenizer.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from mathjax_train.infer.params import INT32_MAX
from mathjax_train.serve.errors import ApiError, bad

MAX_N = 16
MAX_STOP = 4
MAX_STOP_CHARS = 1024  # all stop strings of a request together; the engine looks for each after every chunk
MAX_LOGPROBS = 5  # /v1/completions `logprobs`, as OpenAI
MAX_TOP_LOGPROBS = 20  # /v1/chat/completions `top_logprobs`, as OpenAI
MAX_INT_DIGITS = 100  # longer integer literals are not parsed (Python refuses past 4,300 digits anyway)
MAX_JSON_DEPTH = 64  # only used to find the field of a body nested past the parser's limit
INT64 = 2**63


class Unparsed:
    """A JSON number the server does not turn into a Python number (no field accepts it)."""

    def __init__(self, what: str):
        self.what = what

    def __repr__(self) -> str:
        return self.what


def _int(text: str) -> int | Unparsed:
    digits = len(text.lstrip("-"))
    return int(text) if digits <= MAX_INT_DIGITS else Unparsed(f"an integer of {digits} digits")


def _constant(name: str) -> Unparsed:
    return Unparsed(name)  # NaN, Infinity, -Infinity: not JSON, though Python's parser reads them


_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"\s*:?|[\[\]{}]')


def _deep_field(text: str) -> str | None:
    """The top-level key under which `text` nests deeper than MAX_JSON_DEPTH (None: not in an object)."""
    depth, key = 0, None
    for m in _TOKENS.finditer(text):
        t = m.group()
        if t in "[{":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                return key
        elif t in "]}":
            depth -= 1
        elif depth == 1 and t.endswith(":"):
            try:
                key = json.loads(t[:-1].rstrip())
            except ValueError:
                key = None
    return key


def decode_json(body: bytes) -> Any:
    """The JSON value of a request body; ApiError 400 for anything that is not JSON this server reads."""
    if not body:
        raise bad("the request has no body; send a JSON object")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise bad(f"We could not parse the JSON body of your request: it is not UTF-8 (byte {e.start}).") from None
    try:
        return json.loads(text, parse_int=_int, parse_constant=_constant)
    except json.JSONDecodeError as e:
        raise bad(f"We could not parse the JSON body of your request ({e}).") from None
    except RecursionError:
        field = _deep_field(text)
        raise bad(
            "We could not parse the JSON body of your request: it nests deeper than this server reads"
            + (f" (in '{field}')" if field else ""),
            field,
        ) from None


# ---- field types ------------------------------------------------------------------------------


def _utf8(s: str) -> str:
    if not s.isascii():
        try:
            s.encode("utf-8")
        except UnicodeEncodeError as e:
            raise ValueError(
                f"the string holds a lone UTF-16 surrogate (\\u{ord(s[e.start]):04x} at character {e.start}), "
                "which is not text"
            ) from None
    return s


Text = Annotated[str, AfterValidator(_utf8)]


def _stops(v: Any) -> list:
    if v is None:
        return []
    stops = [v] if isinstance(v, str) else v
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise ValueError("'stop' must be a string or a list of strings")
    if len(stops) > MAX_STOP:
        raise ValueError(f"'stop' may hold at most {MAX_STOP} strings, got {len(stops)}")
    if any(s == "" for s in stops):
        raise ValueError("'stop' strings must not be empty")
    total = sum(len(s) for s in stops)
    if total > MAX_STOP_CHARS:
        raise ValueError(f"'stop' strings may hold {MAX_STOP_CHARS} characters in all, got {total}")
    for s in stops:
        _utf8(s)
    return stops


def _is_token_list(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(type(t) is int for t in v)


def _prompts(v: Any) -> list:
    """A string, strings, token ids or lists of token ids -> a list of prompts (str or list[int])."""
    if isinstance(v, str):
        prompts: list = [v]
    elif isinstance(v, list) and v and all(isinstance(p, str) for p in v):
        prompts = list(v)
    elif _is_token_list(v):
        prompts = [v]
    elif isinstance(v, list) and v and all(_is_token_list(p) for p in v):
        prompts = list(v)
    else:
        raise ValueError(
            "'prompt' must be a string, a non-empty list of strings, a list of token ids, "
            "or a list of lists of token ids"
        )
    for i, p in enumerate(prompts):
        if isinstance(p, str):
            if not p:
                raise ValueError(f"prompt[{i}] is empty")
            try:
                _utf8(p)
            except ValueError as e:
                raise ValueError(f"prompt[{i}]: {e}") from None
    return prompts


def _content(v: Any) -> str:
    """A message's content: a string or a list of text parts (joined)."""
    if isinstance(v, str):
        return _utf8(v)
    if isinstance(v, list):
        parts = []
        for j, part in enumerate(v):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise ValueError(f"part {j}: only parts of type 'text' with a string 'text' are supported")
            if set(part) - {"type", "text"}:
                raise ValueError(f"part {j}: unsupported field(s) {sorted(set(part) - {'type', 'text'})}")
            parts.append(_utf8(part["text"]))
        return "".join(parts)
    raise ValueError("a message's content must be a string or a list of text parts")


def _noop(default: Any, name: str):
    def check(v: Any) -> Any:
        if v is not None and v != default:
            raise ValueError(f"'{name}' is not supported by this server (only {default!r} is accepted)")
        return v

    return BeforeValidator(check)


Int32Count = Annotated[int, Field(ge=1, le=INT32_MAX)]


class StreamOptions(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    include_usage: bool | None = None
    include_obfuscation: bool | None = None


class _Request(BaseModel):
    """Fields both endpoints take; None means the default."""

    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)

    model: Text
    max_tokens: Int32Count | None = None  # None: what fits in the context
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    top_k: Annotated[int, Field(ge=0, le=INT32_MAX)] | None = None  # the engine's int32
    ignore_eos: bool | None = None
    n: Annotated[int, Field(ge=1, le=MAX_N)] | None = None
    stop: Annotated[list[str], BeforeValidator(_stops)] = []
    seed: Annotated[int, Field(ge=-INT64, lt=INT64)] | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    # accepted only with their no-op value
    frequency_penalty: Annotated[Any, _noop(0, "frequency_penalty")] = None
    presence_penalty: Annotated[Any, _noop(0, "presence_penalty")] = None
    logit_bias: Annotated[Any, _noop({}, "logit_bias")] = None
    store: Annotated[Any, _noop(False, "store")] = None
    user: Text | None = None
    metadata: dict[str, Text] | None = None
    service_tier: Text | None = None

    def check(self) -> None:
        if self.stream_options is not None and not self.stream:
            raise bad("'stream_options' is only allowed when 'stream' is true", "stream_options")


class CompletionRequest(_Request):
    prompt: Annotated[list, BeforeValidator(_prompts)]
    logprobs: Annotated[int, Field(ge=0, le=MAX_LOGPROBS)] | None = None  # alternatives are not computed
    echo: Annotated[Any, _noop(False, "echo")] = None
    best_of: Annotated[Any, _noop(1, "best_of")] = None
    suffix: Annotated[Any, _noop("", "suffix")] = None


class Message(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    role: Literal["system", "developer", "user", "assistant"]
    content: Annotated[str, BeforeValidator(_content)]
    name: Text | None = None


class TextFormat(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    type: Literal["text"]


class ChatRequest(_Request):
    messages: Annotated[list[Message], Field(min_length=1)]
    max_completion_tokens: Int32Count | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=MAX_TOP_LOGPROBS)] | None = None  # alternatives are not computed
    response_format: TextFormat | None = None
    parallel_tool_calls: bool | None = None

    def check(self) -> None:
        super().check()
        if self.max_tokens is not None and self.max_completion_tokens is not None:
            raise bad("give 'max_tokens' or 'max_completion_tokens', not both", "max_completion_tokens")
        if self.top_logprobs is not None and not self.logprobs:
            raise bad("'top_logprobs' needs 'logprobs' set to true", "top_logprobs")

    @property
    def completion_limit(self) -> tuple[int | None, str]:
        """The requested completion length and the field that asked for it."""
        if self.max_completion_tokens is not None:
            return self.max_completion_tokens, "max_completion_tokens"
        return self.max_tokens, "max_tokens"


def _param(loc: tuple) -> str | None:
    """pydantic's location as OpenAI writes a param: ("messages", 0, "role") -> "messages.[0].role"."""
    out = ""
    for part in loc:
        out += f".[{part}]" if isinstance(part, int) else f".{part}"
    return out[1:] or None


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _api_error(e: ValidationError) -> ApiError:
    err = e.errors(include_url=False)[0]
    param = _param(err["loc"])
    kind = err["type"]
    if kind == "extra_forbidden":
        return bad(f"Unrecognized request argument supplied: {param}", param)
    if kind == "missing":
        return bad(f"you must provide a {param} parameter", param)
    if kind == "value_error":
        return bad(f"{param}: {err['ctx']['error']}", param)
    return bad(f"{_shown(err['input'])} is not a valid value for '{param}': {err['msg']}", param)


def _validate(cls: type[_Request], body: Any) -> Any:
    if not isinstance(body, dict):
        raise bad("the request body must be a JSON object")
    try:
        req = cls.model_validate(body)
    except ValidationError as e:
        raise _api_error(e) from None
    req.check()
    return req


def parse_completion(body: Any) -> CompletionRequest:
    """Validate a /v1/completions body (the value `decode_json` gave)."""
    return _validate(CompletionRequest, body)


def parse_chat(body: Any) -> ChatRequest:
    """Validate a /v1/chat/completions body (text messages only; no tools)."""
    return _validate(ChatRequest, body)
