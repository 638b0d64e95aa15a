"""The OpenAI-compatible endpoints as plain functions: validated body in, response body or chunks out.

No HTTP here (server.py does that). A request becomes one batcher Job per choice; streaming
responses are produced once a choice is finished, split into one delta per generated token.
"""
from __future__ import annotations

import random
import time
from concurrent.futures import Future, as_completed
from dataclasses import dataclass
from typing import Iterator

from mathjax_train.infer.batch_job import row_seed
from mathjax_train.infer.loading import LoadedModel
from mathjax_train.serve import protocol as P
from mathjax_train.serve.batcher import Batcher, Job, Result
from mathjax_train.infer.chat import render_chat

COMPLETIONS_DEFAULT_MAX_TOKENS = 16  # the OpenAI default for /v1/completions


@dataclass
class Prepared:
    """A validated request turned into token ids and per-choice jobs."""

    rid: str
    options: P.Options
    prompt_ids: list[list[int]]
    jobs: list[Job]  # prompt-major: choice index = prompt_index * n + sample_index


class ServeApp:
    def __init__(self, model: LoadedModel, model_name: str, *, max_batch: int = 8, chat_max_tokens: int = 256,
                 request_timeout_s: float = 600.0):
        self.model, self.model_name = model, model_name
        self.tokenizer = model.tokenizer
        self.context = model.cfg.max_position_embeddings
        self.chat_max_tokens = chat_max_tokens
        self.request_timeout_s = request_timeout_s
        self.batcher = Batcher(model, max_batch=max_batch)
        self.created = int(time.time())

    def close(self) -> None:
        self.batcher.close()

    # -- endpoints ---------------------------------------------------------------------------

    def models(self) -> dict:
        return P.models_body(self.model_name, self.created)

    def model_info(self, name: str) -> dict:
        self._check_model(name)
        return P.model_body(self.model_name, self.created)

    def completions(self, body) -> dict | Iterator[dict]:
        req = P.parse_completion(body)
        self._check_model(req.model)
        ids = [self._encode_prompt(p, i) for i, p in enumerate(req.prompts)]
        prep = self._prepare(P.new_id("cmpl"), req.options, ids, COMPLETIONS_DEFAULT_MAX_TOKENS, ())
        if req.options.stream:
            return self._stream(prep, "text_completion")
        results = self._wait(prep)
        return P.completion_body(prep.rid, self.model_name, [(r.text, r.finish_reason) for r in results],
                                 self._usage(prep, results))

    def chat(self, body) -> dict | Iterator[dict]:
        import jinja2

        req = P.parse_chat(body)
        self._check_model(req.model)
        try:
            rendered = render_chat(self.tokenizer, req.messages)
        except jinja2.TemplateError as e:
            raise P.bad(f"the model's chat template rejected these messages: {e}", "messages") from None
        prep = self._prepare(P.new_id("chatcmpl"), req.options, [rendered.prompt_ids], None, rendered.implicit_stop)
        if req.options.stream:
            return self._stream(prep, "chat.completion.chunk")
        results = self._wait(prep)
        return P.chat_body(prep.rid, self.model_name, [(r.text, r.finish_reason) for r in results],
                           self._usage(prep, results))

    # -- helpers -----------------------------------------------------------------------------

    def _check_model(self, name: str) -> None:
        if name != self.model_name:
            raise P.ApiError(404, f"The model `{name}` does not exist; this server serves `{self.model_name}`.",
                             param="model", code="model_not_found")

    def _encode_prompt(self, prompt, index: int) -> list[int]:
        if isinstance(prompt, str):
            ids = self.tokenizer.encode(prompt)
        else:
            vocab = self.model.cfg.vocab_size
            bad = [t for t in prompt if not 0 <= t < vocab]
            if bad:
                raise P.bad(f"prompt[{index}] holds token id {bad[0]}, outside the vocabulary [0, {vocab})", "prompt")
            ids = list(prompt)
        if not ids:
            raise P.bad(f"prompt[{index}] encodes to no tokens", "prompt")
        return ids

    def _prepare(self, rid: str, opts: P.Options, prompt_ids: list[list[int]], default_max: int | None,
                 implicit_stop: tuple[str, ...]) -> Prepared:
        jobs = []
        for p, ids in enumerate(prompt_ids):
            room = self.context - len(ids)
            max_tokens = opts.max_tokens or (default_max if default_max is not None else self.chat_max_tokens)
            if opts.max_tokens is None:
                max_tokens = min(max_tokens, room)
            if room < 1 or len(ids) + max_tokens > self.context:
                raise P.bad(f"This model's maximum context length is {self.context} tokens. However, you requested "
                            f"{len(ids) + max_tokens} tokens ({len(ids)} in the prompt, {max_tokens} in the "
                            "completion). Please reduce the prompt or the completion length.",
                            "messages" if default_max is None else "prompt", "context_length_exceeded")
            for j in range(opts.n):
                seed = row_seed(opts.seed, p, j) if opts.seed is not None else random.getrandbits(32)
                jobs.append(Job(ids, max_tokens, opts.temperature, opts.top_p, tuple(opts.stop) + implicit_stop, seed))
        prep = Prepared(rid, opts, prompt_ids, jobs)
        try:
            for job in jobs:
                self.batcher.submit(job)
        except OverflowError as e:
            for job in jobs:
                job.future.cancel()
            raise P.ApiError(429, f"The server is overloaded ({e}); retry later.", type="server_overloaded",
                             code="rate_limit_exceeded") from None
        return prep

    def _result(self, fut: Future) -> Result:
        try:
            return fut.result(timeout=self.request_timeout_s)
        except TimeoutError:
            raise P.ApiError(504, f"generation took longer than {self.request_timeout_s}s", type="server_error",
                             code="timeout") from None
        except Exception as e:  # the batch failed on the worker
            raise P.ApiError(500, f"generation failed: {type(e).__name__}: {e}", type="server_error") from None

    def _wait(self, prep: Prepared) -> list[Result]:
        return [self._result(j.future) for j in prep.jobs]

    def _usage(self, prep: Prepared, results: list[Result]) -> dict:
        prompt_tokens = sum(len(ids) for ids in prep.prompt_ids)  # each prompt once, as OpenAI counts
        return P.usage(prompt_tokens, sum(len(r.token_ids) for r in results))

    def _stream(self, prep: Prepared, obj: str) -> Iterator[dict]:
        """Chunks for each choice as soon as it is finished; the generator raises ApiError on failure."""
        index_of = {id(j.future): i for i, j in enumerate(prep.jobs)}
        # Fail before any byte is sent if the first finished choice already failed.
        futures = as_completed([j.future for j in prep.jobs], timeout=self.request_timeout_s)
        try:
            first = next(futures)
        except TimeoutError:
            raise P.ApiError(504, f"generation took longer than {self.request_timeout_s}s", type="server_error",
                             code="timeout") from None
        first_result = self._result(first)

        def chunks() -> Iterator[dict]:
            done: list[Result] = []
            for fut, res in _chain(first, first_result, futures, self._result):
                done.append(res)
                i = index_of[id(fut)]
                yield from self._choice_chunks(prep.rid, obj, i, res)
            if prep.options.include_usage:
                yield P.usage_chunk(prep.rid, self.model_name, obj, self._usage(prep, done))

        return chunks()

    def _choice_chunks(self, rid: str, obj: str, index: int, res: Result) -> Iterator[dict]:
        pieces = text_deltas(self.tokenizer.decode, res.token_ids, res.text)
        if obj == "text_completion":
            for piece in pieces:
                yield P.completion_chunk(rid, self.model_name, index, piece, None)
            yield P.completion_chunk(rid, self.model_name, index, "", res.finish_reason)
        else:
            yield P.chat_chunk(rid, self.model_name, index, {"role": "assistant", "content": ""}, None)
            for piece in pieces:
                yield P.chat_chunk(rid, self.model_name, index, {"content": piece}, None)
            yield P.chat_chunk(rid, self.model_name, index, {}, res.finish_reason)


def _chain(first, first_result, rest, get):
    yield first, first_result
    for fut in rest:
        yield fut, get(fut)


def text_deltas(decode, token_ids: list[int], final_text: str) -> list[str]:
    """Split `final_text` into one piece per token that adds text; the pieces join to `final_text`.

    A piece ends where decoding the first k tokens stops, except while that decode ends in an
    incomplete UTF-8 sequence (U+FFFD), which is held back until the character is complete.
    """
    pieces, emitted = [], 0
    for k in range(1, len(token_ids) + 1):
        partial = decode(token_ids[:k])
        if partial.endswith("\ufffd"):
            continue
        end = min(len(partial), len(final_text))
        if end > emitted and final_text.startswith(partial[:end]):
            pieces.append(final_text[emitted:end])
            emitted = end
    if emitted < len(final_text):
        pieces.append(final_text[emitted:])
    return pieces
