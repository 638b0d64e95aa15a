"""The HTTP face of ServeApp: a starlette application (routes, API key, body limit, SSE, access log).

Framing, keep-alive and malformed requests are the HTTP stack's (uvicorn + h11, see server.py);
everything that reaches the application and is refused gets OpenAI's JSON error object. Request
bodies are read up to MAX_BODY_BYTES and parsed and validated on a worker thread when large. A
client that disconnects while it waits (streaming or not) has its request cancelled at once.
"""

from __future__ import annotations

import asyncio
import sys
import time
import traceback
from typing import Any, Awaitable, Callable

from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mathjax_train.serve import responses as R
from mathjax_train.serve.app import ClientGone, Running, ServeApp
from mathjax_train.serve.errors import ApiError, unavailable
from mathjax_train.serve.requests import decode_json, parse_chat, parse_completion

MAX_BODY_BYTES = 16 * 2**20
BODY_TIMEOUT_S = 60.0  # a client that takes longer to send its body is answered 408
OFF_LOOP_BYTES = 64 * 2**10  # bodies at least this large are parsed and validated on a worker thread


def json_response(status: int, model: BaseModel | dict) -> Response:
    if isinstance(model, dict):
        return JSONResponse(model, status_code=status)
    return Response(R.to_json(model), status_code=status, media_type="application/json")


def error_response(e: ApiError) -> Response:
    return json_response(e.status, e.body())


async def read_body(request: Request) -> bytes:
    """The body, at most MAX_BODY_BYTES (413 past that, before reading it when Content-Length says so)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise ApiError(413, f"request body of {declared} bytes is over the {MAX_BODY_BYTES} byte limit")
    parts, size = [], 0
    try:
        async with asyncio.timeout(BODY_TIMEOUT_S):
            async for part in request.stream():
                size += len(part)
                if size > MAX_BODY_BYTES:
                    raise ApiError(413, f"request body is over the {MAX_BODY_BYTES} byte limit")
                parts.append(part)
    except TimeoutError:
        raise ApiError(408, f"the request body did not arrive within {BODY_TIMEOUT_S:.0f}s") from None
    return b"".join(parts)


async def until_disconnect(receive: Receive) -> None:
    """Return when the client goes away (the body has been read, so only http.disconnect can come)."""
    while (await receive())["type"] != "http.disconnect":
        pass


def watch_client(receive: Receive, run: Running) -> asyncio.Task:
    """A task that cancels `run` when its client disconnects; cancel the task when the answer is sent."""
    task = asyncio.ensure_future(until_disconnect(receive))
    task.add_done_callback(lambda t: None if t.cancelled() or t.exception() else run.cancel("gone"))
    return task


class EventStream:
    """A stream's answer as Server-Sent Events: `data: {chunk}` per chunk, then `data: [DONE]`. A failure
    after the stream began (or a shutdown) is sent as an error event before [DONE]."""

    def __init__(self, run: Running):
        self.run = run

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        watch = watch_client(receive, self.run)
        chunks = self.run.chunks()
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")],
                }
            )
            try:
                async for chunk in chunks:
                    await send(
                        {
                            "type": "http.response.body",
                            "body": b"data: " + R.to_json(chunk) + b"\n\n",
                            "more_body": True,
                        }
                    )
            except ClientGone:
                raise
            except Exception as e:  # noqa: BLE001 (the stream has begun: the failure becomes its last event)
                failure = e if isinstance(e, ApiError) else None
                if failure is None:
                    sys.stderr.write("serve: a stream failed:\n" + traceback.format_exc())
                    failure = ApiError(500, f"internal error: {type(e).__name__}: {e}", type="server_error")
                err = R.ErrorResponse.model_validate(failure.body())
                await send(
                    {"type": "http.response.body", "body": b"data: " + R.to_json(err) + b"\n\n", "more_body": True}
                )
            await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})
        except ClientGone:
            pass  # nothing more can be sent
        finally:
            watch.cancel()
            await chunks.aclose()


Handler = Callable[[Request], Awaitable[Any]]


class Endpoints:
    """The routes' handlers over one ServeApp."""

    def __init__(self, app: ServeApp, api_key: str | None):
        self.app, self.api_key = app, api_key
        self.open: set[Running] = set()  # this server's requests in flight
        self.closing = False
        self._none_open: asyncio.Event | None = None

    def _forget(self, run: Running) -> None:
        self.open.discard(run)
        if not self.open and self._none_open is not None:
            self._none_open.set()

    async def drain(self, timeout_s: float) -> None:
        """Refuse new requests with 503 and end the open ones (streams get an error event), waiting at most
        `timeout_s` for them to end; their last bytes are then uvicorn's to send before it stops."""
        self.closing = True
        self._none_open = asyncio.Event()
        for r in list(self.open):
            r.cancel("shutdown")
        if self.open:
            try:
                await asyncio.wait_for(self._none_open.wait(), timeout_s)
            except TimeoutError:
                pass

    def _authorize(self, request: Request) -> None:
        if self.api_key is not None and request.headers.get("authorization", "") != f"Bearer {self.api_key}":
            raise ApiError(401, "Incorrect API key provided.", code="invalid_api_key")

    async def health(self, request: Request) -> Response:
        return json_response(200, {"status": "ok", "model": self.app.model_name, **self.app.stats_dict()})

    async def models(self, request: Request) -> Response:
        self._authorize(request)
        return json_response(200, self.app.models())

    async def model(self, request: Request) -> Response:
        self._authorize(request)
        return json_response(200, self.app.model_info(request.path_params["name"]))

    async def completions(self, request: Request) -> Response | EventStream:
        return await self._generate(request, parse_completion, self.app.start_completion)

    async def chat(self, request: Request) -> Response | EventStream:
        return await self._generate(request, parse_chat, self.app.start_chat)

    async def _generate(self, request: Request, parse, start) -> Response | EventStream:
        self._authorize(request)
        if self.closing:
            raise unavailable("the server is shutting down; retry on another server")
        body = await read_body(request)
        if len(body) >= OFF_LOOP_BYTES:
            req = await asyncio.to_thread(lambda: parse(decode_json(body)))
        else:
            req = parse(decode_json(body))
        run = await start(req)
        self.open.add(run)
        run.on_end.append(self._forget)
        if self.closing:  # it began to shut down while this request was parsed
            run.cancel("shutdown")
        if req.stream:
            return EventStream(run)
        watch = watch_client(request.receive, run)
        try:
            answer = await run.collect()
        finally:
            watch.cancel()
        return json_response(200, answer)


def guarded(handler: Handler) -> Callable[[Request], Awaitable[Any]]:
    """ApiError -> its JSON error; a client gone -> nothing to send; anything else -> a logged 500."""

    async def run(request: Request):
        try:
            return await handler(request)
        except ApiError as e:
            return error_response(e)
        except (ClientGone, ClientDisconnect):
            return Response(status_code=499)  # never delivered: the client has gone
        except Exception as e:  # noqa: BLE001 (never leave a client without an answer)
            sys.stderr.write("serve: a request failed:\n" + traceback.format_exc())
            return error_response(ApiError(500, f"internal error: {type(e).__name__}: {e}", type="server_error"))

    return run


async def http_error(request: Request, exc: Exception) -> Response:
    """404 and 405 from the router, as OpenAI's error object."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        e = ApiError(405, f"Method {request.method} is not allowed for {request.url.path}.", code="method_not_allowed")
    elif exc.status_code == 404:
        e = ApiError(
            404,
            f"Unknown request URL: {request.method} {request.url.path}. Please check the URL for typos.",
            code="unknown_url",
        )
    else:
        e = ApiError(exc.status_code, str(exc.detail))
    return error_response(e)


_CONTROL = {c: f"\\x{c:02x}" for c in [*range(0x20), *range(0x7F, 0xA0)]}


def printable(text: str) -> str:
    """Control characters (ESC, CR, LF, ...) escaped, so a client cannot forge or hide log lines."""
    return text.translate(_CONTROL)


class AccessLog:
    """ASGI middleware: one line per request on stderr: client, request line, status, milliseconds."""

    def __init__(self, app: ASGIApp, enabled: bool):
        self.app, self.enabled = app, enabled

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.enabled:
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), [0]

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            client = scope.get("client") or ("-", 0)
            target = scope.get("raw_path", b"").decode("latin-1")
            if scope.get("query_string"):
                target += "?" + scope["query_string"].decode("latin-1")
            line = f'{client[0]}:{client[1]} "{scope["method"]} {target} HTTP/{scope["http_version"]}" {status[0]}'
            ms = (time.perf_counter() - start) * 1000
            sys.stderr.write(f"serve: {printable(line)} {ms:.0f}ms\n")


def build_http_app(app: ServeApp, *, api_key: str | None = None, access_log: bool = False) -> tuple[ASGIApp, Endpoints]:
    """The ASGI application serving `app`, and its endpoints (for `shutdown`)."""
    ep = Endpoints(app, api_key)
    routes = [
        Route("/health", guarded(ep.health), methods=["GET"]),
        Route("/v1/stats", guarded(ep.health), methods=["GET"]),
        Route("/v1/models", guarded(ep.models), methods=["GET"]),
        Route("/v1/models/{name:path}", guarded(ep.model), methods=["GET"]),
        Route("/v1/completions", guarded(ep.completions), methods=["POST"]),
        Route("/v1/chat/completions", guarded(ep.chat), methods=["POST"]),
    ]
    star = Starlette(routes=routes, exception_handlers={HTTPException: http_error})
    star.router.redirect_slashes = False
    return AccessLog(star, access_log), ep
