"""`serve`'s HTTP server: uvicorn (h11) running the starlette app on its own thread and event loop.

h11 does the framing (it refuses bad Content-Length headers, never answers an HTTP/1.0 client with
chunked encoding, reads a GET's body as its body). On top of uvicorn's HTTP/1.1 protocol,
`CappedH11` bounds connections: at most `max_connections` are open (fewer when RLIMIT_NOFILE leaves
less room), a new one past that closes the longest-idle connection, or is answered 503 when none is
idle; and a connection that has not started a request within `idle_timeout_s` (idle or trickling
headers) is closed. So idle clients cannot exhaust file descriptors or keep others out.
`RunningServer.close()` ends gracefully: open streams get an error event and [DONE], requests
waiting for an answer get 503, then the server and the engine stop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import resource
import socket
import threading
import time
from dataclasses import dataclass

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from mathjax_train.errors import InputError
from mathjax_train.serve.app import ServeApp
from mathjax_train.serve.errors import unavailable
from mathjax_train.serve.http import Endpoints, build_http_app
from mathjax_train.serve.responses import to_json
from mathjax_train.serve.responses import ErrorResponse

MAX_CONNECTIONS = 1024
IDLE_TIMEOUT_S = 15.0  # a connection without a request in progress is closed after about this long
LISTEN_BACKLOG = 1024  # the kernel's queue of connections not yet accepted: hundreds of clients may connect at once
ACCEPT_BATCH = 16  # connections asyncio accepts in a row before their protocols run (and the cap can act)
FD_RESERVE = ACCEPT_BATCH + 16  # descriptors kept from client connections: one accept batch, files, pipes
SHUTDOWN_GRACE_S = 10.0


def connection_cap(wanted: int) -> int:
    """`wanted`, or fewer so that connections plus what the process already holds fit RLIMIT_NOFILE."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return wanted
    try:
        in_use = len(os.listdir("/proc/self/fd"))
    except OSError:
        in_use = 64
    return max(1, min(wanted, soft - in_use - FD_RESERVE))


class CappedH11(H11Protocol):
    """uvicorn's h11 protocol with a cap on open connections and a deadline for starting a request."""

    max_connections = MAX_CONNECTIONS
    idle_timeout_s = IDLE_TIMEOUT_S

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self._opened = time.monotonic()
        self._seen_cycle: object = None
        self._idle_timer: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        live = [c for c in self.connections if not c.transport.is_closing()]
        if len(live) > self.max_connections and not self._evict_idle(live):
            self._refuse()
            return
        self._arm()

    def _busy(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def _evict_idle(self, live: list) -> bool:
        idle = [c for c in live if c is not self and isinstance(c, CappedH11) and not c._busy()]
        if not idle:
            return False
        min(idle, key=lambda c: c._opened).close_idle()
        return True

    def _refuse(self) -> None:
        body = to_json(ErrorResponse.model_validate(unavailable("too many open connections; retry later").body()))
        head = f"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
        self.transport.write(head.encode() + b"connection: close\r\n\r\n" + body)
        self.transport.close()

    def _arm(self) -> None:
        self._idle_timer = self.loop.call_later(self.idle_timeout_s, self._check_idle)

    def _check_idle(self) -> None:
        """Close a connection that started no request since the last check and is not answering one."""
        self._idle_timer = None
        if self.transport.is_closing():
            return
        if not self._busy() and self.cycle is self._seen_cycle:
            self.close_idle()
            return
        self._seen_cycle = self.cycle
        self._arm()

    def close_idle(self) -> None:
        if self._busy() or self.transport.is_closing():
            return
        try:
            self.conn.send(h11.ConnectionClosed())
        except h11.LocalProtocolError:
            pass
        self.transport.close()

    def connection_lost(self, exc) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        super().connection_lost(exc)


@dataclass
class RunningServer:
    """A server answering on a background thread; `close()` stops it and its engine loop."""

    server: uvicorn.Server
    thread: threading.Thread
    app: ServeApp
    endpoints: Endpoints
    host: str
    port: int
    owns_app: bool = True

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @property
    def open_connections(self) -> int:
        return len(self.server.server_state.connections)

    def close(self, grace_s: float = SHUTDOWN_GRACE_S) -> None:
        """End open requests (streams: error event + [DONE]; others: 503), stop serving, stop the engine."""
        loop = getattr(self.server, "loop", None)
        if loop is not None and self.thread.is_alive():
            try:
                asyncio.run_coroutine_threadsafe(self.endpoints.drain(grace_s), loop).result(grace_s + 5)
            except (RuntimeError, TimeoutError, concurrent.futures.CancelledError):  # the loop already stopped
                pass
        self.server.should_exit = True
        self.thread.join(timeout=grace_s + 5)
        if self.owns_app:
            self.app.close()


def start_server(
    app: ServeApp,
    host: str,
    port: int,
    *,
    api_key: str | None = None,
    access_log: bool = False,
    max_connections: int = MAX_CONNECTIONS,
    idle_timeout_s: float = IDLE_TIMEOUT_S,
    owns_app: bool = True,
) -> RunningServer:
    """Bind and serve on a daemon thread (port 0 picks a free port: read `.url`)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(LISTEN_BACKLOG)
    protocol = type(
        "CappedH11",
        (CappedH11,),
        {"max_connections": connection_cap(max_connections), "idle_timeout_s": idle_timeout_s},
    )
    asgi, endpoints = build_http_app(app, api_key=api_key, access_log=access_log)
    config = uvicorn.Config(
        asgi,
        http=protocol,
        loop="asyncio",
        lifespan="off",
        access_log=False,
        log_config=None,
        log_level="warning",
        timeout_keep_alive=int(idle_timeout_s),
        timeout_graceful_shutdown=int(SHUTDOWN_GRACE_S),
        backlog=ACCEPT_BATCH,  # asyncio also accepts up to `backlog` connections per wake-up, even past EMFILE
    )
    server = uvicorn.Server(config)
    started = threading.Event()

    def serve() -> None:
        async def main() -> None:
            server.loop = asyncio.get_running_loop()  # type: ignore[attr-defined]
            started.set()
            await server.serve(sockets=[sock])

        asyncio.run(main())

    thread = threading.Thread(target=serve, name="mathjax-serve-http", daemon=True)
    thread.start()
    started.wait(timeout=30)
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.005)
    if not server.started:
        raise RuntimeError(f"the HTTP server did not start on {host}:{port}")
    sock.listen(LISTEN_BACKLOG)  # asyncio set the kernel's queue to `backlog`; keep its accept batch small only
    bound = sock.getsockname()
    return RunningServer(server, thread, app, endpoints, host, bound[1], owns_app)


def api_key_from_env(var: str | None) -> str | None:
    """The key clients must send, read from env var `var` (None: no key required)."""
    if not var:
        return None
    key = os.environ.get(var)
    if not key:
        raise InputError(f"--api-key-env {var}: that environment variable is unset or empty")
    return key
