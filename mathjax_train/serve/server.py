"""HTTP layer of `mathjax-train serve`: stdlib ThreadingHTTPServer in front of ServeApp.

One thread per connection (HTTP/1.1 keep-alive); the threads only parse, wait and write, while
all model work runs on the engine loop's thread. Streams are Server-Sent Events (`data: {...}`
chunks, then `data: [DONE]`) sent with chunked transfer encoding. A client that disconnects (a
failed write, or EOF on its socket while it waits) has its rows cancelled.
"""

from __future__ import annotations

import json
import os
import select
import socket
import sys
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

from mathjax_train.config import InputError
from mathjax_train.serve import protocol as P
from mathjax_train.serve.app import ClientGone, ServeApp

MAX_BODY_BYTES = 16 * 2**20
SOCKET_TIMEOUT_S = 300  # a client that sends nothing (or reads nothing) this long is dropped


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024  # the listen backlog: hundreds of clients may connect at once

    def __init__(self, address, app: ServeApp, api_key: str | None, access_log: bool):
        self.app, self.api_key, self.access_log = app, api_key, access_log
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "mathjax-train-serve"
    timeout = SOCKET_TIMEOUT_S
    server: _Server

    def log_message(self, format, *args):  # noqa: A002 (stdlib signature)
        if self.server.access_log:
            sys.stderr.write(f"serve: {self.address_string()} {format % args}\n")

    # -- routing -----------------------------------------------------------------------------

    def do_GET(self):  # noqa: N802 (stdlib name)
        self._dispatch("GET")

    def do_POST(self):  # noqa: N802
        self._dispatch("POST")

    def do_PUT(self):  # noqa: N802
        self._dispatch("PUT")

    def do_DELETE(self):  # noqa: N802
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        app = self.server.app
        path = self.path.split("?", 1)[0].rstrip("/")
        try:
            body = self._read_body() if method in ("POST", "PUT") else None
            if path in ("/health", "/v1/stats"):
                self._need(method, "GET")
                return self._json(200, {"status": "ok", "model": app.model_name, **app.stats_dict()})
            self._authorize()
            if path == "/v1/models":
                self._need(method, "GET")
                return self._json(200, app.models())
            if path.startswith("/v1/models/"):
                self._need(method, "GET")
                return self._json(200, app.model_info(unquote(path[len("/v1/models/") :])))
            if path in ("/v1/completions", "/v1/chat/completions"):
                self._need(method, "POST")
                handler = app.completions if path == "/v1/completions" else app.chat
                assert body is not None  # read for every POST
                result = handler(self._parse_json(body), disconnected=self._client_gone)
                if isinstance(result, dict):
                    return self._json(200, result)
                return self._sse(result)
            raise P.ApiError(
                404, f"Unknown request URL: {method} {path}. Please check the URL for typos.", code="unknown_url"
            )
        except P.ApiError as e:
            self._try_json(e.status, e.body())
        except (ClientGone, OSError):  # the client went away (its rows are cancelled) or the socket broke
            self.close_connection = True
        except Exception as e:  # never leave a client without an answer
            err = P.ApiError(500, f"internal error: {type(e).__name__}: {e}", type="server_error")
            self._try_json(500, err.body())

    def _client_gone(self) -> bool:
        """Whether the client closed its end (EOF or reset) while it waits for an answer; a pipelined
        next request reads as data, not EOF."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    def _need(self, method: str, wanted: str) -> None:
        if method != wanted:
            raise P.ApiError(405, f"Method {method} is not allowed here; use {wanted}.", code="method_not_allowed")

    def _authorize(self) -> None:
        key = self.server.api_key
        if key is None:
            return
        given = self.headers.get("Authorization", "")
        if given != f"Bearer {key}":
            raise P.ApiError(401, "Incorrect API key provided.", code="invalid_api_key")

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            raise P.ApiError(411, "request bodies must carry Content-Length (chunked uploads are not supported)")
        raw = self.headers.get("Content-Length")
        try:
            length = int(raw) if raw is not None else 0
        except ValueError:
            self.close_connection = True
            raise P.bad(f"invalid Content-Length header {raw!r}") from None
        if length > MAX_BODY_BYTES:
            self.close_connection = True  # the body stays unread, so this connection cannot be reused
            raise P.ApiError(413, f"request body of {length} bytes is over the {MAX_BODY_BYTES} byte limit")
        body = self.rfile.read(length) if length else b""
        if len(body) < length:
            self.close_connection = True
            raise ClientGone(f"the client sent {len(body)} of the {length} body bytes it announced")
        return body

    @staticmethod
    def _parse_json(body: bytes):
        if not body:
            raise P.bad("the request has no body; send a JSON object")
        try:
            return json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise P.bad(f"We could not parse the JSON body of your request ({e}).") from None

    # -- writing -----------------------------------------------------------------------------

    def _try_json(self, status: int, obj: dict) -> None:
        try:
            self._json(status, obj)
        except OSError:
            self.close_connection = True

    def _json(self, status: int, obj: dict) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def _sse(self, chunks) -> None:
        """Write each chunk as it comes; a failed write closes `chunks`, which cancels the unfinished rows."""
        try:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            try:
                for chunk in chunks:
                    self._write_chunk(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            except P.ApiError as e:  # the generation failed after the stream began
                self._write_chunk(b"data: " + json.dumps(e.body()).encode() + b"\n\n")
            self._write_chunk(b"data: [DONE]\n\n")
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        finally:
            chunks.close()

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


@dataclass
class RunningServer:
    """A server answering on a background thread; `close()` stops it and its engine loop."""

    httpd: _Server
    thread: threading.Thread
    app: ServeApp

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        host = host.decode() if isinstance(host, bytes) else host
        return f"http://{host}:{port}/v1"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=30)
        self.app.close()


def start_server(
    app: ServeApp, host: str, port: int, *, api_key: str | None = None, access_log: bool = False
) -> RunningServer:
    """Bind and serve on a daemon thread (port 0 picks a free port: read `.url`)."""
    httpd = _Server((host, port), app, api_key, access_log)
    thread = threading.Thread(target=httpd.serve_forever, name="mathjax-serve-http", daemon=True)
    thread.start()
    return RunningServer(httpd, thread, app)


def api_key_from_env(var: str | None) -> str | None:
    """The key clients must send, read from env var `var` (None: no key required)."""
    if not var:
        return None
    key = os.environ.get(var)
    if not key:
        raise InputError(f"--api-key-env {var}: that environment variable is unset or empty")
    return key
