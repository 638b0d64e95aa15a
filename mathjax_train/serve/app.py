"""The OpenAI-compatible endpoints as plain functions: validated body in, response body or chunks out.

No HTTP here (server.py does that). Each prompt of a request is one engine submit with n seeds (the
prompt is prefilled once for its n choices); the rows join the running batch at the engine's next
chunk, whatever their settings. Streams send text as the engine produces it (see TextStream). A
request whose client went away (`disconnected()` says so, or a write failed and the server closed
the chunk generator) cancels its rows, which frees their slots and pages.

Seeds: choice j of prompt i gets `sample_seed(seed, i, j)`; without a `seed` in the request, `seed`
is drawn at random per request (as OpenAI: no seed, no reproducibility). Greedy ignores seeds.
"""

from __future__ import annotations

import queue
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

from mathjax_train.config import EngineConfig
from mathjax_train.infer.chat import render_chat
from mathjax_train.infer.engine import Engine, SeqState
from mathjax_train.infer.loading import LoadedModel
from mathjax_train.infer.params import Completion, SamplingParams, sample_seed
from mathjax_train.serve import protocol as P
from mathjax_train.serve.engine_loop import EngineLoop

Disconnected = Callable[[], bool]


class ClientGone(Exception):
    """The client closed its connection before the answer; the request's rows were cancelled."""


class TextStream:
    """One choice's text as its tokens arrive, in deltas that are safe to send: text is held back
    while it ends in an incomplete UTF-8 character (U+FFFD) or in what may be the start of a stop
    string, and never runs past a stop string. `finish` sends the rest of the final text."""

    def __init__(self, decode: Callable[[list[int]], str], eos_ids: Sequence[int], stops: Sequence[str]):
        self.decode, self.eos, self.stops = decode, set(eos_ids), tuple(stops)
        self.ids: list[int] = []
        self.sent = ""
        self.mismatch = False  # the final text did not extend what was sent (a decoder that is not prefix-stable)

    def push(self, ids: Sequence[int]) -> str:
        self.ids += [t for t in ids if t not in self.eos]
        text = self.decode(self.ids)
        safe = len(text.rstrip("\ufffd"))
        for s in self.stops:
            at = text.find(s)
            if at >= 0:
                safe = min(safe, at)
        safe -= self._stop_prefix(text[:safe])
        if safe <= len(self.sent) or not text.startswith(self.sent):
            return ""
        piece, self.sent = text[len(self.sent) : safe], text[:safe]
        return piece

    def _stop_prefix(self, text: str) -> int:
        """Length of the longest tail of `text` that is a proper prefix of a stop string."""
        longest = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(text)), longest, -1):
                if text.endswith(s[:k]):
                    longest = k
                    break
        return longest

    def finish(self, final_text: str) -> str:
        if not final_text.startswith(self.sent):
            self.mismatch = True
        rest, self.sent = final_text[len(self.sent) :], final_text
        return rest


@dataclass(eq=False)
class _Choice:
    index: int
    row: SeqState
    text: TextStream
    completion: Completion | None = None
    text_offset: int = 0  # streamed completions logprobs: where the next token starts


@dataclass(eq=False)
class _Request:
    """One HTTP request's rows and the queue the engine loop puts their events on."""

    rid: str
    options: P.Options
    prompt_ids: list[list[int]]
    deadline: float
    events: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    choices: list[_Choice] = field(default_factory=list)  # prompt-major: index = prompt_index * n + sample_index
    by_row: dict[int, _Choice] = field(default_factory=dict)
    unfinished: int = 0

    @property
    def rows(self) -> list[SeqState]:
        return [c.row for c in self.choices]


@dataclass
class AppStats:
    """Counters bumped by the HTTP threads (under `lock`)."""

    requests: int = 0
    cancelled_requests: int = 0  # client gone, timed out or failed: their rows were cancelled
    stream_text_mismatches: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, name: str, k: int = 1) -> None:
        with self.lock:
            setattr(self, name, getattr(self, name) + k)

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "lock"}


class ServeApp:
    """The endpoints over one Engine run by an EngineLoop. `context` is the longest prompt +
    completion a row may have (the engine's sequence limit and its KV pages)."""

    def __init__(
        self,
        model: LoadedModel,
        model_name: str,
        engine_config: EngineConfig | None = None,
        *,
        max_seq_len: int = 0,
        request_timeout_s: float = 600.0,
        max_live_rows: int = 4096,
        poll_s: float = 0.25,
        compile_ahead: bool = False,
    ):
        self.model, self.model_name = model, model_name
        self.tokenizer = model.tokenizer
        self.engine = Engine(model, engine_config or EngineConfig(), max_seq_len=max_seq_len)
        if compile_ahead:  # before the loop thread owns the engine
            self.engine.compile_ahead()
        self.loop = EngineLoop(self.engine, max_live_rows=max_live_rows)
        self.context = min(self.engine.max_seq_len, self.engine.pool.usable * self.engine.page_size)
        self.request_timeout_s, self.poll_s = request_timeout_s, poll_s
        self.stats = AppStats()
        self.created = int(time.time())

    def close(self) -> None:
        self.loop.close()

    def stats_dict(self) -> dict:
        e = self.engine
        return {
            "app": self.stats.as_dict(),
            "loop": self.loop.stats_dict(),
            "engine": e.stats.as_dict(),
            "running": len(e.running),
            "waiting": len(e.waiting),
            "num_slots": e.num_slots,
            "pages_free": e.pool.free,
            "pages_usable": e.pool.usable,
            "context": self.context,
        }

    # -- endpoints ---------------------------------------------------------------------------

    def models(self) -> dict:
        return P.models_body(self.model_name, self.created)

    def model_info(self, name: str) -> dict:
        self._check_model(name)
        return P.model_body(self.model_name, self.created)

    def completions(self, body, disconnected: Disconnected | None = None) -> dict | Iterator[dict]:
        req = P.parse_completion(body)
        self._check_model(req.model)
        ids = [self._encode_prompt(p, i) for i, p in enumerate(req.prompts)]
        r = self._start(P.new_id("cmpl"), req.options, ids, (), "prompt")
        if req.options.stream:
            return self._stream(r, "text_completion", disconnected)
        self._collect(r, disconnected)
        return P.completion_body(
            r.rid, self.model_name, [self._final(r, c, chat=False) for c in r.choices], self._usage(r)
        )

    def chat(self, body, disconnected: Disconnected | None = None) -> dict | Iterator[dict]:
        import jinja2

        req = P.parse_chat(body)
        self._check_model(req.model)
        try:
            rendered = render_chat(self.tokenizer, req.messages)
        except jinja2.TemplateError as e:
            raise P.bad(f"the model's chat template rejected these messages: {e}", "messages") from None
        r = self._start(P.new_id("chatcmpl"), req.options, [rendered.prompt_ids], rendered.implicit_stop, "messages")
        if req.options.stream:
            return self._stream(r, "chat.completion.chunk", disconnected)
        self._collect(r, disconnected)
        return P.chat_body(r.rid, self.model_name, [self._final(r, c, chat=True) for c in r.choices], self._usage(r))

    # -- submitting ----------------------------------------------------------------------------

    def _check_model(self, name: str) -> None:
        if name != self.model_name:
            raise P.ApiError(
                404,
                f"The model `{name}` does not exist; this server serves `{self.model_name}`.",
                param="model",
                code="model_not_found",
            )

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

    def _max_tokens(self, opts: P.Options, n_prompt: int, param: str) -> int:
        """The request's max_tokens, or what fits in the context; 400 when the prompt leaves no room."""
        c = self.context
        if n_prompt >= c:
            raise P.bad(
                f"This model's maximum context length is {c} tokens. However, your prompt has {n_prompt} "
                f"tokens, which leaves no room for a completion. Please reduce the prompt.",
                param,
                "context_length_exceeded",
            )
        wanted = opts.max_tokens if opts.max_tokens is not None else c - n_prompt
        if n_prompt + wanted > c:
            raise P.bad(
                f"This model's maximum context length is {c} tokens. However, you requested "
                f"{n_prompt + wanted} tokens ({n_prompt} in the prompt, {wanted} in the completion). "
                "Please reduce the prompt or the completion length.",
                param,
                "context_length_exceeded",
            )
        return wanted

    def _start(
        self, rid: str, opts: P.Options, prompt_ids: list[list[int]], implicit_stop: tuple[str, ...], param: str
    ) -> _Request:
        """Validate every prompt, then submit each with n seeds; nothing is submitted if one is refused."""
        stops = tuple(opts.stop) + tuple(s for s in implicit_stop if s not in opts.stop)
        plans = []
        for ids in prompt_ids:
            try:
                sp = SamplingParams(
                    max_tokens=self._max_tokens(opts, len(ids), param),
                    temperature=opts.temperature,
                    top_p=opts.top_p,
                    top_k=opts.top_k,
                    stop=stops,
                    ignore_eos=opts.ignore_eos,
                )
            except ValueError as e:
                raise P.bad(str(e)) from None
            plans.append((ids, sp))
        base = opts.seed if opts.seed is not None else random.getrandbits(32)
        r = _Request(rid, opts, prompt_ids, time.monotonic() + self.request_timeout_s)
        try:
            for i, (ids, sp) in enumerate(plans):
                seeds = [sample_seed(base, i, j) for j in range(opts.n)]
                rows = self.loop.submit(ids, sp, seeds, r.events, stream=opts.stream)
                for row in rows:
                    ch = _Choice(len(r.choices), row, TextStream(self.tokenizer.decode, self.engine.eos_ids, stops))
                    r.choices.append(ch)
                    r.by_row[row.id] = ch
                r.unfinished += len(rows)
        except OverflowError as e:
            self.loop.cancel(r.rows)
            raise P.ApiError(
                429,
                f"The server is overloaded ({e}); retry later.",
                type="server_overloaded",
                code="rate_limit_exceeded",
            ) from None
        except RuntimeError as e:  # shutting down
            self.loop.cancel(r.rows)
            raise P.ApiError(503, str(e), type="server_error") from None
        except ValueError as e:  # the engine refused the prompt (checked above, so only on a mismatch)
            self.loop.cancel(r.rows)
            raise P.bad(str(e), param, "context_length_exceeded") from None
        self.stats.add("requests")
        return r

    # -- waiting -------------------------------------------------------------------------------

    def _next_event(self, r: _Request, disconnected: Disconnected | None) -> tuple:
        """The next engine event of `r`; checks the client and the deadline every `poll_s`."""
        while True:
            try:
                return r.events.get(timeout=self.poll_s)
            except queue.Empty:
                pass
            if disconnected is not None and disconnected():
                raise ClientGone(f"request {r.rid}: the client disconnected")
            if time.monotonic() > r.deadline:
                raise P.ApiError(
                    504, f"generation took longer than {self.request_timeout_s}s", type="server_error", code="timeout"
                )

    def _handle(self, r: _Request, event: tuple) -> tuple[str, _Choice, tuple]:
        """Record a finish; raise ApiError for a failed step or a row aborted by someone else."""
        kind, row, *rest = event
        ch = r.by_row[row.id]
        if kind == "error":
            err = rest[0]
            raise P.ApiError(500, f"generation failed: {type(err).__name__}: {err}", type="server_error")
        if kind == "finish":
            ch.completion = rest[0]
            r.unfinished -= 1
            if ch.completion.finish_reason == "aborted":
                raise P.ApiError(500, "generation was aborted on the server", type="server_error")
        return kind, ch, tuple(rest)

    def _cancel_unfinished(self, r: _Request) -> None:
        if r.unfinished:
            self.stats.add("cancelled_requests")
            self.loop.cancel(r.rows)

    def _collect(self, r: _Request, disconnected: Disconnected | None) -> None:
        try:
            while r.unfinished:
                self._handle(r, self._next_event(r, disconnected))
        finally:
            self._cancel_unfinished(r)

    # -- answers -------------------------------------------------------------------------------

    def _token_strings(self, ids: Sequence[int]) -> list[str]:
        return [self.tokenizer.decode([t], skip_special_tokens=False) for t in ids]

    def _final(self, r: _Request, ch: _Choice, chat: bool) -> tuple[str, str, dict | None]:
        c = ch.completion
        assert c is not None  # called once every row has finished
        lp = None
        if r.options.logprobs:
            toks = self._token_strings(c.token_ids)
            lp = P.chat_logprobs(toks, c.logprobs) if chat else P.completion_logprobs(toks, c.logprobs)
        return c.text, P.finish_reason(c.finish_reason), lp

    def _usage(self, r: _Request) -> dict:
        prompt_tokens = sum(len(ids) for ids in r.prompt_ids)  # each prompt once, as OpenAI counts
        return P.usage(prompt_tokens, sum(len(c.completion.token_ids) for c in r.choices if c.completion))

    def _stream(self, r: _Request, obj: str, disconnected: Disconnected | None) -> Iterator[dict]:
        """Chunks as the engine produces tokens; closing the generator early cancels the unfinished rows."""
        chat = obj == "chat.completion.chunk"
        name = self.model_name

        def chunk(index: int, text: str | None, finish: str | None, logprobs: dict | None = None) -> dict:
            if chat:
                delta = {} if text is None else {"content": text}
                return P.chat_chunk(r.rid, name, index, delta, finish, logprobs)
            return P.completion_chunk(r.rid, name, index, text or "", finish, logprobs)

        def chunks() -> Iterator[dict]:
            try:
                if chat:
                    for ch in r.choices:
                        yield P.chat_chunk(r.rid, name, ch.index, {"role": "assistant", "content": ""}, None)
                while r.unfinished:
                    kind, ch, rest = self._handle(r, self._next_event(r, disconnected))
                    if kind == "tokens":
                        ids, lps = rest
                        piece = ch.text.push(ids)
                        lp = self._stream_logprobs(ch, ids, lps, chat) if r.options.logprobs else None
                        if piece or lp:
                            yield chunk(ch.index, piece, None, lp)
                    else:  # a finish: _handle recorded the completion
                        assert ch.completion is not None
                        rest_text = ch.text.finish(ch.completion.text)
                        self.stats.add("stream_text_mismatches", int(ch.text.mismatch))
                        if rest_text:
                            yield chunk(ch.index, rest_text, None)
                        yield chunk(ch.index, None, P.finish_reason(ch.completion.finish_reason))
                if r.options.include_usage:
                    yield P.usage_chunk(r.rid, name, obj, self._usage(r))
            finally:
                self._cancel_unfinished(r)

        return chunks()

    def _stream_logprobs(self, ch: _Choice, ids: list[int], lps: list[float], chat: bool) -> dict:
        toks = self._token_strings(ids)
        if chat:
            return P.chat_logprobs(toks, lps)
        out = P.completion_logprobs(toks, lps, ch.text_offset)
        ch.text_offset += sum(len(t) for t in toks)
        return out
