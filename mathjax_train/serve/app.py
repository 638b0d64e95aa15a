"""The OpenAI endpoints' semantics, HTTP aside: a validated request in, a body or a stream of chunks out.

Each prompt of a request is one group of n rows (prefilled once); the request's rows join the
running batch as the engine loop hands them over (requests take turns). Prompt sizes are checked
in bytes before tokenizing, and tokenizing runs on a worker thread, so a huge prompt is refused
without holding up other clients. Events come back through the request's EventBox; a request whose
client went away (`Running.cancel`), that failed, or that outlived `request_timeout_s` has its rows
cancelled, which frees their slots and pages; `cancel("shutdown")` ends one with a 503 (streams: an
error event).

Seeds: choice j of prompt i gets `sample_seed(seed, i, j)`; without a `seed` in the request, `seed`
is drawn at random per request (as OpenAI: no seed, no reproducibility). Greedy ignores seeds.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import AsyncGenerator, Callable, Sequence

from mathjax_train.config import EngineConfig, InputError
from mathjax_train.data.vocab import Tokenizer
from mathjax_train.infer.chat import render_chat
from mathjax_train.infer.engine import Engine
from mathjax_train.infer.loading import LoadedModel
from mathjax_train.infer.params import Completion, SamplingParams, sample_seed
from mathjax_train.serve import responses as R
from mathjax_train.serve.engine_loop import EngineLoop, Group, Ticket
from mathjax_train.serve.errors import ApiError, bad, overloaded, unavailable
from mathjax_train.serve.events import EventBox
from mathjax_train.serve.requests import ChatRequest, CompletionRequest, _Request
from mathjax_train.serve.text_stream import TextStream

OFF_LOOP_CHARS = 4096  # prompts at least this long are tokenized on a worker thread


class ClientGone(Exception):
    """The client closed its connection before the answer; the request's rows were cancelled."""


def max_token_bytes(tokenizer: Tokenizer) -> int:
    """The most UTF-8 bytes any vocabulary entry is written with (an upper bound on what one token covers)."""
    if tokenizer.kind == "tokenizers":
        pieces: Sequence[str] = list(tokenizer.backend.get_vocab(with_added_tokens=True))
    else:
        pieces = [tokenizer.backend.id_to_piece(i) for i in range(tokenizer.backend.get_piece_size())]
    return max((len(p.encode("utf-8", "replace")) for p in pieces), default=1) or 1


def utf8_len(s: str) -> int:
    return len(s) if s.isascii() else len(s.encode("utf-8"))


@dataclass
class AppStats:
    """Counters of the event loop's thread."""

    requests: int = 0
    refused_requests: int = 0  # 429: the server held too many rows
    cancelled_requests: int = 0  # client gone, timed out, failed or shut down: their rows were cancelled
    stream_text_mismatches: int = 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(eq=False)
class _Choice:
    index: int
    text: TextStream
    completion: Completion | None = None
    text_offset: int = 0  # streamed completions logprobs: where the next token starts


@dataclass(eq=False)
class Running:
    """One request in flight: its rows' events arrive in `box`."""

    app: ServeApp
    rid: str
    chat: bool
    logprobs: bool
    include_usage: bool
    prompt_tokens: int
    choices: list[_Choice]
    box: EventBox
    deadline: float
    ticket: Ticket | None = None
    unfinished: int = 0
    done: bool = False
    on_end: list[Callable[[Running], None]] = field(default_factory=list)

    def cancel(self, why: str = "gone") -> None:
        """Stop the request's rows (e.g. its client went away); its waiting coroutine wakes and ends."""
        if self.ticket is not None:
            self.app.loop.cancel(self.ticket)
        self.box.put((why,))

    # -- events --------------------------------------------------------------------------------

    async def _events(self) -> list[tuple]:
        left = self.deadline - time.monotonic()
        try:
            return await asyncio.wait_for(self.box.take(), timeout=max(left, 0.0))
        except TimeoutError:
            raise ApiError(
                504, f"generation took longer than {self.app.request_timeout_s}s", type="server_error", code="timeout"
            ) from None

    def _handle(self, event: tuple) -> tuple[str, _Choice | None, tuple]:
        """Record a finish; raise for a failure, a row aborted elsewhere, a gone client or a shutdown."""
        kind = event[0]
        if kind == "gone":
            raise ClientGone(f"request {self.rid}: the client disconnected")
        if kind == "shutdown":
            raise unavailable("the server is shutting down; retry on another server")
        ch = self.choices[event[1]]
        if kind == "error":
            err = event[2]
            if isinstance(err, InputError):
                raise bad(str(err))
            raise ApiError(500, f"generation failed: {type(err).__name__}: {err}", type="server_error")
        if kind == "finish":
            ch.completion = event[2]
            self.unfinished -= 1
            if ch.completion.finish_reason == "aborted":
                raise ApiError(500, "generation was aborted on the server", type="server_error")
        return kind, ch, tuple(event[2:])

    def _end(self) -> None:
        if self.done:
            return
        self.done = True
        self.app.open.discard(self)
        for fn in self.on_end:
            fn(self)
        if self.unfinished:
            self.app.stats.cancelled_requests += 1
            if self.ticket is not None:
                self.app.loop.cancel(self.ticket)

    # -- answers -------------------------------------------------------------------------------

    async def collect(self) -> R.Completion | R.ChatCompletion:
        """The whole answer once every row has finished."""
        try:
            while self.unfinished:
                for event in await self._events():
                    self._handle(event)
        finally:
            self._end()
        app, use = self.app, self._usage()
        if self.chat:
            return R.ChatCompletion(
                id=self.rid,
                created=R.now(),
                model=app.model_name,
                choices=[
                    R.ChatChoice(
                        index=c.index,
                        message=R.ChatMessage(content=self._done(c).text),
                        logprobs=self._chat_logprobs(self._done(c)),
                        finish_reason=R.finish_reason(self._done(c).finish_reason),
                    )
                    for c in self.choices
                ],
                usage=use,
            )
        return R.Completion(
            id=self.rid,
            created=R.now(),
            model=app.model_name,
            choices=[
                R.CompletionChoice(
                    index=c.index,
                    text=self._done(c).text,
                    logprobs=self._completion_logprobs(self._done(c).token_ids, self._done(c).logprobs)
                    if self.logprobs
                    else None,
                    finish_reason=R.finish_reason(self._done(c).finish_reason),
                )
                for c in self.choices
            ],
            usage=use,
        )

    async def chunks(self) -> AsyncGenerator[R.Completion | R.ChatCompletionChunk, None]:
        """Chunks as the engine produces tokens; ending early (or closing the generator) cancels the rows."""
        try:
            if self.chat:
                for ch in self.choices:
                    yield self._chunk(ch.index, None, None, role=True)
            while self.unfinished:
                for event in await self._events():
                    kind, got, rest = self._handle(event)
                    assert got is not None
                    ch = got
                    if kind == "tokens":
                        ids, lps = rest
                        piece = ch.text.push(ids)
                        lp = self._stream_logprobs(ch, ids, lps) if self.logprobs else None
                        if piece or lp:
                            yield self._chunk(ch.index, piece, None, lp)
                    else:  # a finish: _handle recorded the completion
                        done = self._done(ch)
                        rest_text = ch.text.finish(done.text)
                        self.app.stats.stream_text_mismatches += int(ch.text.mismatch)
                        if rest_text:
                            yield self._chunk(ch.index, rest_text, None)
                        yield self._chunk(ch.index, None, R.finish_reason(done.finish_reason))
            if self.include_usage:
                yield self._usage_chunk()
        finally:
            self._end()

    @staticmethod
    def _done(ch: _Choice) -> Completion:
        assert ch.completion is not None  # called once every row has finished
        return ch.completion

    def _usage(self) -> R.Usage:
        generated = sum(len(c.completion.token_ids) for c in self.choices if c.completion)
        return R.Usage.of(self.prompt_tokens, generated)

    def _chunk(self, index: int, text: str | None, finish: str | None, logprobs=None, role: bool = False):
        app = self.app
        if self.chat:
            delta = R.ChatDelta(role="assistant", content="") if role else R.ChatDelta(content=text)
            choice = R.ChatChunkChoice(index=index, delta=delta, logprobs=logprobs, finish_reason=finish)
            return R.ChatCompletionChunk(id=self.rid, created=R.now(), model=app.model_name, choices=[choice])
        c = R.CompletionChoice(index=index, text=text or "", logprobs=logprobs, finish_reason=finish)
        return R.Completion(id=self.rid, created=R.now(), model=app.model_name, choices=[c])

    def _usage_chunk(self):
        """The last stream chunk when stream_options.include_usage is set: no choices, only usage."""
        cls = R.ChatCompletionChunk if self.chat else R.Completion
        return cls(id=self.rid, created=R.now(), model=self.app.model_name, choices=[], usage=self._usage())

    def _chat_logprobs(self, c: Completion) -> R.ChatLogprobs | None:
        if not self.logprobs:
            return None
        return R.ChatLogprobs.of(self.app.token_strings(c.token_ids), c.logprobs)

    def _completion_logprobs(self, ids: Sequence[int], lps: Sequence[float], offset: int = 0) -> R.CompletionLogprobs:
        return R.CompletionLogprobs.of(self.app.token_strings(ids), list(lps), offset)

    def _stream_logprobs(self, ch: _Choice, ids: list[int], lps: list[float]):
        toks = self.app.token_strings(ids)
        if self.chat:
            return R.ChatLogprobs.of(toks, lps)
        out = R.CompletionLogprobs.of(toks, lps, ch.text_offset)
        ch.text_offset += sum(len(t) for t in toks)
        return out


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
        compile_ahead: bool = False,
    ):
        self.model, self.model_name = model, model_name
        self.tokenizer = model.tokenizer
        self.engine = Engine(model, engine_config or EngineConfig(), max_seq_len=max_seq_len, isolate_rows=True)
        if compile_ahead:  # before the loop thread owns the engine
            self.engine.compile_ahead()
        self.loop = EngineLoop(self.engine, max_live_rows=max_live_rows)
        self.context = min(self.engine.max_seq_len, self.engine.pool.usable * self.engine.page_size)
        # a prompt of more bytes than this has more tokens than the context (x4: normalizers may shrink text)
        self.max_prompt_bytes = self.context * max_token_bytes(self.tokenizer) * 4
        self.request_timeout_s = request_timeout_s
        self.stats = AppStats()
        self.created = R.now()
        self.open: set[Running] = set()  # requests in flight, on every server of this app

    def close(self) -> None:
        self.loop.close()

    def stats_dict(self) -> dict:
        e = self.engine
        return {
            "app": self.stats.as_dict(),
            "loop": self.loop.stats_dict(),
            "engine": e.stats.as_dict(),
            "open_requests": len(self.open),
            "live_rows": self.loop.live_rows,
            "running": len(e.running),
            "waiting": len(e.waiting),
            "num_slots": e.num_slots,
            "pages_free": e.pool.free,
            "pages_usable": e.pool.usable,
            "context": self.context,
        }

    def models(self) -> R.ModelList:
        return R.ModelList(data=[self.model_info(self.model_name)])

    def model_info(self, name: str) -> R.ModelCard:
        self._check_model(name)
        return R.ModelCard(id=self.model_name, created=self.created)

    def token_strings(self, ids: Sequence[int]) -> list[str]:
        return [self.tokenizer.decode([t], skip_special_tokens=False) for t in ids]

    # -- starting requests (on the event loop) --------------------------------------------------

    async def start_completion(self, req: CompletionRequest) -> Running:
        self._check_model(req.model)
        for i, p in enumerate(req.prompt):
            self._check_prompt_size(p, f"prompt[{i}]", "prompt")
        ids = await self._off_loop(
            sum(len(p) for p in req.prompt if isinstance(p, str)),
            lambda: [self._encode_prompt(p, i) for i, p in enumerate(req.prompt)],
        )
        return self._start(R.new_id("cmpl"), req, ids, (), req.max_tokens, "prompt", chat=False)

    async def start_chat(self, req: ChatRequest) -> Running:
        import jinja2

        self._check_model(req.model)
        messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.content} for m in req.messages]
        self._check_prompt_size("".join(m["content"] for m in messages), "the messages", "messages")

        def render():
            try:
                return render_chat(self.tokenizer, messages)
            except jinja2.TemplateError as e:
                raise bad(f"the model's chat template rejected these messages: {e}", "messages") from None

        rendered = await self._off_loop(sum(len(m["content"]) for m in messages), render)
        limit, _ = req.completion_limit
        return self._start(
            R.new_id("chatcmpl"), req, [rendered.prompt_ids], rendered.implicit_stop, limit, "messages", chat=True
        )

    async def _off_loop(self, chars: int, fn: Callable):
        """fn() on a worker thread when the text is long (tokenizing holds the GIL for a while), else here."""
        if chars >= OFF_LOOP_CHARS:
            return await asyncio.to_thread(fn)
        return fn()

    def _check_model(self, name: str) -> None:
        if name != self.model_name:
            raise ApiError(
                404,
                f"The model `{name}` does not exist; this server serves `{self.model_name}`.",
                param="model",
                code="model_not_found",
            )

    def _check_prompt_size(self, prompt, what: str, param: str) -> None:
        """Refuse a text whose bytes alone show it is over the context, before tokenizing it."""
        if isinstance(prompt, str):
            n = utf8_len(prompt)
            if n > self.max_prompt_bytes:
                raise bad(
                    f"This model's maximum context length is {self.context} tokens. However, {what} is {n} bytes "
                    f"long, more than {self.context} tokens can hold ({self.max_prompt_bytes} bytes). "
                    "Please reduce the prompt.",
                    param,
                    "context_length_exceeded",
                )

    def _encode_prompt(self, prompt, index: int) -> list[int]:
        if isinstance(prompt, str):
            ids = self.tokenizer.encode(prompt)
        else:
            vocab = self.model.cfg.vocab_size
            out_of_range = [t for t in prompt if not 0 <= t < vocab]
            if out_of_range:
                raise bad(
                    f"prompt[{index}] holds token id {out_of_range[0]}, outside the vocabulary [0, {vocab})", "prompt"
                )
            ids = list(prompt)
        if not ids:
            raise bad(f"prompt[{index}] encodes to no tokens", "prompt")
        return ids

    def _max_tokens(self, wanted: int | None, n_prompt: int, param: str) -> int:
        """The request's max_tokens, or what fits in the context; 400 when the prompt leaves no room."""
        c = self.context
        if n_prompt >= c:
            raise bad(
                f"This model's maximum context length is {c} tokens. However, your prompt has {n_prompt} "
                f"tokens, which leaves no room for a completion. Please reduce the prompt.",
                param,
                "context_length_exceeded",
            )
        want = wanted if wanted is not None else c - n_prompt
        if n_prompt + want > c:
            raise bad(
                f"This model's maximum context length is {c} tokens. However, you requested "
                f"{n_prompt + want} tokens ({n_prompt} in the prompt, {want} in the completion). "
                "Please reduce the prompt or the completion length.",
                param,
                "context_length_exceeded",
            )
        return want

    def _start(
        self,
        rid: str,
        req: _Request,
        prompt_ids: list[list[int]],
        implicit_stop: tuple[str, ...],
        max_tokens: int | None,
        param: str,
        *,
        chat: bool,
    ) -> Running:
        """Check every prompt, then queue all of its groups at once (or none: 429 / 503)."""
        n = req.n or 1
        if len(prompt_ids) * n > self.loop.max_live_rows:
            raise bad(
                f"this request asks for {len(prompt_ids) * n} sequences ({len(prompt_ids)} prompts x n={n}); "
                f"this server runs at most {self.loop.max_live_rows} at once",
                "n" if len(prompt_ids) == 1 else "prompt",
            )
        stops = tuple(req.stop) + tuple(s for s in implicit_stop if s not in req.stop)
        base = req.seed if req.seed is not None else random.getrandbits(32)
        groups: list[Group] = []
        for i, ids in enumerate(prompt_ids):
            try:
                sp = SamplingParams(
                    max_tokens=self._max_tokens(max_tokens, len(ids), param),
                    temperature=1.0 if req.temperature is None else req.temperature,
                    top_p=1.0 if req.top_p is None else req.top_p,
                    top_k=req.top_k or 0,
                    stop=stops,
                    ignore_eos=bool(req.ignore_eos),
                )
            except InputError as e:
                raise bad(str(e)) from None
            groups.append((ids, sp, [sample_seed(base, i, j) for j in range(n)]))
        loop = asyncio.get_running_loop()
        eos = self.engine.eos_ids
        r = Running(
            self,
            rid,
            chat=chat,
            logprobs=bool(getattr(req, "logprobs", None)),  # an int for completions, a bool for chat
            include_usage=bool(req.stream_options and req.stream_options.include_usage),
            prompt_tokens=sum(len(ids) for ids in prompt_ids),  # each prompt once, as OpenAI counts
            choices=[_Choice(k, TextStream(self.tokenizer.decode, eos, stops)) for k in range(len(groups) * n)],
            box=EventBox(loop),
            deadline=time.monotonic() + self.request_timeout_s,
            unfinished=len(groups) * n,
        )
        try:
            r.ticket = self.loop.submit(groups, r.box.put, stream=bool(req.stream))
        except OverflowError as e:
            self.stats.refused_requests += 1
            raise overloaded(f"The server is overloaded ({e}); retry later.") from None
        except RuntimeError as e:  # shutting down
            raise unavailable(str(e)) from None
        self.stats.requests += 1
        self.open.add(r)
        return r
