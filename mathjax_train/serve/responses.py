"""OpenAI response bodies and stream chunks as typed models (the shapes the official client parses).

`logprobs` carry the model's log probability of each sampled token; the top alternatives are not
computed (their lists are empty). `to_json` gives the bytes the server sends.
"""

from __future__ import annotations

import time
import uuid
from typing import Literal

from pydantic import BaseModel, model_serializer

FINISH = {"eos": "stop", "stop": "stop", "length": "length"}  # the engine's reasons as OpenAI names them


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


def finish_reason(engine_reason: str) -> str:
    """An end of sequence is a "stop" in OpenAI's terms."""
    return FINISH.get(engine_reason, engine_reason)


def to_json(model: BaseModel) -> bytes:
    return model.__pydantic_serializer__.to_json(model)


def _logprob(x: float) -> float:
    return max(float(x), -9999.0)  # JSON has no -Infinity


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    @classmethod
    def of(cls, prompt_tokens: int, completion_tokens: int) -> Usage:
        return cls(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
        )


class CompletionLogprobs(BaseModel):
    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]]
    text_offset: list[int]

    @classmethod
    def of(cls, tokens: list[str], logprobs: list[float], offset: int = 0) -> CompletionLogprobs:
        """`offset`: where the first token starts in the completion text."""
        offsets = []
        for t in tokens:
            offsets.append(offset)
            offset += len(t)
        return cls(
            tokens=tokens,
            token_logprobs=[_logprob(x) for x in logprobs],
            top_logprobs=[{} for _ in tokens],
            text_offset=offsets,
        )


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: str | None = None


class Completion(BaseModel):
    """A /v1/completions answer, or (with `usage` None and one choice) one stream chunk."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    system_fingerprint: None = None
    choices: list[CompletionChoice]
    usage: Usage | None = None


class TokenLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int]
    top_logprobs: list[dict[str, float]]


class ChatLogprobs(BaseModel):
    content: list[TokenLogprob]
    refusal: None = None

    @classmethod
    def of(cls, tokens: list[str], logprobs: list[float]) -> ChatLogprobs:
        return cls(
            content=[
                TokenLogprob(token=t, logprob=_logprob(x), bytes=list(t.encode("utf-8")), top_logprobs=[])
                for t, x in zip(tokens, logprobs)
            ]
        )


class ChatMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str
    refusal: None = None


class ChatChoice(BaseModel):
    index: int
    message: ChatMessage
    logprobs: ChatLogprobs | None = None
    finish_reason: str


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    system_fingerprint: None = None
    choices: list[ChatChoice]
    usage: Usage


class ChatDelta(BaseModel):
    """What a chat stream chunk adds; absent fields are left out (the last delta of a choice is {})."""

    role: Literal["assistant"] | None = None
    content: str | None = None

    @model_serializer(mode="wrap")
    def _present(self, handler):
        return {k: v for k, v in handler(self).items() if v is not None}


class ChatChunkChoice(BaseModel):
    index: int
    delta: ChatDelta
    logprobs: ChatLogprobs | None = None
    finish_reason: str | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    system_fingerprint: None = None
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "mathjax-train"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    error: ErrorDetail
