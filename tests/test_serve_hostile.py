"""`serve` against hostile and careless clients, on localhost with a tiny checkpoint (issue 41).

Each test is one failure an outside tester found in the ThreadingHTTPServer version: a sampling
value the engine cannot hold failed every stream in flight; a 15 MB prompt stalled every client;
lone surrogates, deep JSON and 5,000-digit integers were 500s; framing was hand-made; the access
log let clients write control characters; every connection took a thread; one big request starved
small ones; a refused request held its rows. Then a soak runs all of it at once beside innocent
clients and checks that nothing leaked. The fd-limit and SIGTERM tests run `mathjax-train serve`
as a process.
"""

import asyncio
import http.client
import json
import os
import re
import signal
import socket
import sys
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from hf_fixtures import make_hf_model
from mathjax_train.cli import main
from mathjax_train.config import EngineConfig
from mathjax_train.infer.engine import Engine
from mathjax_train.infer.loading import load_for_inference
from mathjax_train.infer.params import SamplingParams
from mathjax_train.serve.app import ServeApp
from mathjax_train.serve.server import start_server
from serve_helpers import start_serve_process, wait_idle

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONTEXT = 256
ENGINE = EngineConfig(num_slots=8, page_size=64, decode_steps=8, prefill_budget=64)
PROMPTS = ["Natalia sold 48 clips in April", "Compute 3x + 5 = 20", "def add(a, b):", "The answer is"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    d = tmp_path_factory.mktemp("serve_hostile")
    make_hf_model(d / "hf", "llama", seed=3)
    assert main(["import-hf", str(d / "hf"), str(d / "ckpt"), "--dtype", "float32"]) == 0
    return d / "ckpt"


@pytest.fixture(scope="module")
def served(ckpt):
    model = load_for_inference(ckpt)
    app = ServeApp(model, "tiny", ENGINE, max_seq_len=CONTEXT)
    server = start_server(app, "127.0.0.1", 0, access_log=True)
    client = openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=120)
    yield server, client, model
    client.close()
    server.close()


_REF: dict = {}


def alone(model, prompt: str, n: int, ignore_eos: bool = True) -> str:
    """Greedy text of `prompt` from the Engine alone, with the server's settings."""
    if id(model) not in _REF:
        _REF[id(model)] = Engine(model, ENGINE, max_seq_len=CONTEXT)
    ids = model.tokenizer.encode(prompt)
    params = SamplingParams(max_tokens=n, ignore_eos=ignore_eos)
    return _REF[id(model)].generate([ids], params, [[0]])[0][0].text


def address(server) -> tuple[str, int]:
    u = urllib.parse.urlsplit(server.url)
    return u.hostname, u.port


def post(server, path: str, body, timeout: float = 60) -> tuple[int, dict]:
    host, port = address(server)
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    conn.request("POST", "/v1" + path, body=data, headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    payload = json.loads(resp.read())
    conn.close()
    return resp.status, payload


def exchange(server, data: bytes, timeout: float = 10) -> bytes:
    """Send raw bytes, read until the server closes the connection (or `timeout`)."""
    with socket.create_connection(address(server), timeout=timeout) as s:
        s.sendall(data)
        got = b""
        try:
            while chunk := s.recv(65536):
                got += chunk
        except TimeoutError:
            pass
        return got


def statuses(raw: bytes) -> list[int]:
    """The status of each response in `raw` (responses on one connection follow each other directly)."""
    return [int(code) for code in re.findall(rb"HTTP/1\.[01] (\d{3}) ", raw)]


class Streams:
    """`k` greedy streams (ignore_eos, `n` tokens each) started on threads; `finish()` joins their texts."""

    def __init__(self, client, k: int = 4, n: int = 96):
        self.n, self.prompts = n, [PROMPTS[i % len(PROMPTS)] for i in range(k)]
        self.started = [threading.Event() for _ in range(k)]
        self.pool = ThreadPoolExecutor(k)
        self.futures = [self.pool.submit(self._one, client, i) for i in range(k)]
        for e in self.started:
            assert e.wait(60), "a stream did not start"

    def _one(self, client, i):
        try:
            stream = client.completions.create(
                model="tiny", prompt=self.prompts[i], max_tokens=self.n, temperature=0, stream=True,
                extra_body={"ignore_eos": True},
            )  # fmt: skip
            text, reasons = "", []
            for c in stream:
                self.started[i].set()
                text += c.choices[0].text
                reasons += [c.choices[0].finish_reason] if c.choices[0].finish_reason else []
            return text, reasons
        finally:
            self.started[i].set()  # a stream that failed to start fails in finish(), not in a wait

    def finish(self) -> list[tuple[str, list]]:
        try:
            return [f.result(timeout=120) for f in self.futures]
        finally:
            self.pool.shutdown()


def assert_streams_as_alone(streams: Streams, model) -> None:
    for prompt, (text, reasons) in zip(streams.prompts, streams.finish()):
        assert reasons == ["length"] and text == alone(model, prompt, streams.n)


HOSTILE_VALUES = [
    ("top_k", 2**31),
    ("top_k", 2**63),
    ("top_k", 1e30),
    ("max_tokens", 2**31),
    ("seed", 2**64),
    ("n", 2**40),
    ("logprobs", 2**31),
    ("temperature", 1e308),
    ("stop", ["x" * 2000]),
]


def test_values_the_engine_cannot_hold_are_400s_and_the_streams_beside_them_finish(served):
    """top_k = 2**31 passed validation and overflowed an int32 in the engine step: every stream in flight
    failed. Now each such value is a 400 naming the field, and 4 streams in flight finish as alone."""
    server, client, model = served
    streams = Streams(client)
    answers = [
        post(server, "/completions", {"model": "tiny", "prompt": "x", "max_tokens": 4, name: value})
        for name, value in HOSTILE_VALUES
    ]
    assert_streams_as_alone(streams, model)
    for (name, _), (status, payload) in zip(HOSTILE_VALUES, answers):
        assert (status, payload["error"]["param"]) == (400, name), payload
    wait_idle(server.app)


def rss_bytes(pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


def test_a_15mb_prompt_is_refused_without_holding_up_other_clients(served):
    """It was tokenized before the length check, on the HTTP thread, holding the GIL: others waited up to
    27.7 s and memory grew by 3.4 GB. Now its size in bytes refuses it before tokenizing."""
    server, client, _ = served
    client.completions.create(model="tiny", prompt="warm", max_tokens=2)
    huge = {"model": "tiny", "prompt": "clips " * (15 * 2**20 // 6), "max_tokens": 4}
    peak, before, done = [0], rss_bytes(), threading.Event()

    def sample_rss():  # a measurement, not synchronisation
        while not done.is_set():
            peak[0] = max(peak[0], rss_bytes())
            time.sleep(0.02)

    sampler = threading.Thread(target=sample_rss)
    sampler.start()
    with ThreadPoolExecutor(1) as pool:
        big = pool.submit(post, server, "/completions", huge)
        waits = []
        while not big.done():
            t0 = time.perf_counter()
            client.completions.create(model="tiny", prompt="x", max_tokens=2)
            waits.append(time.perf_counter() - t0)
        status, payload = big.result()
    done.set()
    sampler.join()
    assert status == 400 and payload["error"]["param"] == "prompt"
    assert payload["error"]["code"] == "context_length_exceeded"
    assert waits and max(waits) < 2.0, waits
    assert peak[0] - before < 1 * 2**30, (before, peak[0])


CLIENT_INPUT = [
    ("/completions", b'{"model": "tiny", "prompt": "a \\ud800 b", "max_tokens": 4}', "prompt"),
    ("/completions", b'{"model": "tiny", "prompt": ["ok", "\\udfff"], "max_tokens": 4}', "prompt"),
    ("/completions", b'{"model": "tiny", "prompt": "x", "stop": ["\\ud83d"]}', "stop"),
    (
        "/chat/completions",
        b'{"model": "tiny", "messages": [{"role": "user", "content": "\\ud800"}], "max_tokens": 4}',
        "messages.[0].content",
    ),
    ("/completions", b'{"model": "tiny", "prompt": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "prompt"),
    ("/completions", b'{"model": "tiny", "prompt": "x", "max_tokens": ' + b"9" * 5000 + b"}", "max_tokens"),
    ("/completions", b'{"model": "tiny", "prompt": "x", "seed": -' + b"7" * 5000 + b"}", "seed"),
    ("/completions", b'{"model": "tiny", "prompt": "x", "temperature": NaN}', "temperature"),
    ("/completions", b'{"model": "tiny", "prompt": [5, ' + b"1" * 5000 + b"]}", "prompt"),
]


@pytest.mark.parametrize("path,body,param", CLIENT_INPUT, ids=range(len(CLIENT_INPUT)))
def test_client_input_that_was_a_500_is_a_400_naming_the_field(served, path, body, param):
    server, _, _ = served
    status, payload = post(server, path, body)
    assert (status, payload["error"]["param"]) == (400, param), payload
    assert payload["error"]["type"] == "invalid_request_error" and payload["error"]["message"]


def head(path: str, extra: str = "", method: str = "POST", version: str = "1.1") -> bytes:
    return f"{method} {path} HTTP/{version}\r\nHost: x\r\n{extra}".encode()


def test_framing_is_the_http_stacks(served):
    """Bad Content-Length headers are refused at once (one held a thread until the client left); an HTTP/1.0
    stream is not sent chunked; a GET's body is its body, not a second request."""
    server, _, _ = served
    body = json.dumps({"model": "tiny", "prompt": "x", "max_tokens": 3}).encode()
    for length in ["-1", "5_0", "+50", "0x10"]:
        t0 = time.monotonic()
        got = exchange(server, head("/v1/completions", f"Content-Length: {length}\r\n\r\n") + body)
        assert statuses(got) == [400] and time.monotonic() - t0 < 5, (length, got[:200])
    got = exchange(server, head("/v1/completions", "Content-Length: 10\r\nContent-Length: 12\r\n\r\n") + body)
    assert statuses(got) == [400]
    stream = json.dumps({"model": "tiny", "prompt": "x", "max_tokens": 3, "stream": True}).encode()
    got = exchange(server, head("/v1/completions", f"Content-Length: {len(stream)}\r\n\r\n", version="1.0") + stream)
    headers, _, sse = got.partition(b"\r\n\r\n")
    assert statuses(headers) == [200] and b"transfer-encoding" not in headers.lower()
    assert sse.endswith(b"data: [DONE]\n\n") and b'"finish_reason":"length"' in sse
    inner = head("/v1/models", "\r\n", method="GET")
    got = exchange(
        server,
        head("/health", f"Content-Length: {len(inner)}\r\n\r\n", method="GET")
        + inner
        + head("/health", "Connection: close\r\n\r\n", method="GET"),
    )
    assert statuses(got) == [200, 200] and got.count(b'"status":"ok"') == 2, got[:300]


@pytest.mark.parametrize("method,path", [("PATCH", "/health"), ("FOO", "/v1/models"), ("PUT", "/v1/completions")])
def test_other_methods_get_a_json_error(served, method, path):
    server, _, _ = served
    got = exchange(server, head(path, "Content-Length: 0\r\nConnection: close\r\n\r\n", method=method))
    _, _, body = got.partition(b"\r\n\r\n")
    assert statuses(got) == [405] and json.loads(body)["error"]["code"] == "method_not_allowed"


def test_the_access_log_escapes_control_characters(served, capfd):
    """The log wrote ESC sequences and bare CRs as sent, so a client could forge or hide log lines."""
    server, client, _ = served
    capfd.readouterr()
    for target in ["/v1/models\x1b[2J\x1b[1;1H", "/v1/mo\rdels", "/health%0d%0aserve:%20forged"]:
        exchange(server, head(target, "Connection: close\r\n\r\n", method="GET"))
    client.models.list()
    err, deadline = "", time.monotonic() + 30  # the access line is written after the response is sent
    while '"GET /v1/models HTTP/1.1" 200' not in err and time.monotonic() < deadline:
        time.sleep(0.05)
        err += capfd.readouterr().err
    assert '"GET /v1/models HTTP/1.1" 200' in err  # the log works
    assert "\x1b" not in err and "\r" not in err
    assert not any(line.startswith("serve: forged") for line in err.split("\n"))


def threads() -> set[str]:
    return {t.name for t in threading.enumerate()}


def test_idle_connections_take_no_thread_and_are_closed_when_idle(served):
    """One thread per connection, dropped after 300 s idle: 1,000 idle clients were 1,018 threads."""
    server, client, _ = served
    idle = start_server(server.app, "127.0.0.1", 0, idle_timeout_s=1.0, owns_app=False)
    try:
        before = threads()
        socks = [socket.create_connection(address(idle)) for _ in range(64)]
        socks[0].sendall(b"GET /health HTTP/1.1\r\nHo")  # a request that never ends
        r = openai.OpenAI(base_url=idle.url, api_key="x", max_retries=0).completions.create(
            model="tiny", prompt="x", max_tokens=2
        )
        assert r.choices[0].text is not None and threads() == before
        for s in socks:  # the server closes each within 2 idle timeouts: recv sees EOF
            s.settimeout(5)
            assert s.recv(1024) == b""
            s.close()
    finally:
        idle.close()


def test_one_big_request_does_not_starve_a_small_one(served):
    """64 prompts x n=16 (1,024 rows) delayed every later request until its rows had passed; now requests
    take turns, so a small request behind it finishes while most of its rows still wait."""
    server, client, _ = served
    wait_idle(server.app)
    big = client.completions.create(
        model="tiny", prompt=[f"Question {i}:" for i in range(64)], n=16, max_tokens=4, temperature=0.7, seed=1,
        stream=True, extra_body={"ignore_eos": True},
    )  # fmt: skip
    finished, chunks = [0], iter(big)
    assert next(chunks).choices[0].finish_reason is None  # it has begun

    def drain():
        for c in chunks:
            finished[0] += bool(c.choices[0].finish_reason)

    reader = threading.Thread(target=drain)
    reader.start()
    small = client.completions.create(model="tiny", prompt="x", max_tokens=8, temperature=0)
    done_when_small_was = finished[0]
    reader.join(timeout=120)
    assert small.choices[0].finish_reason in ("length", "stop")
    assert finished[0] == 64 * 16
    assert done_when_small_was < 256, done_when_small_was  # it did not wait for the big request's rows


def test_a_refused_request_releases_its_rows_at_once(served):
    """A 429 for too many rows kept other clients at 429 until its partly submitted rows were aborted. Here
    the engine is held (its step waits) so that nothing is aborted behind the test's back."""
    server, client, _ = served
    app = server.app
    wait_idle(app)
    hold, real_step = threading.Event(), app.engine.step

    def held_step():
        hold.wait(60)
        real_step()

    app.engine.step = held_step
    try:
        rows_before = app.loop.stats.rows + 1
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(client.completions.create, model="tiny", prompt="x", max_tokens=2)
            deadline = time.monotonic() + 30
            while (app.loop.live_rows, app.loop.stats.rows) != (1, rows_before) and time.monotonic() < deadline:
                time.sleep(0.005)  # until the first request's row is in the (held) engine
            with pytest.raises(openai.RateLimitError):
                client.completions.create(model="tiny", prompt=["y"] * 256, n=16, max_tokens=2)  # 1 + 4096 > 4096
            assert app.loop.live_rows == 1 and app.loop.stats.rows == rows_before  # nothing of it was queued
            hold.set()
            assert first.result(timeout=60).choices[0].finish_reason in ("length", "stop")
    finally:
        app.engine.step = real_step
        hold.set()
    r = client.completions.create(model="tiny", prompt="z", n=16, max_tokens=2)
    assert len(r.choices) == 16
    wait_idle(app)


# ---- the soak --------------------------------------------------------------------------------


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def abandon(server, how: str) -> None:
    """Send (part of) a request on a raw socket, then drop the connection."""
    body = json.dumps(
        {"model": "tiny", "prompt": "Natalia", "max_tokens": 200, "ignore_eos": True, "stream": how == "mid_stream"}
    ).encode()
    data = head("/v1/completions", f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n") + body
    with socket.create_connection(address(server), timeout=30) as s:
        if how == "half_headers":
            s.sendall(data[:20])
        elif how == "short_body":
            s.sendall(data[: len(data) - len(body) + 10])
        elif how == "before_answer":
            s.sendall(data)
        elif how == "mid_stream":
            s.sendall(data)
            got = b""
            while b"data:" not in got:
                got += s.recv(4096)


HOSTILE_BODIES = [
    b"{",
    b"[1, 2",
    b"\xff\xfe",
    b"null",
    b'{"model": "tiny", "prompt": 7}',
    b'{"model": "nope", "prompt": "x"}',
    b'{"model": "tiny", "messages": "hi"}',
] + [body for _, body, _ in CLIENT_INPUT]


def test_soak_hostile_clients_beside_innocent_ones_leave_nothing_behind(served):
    """Everything above at once beside 4 long streams and 200 concurrent mixed requests, on a server of its
    own: the streams finish as alone, every answer is the engine's, every hostile request gets its error,
    and slots, pages, connections, fds and threads come back."""
    main_server, _, model = served
    app = main_server.app
    wait_idle(app)
    server = start_server(app, "127.0.0.1", 0, owns_app=False)
    try:
        assert (
            post(server, "/completions", {"model": "tiny", "prompt": "warm " * 1000})[0] == 400
        )  # tokenized off the loop
        t0, fds, names = time.monotonic(), fd_count(), threads()
        client = openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=120)
        streams = Streams(client, n=200)

        def hostile(i: int) -> bool:
            kind = i % 5
            if kind == 0:
                name, value = HOSTILE_VALUES[i % len(HOSTILE_VALUES)]
                return post(server, "/completions", {"model": "tiny", "prompt": "x", name: value})[0] == 400
            if kind == 1:
                body = HOSTILE_BODIES[i % len(HOSTILE_BODIES)]
                path = "/chat/completions" if b"messages" in body else "/completions"
                return post(server, path, body)[0] in (400, 404)
            if kind == 2:
                abandon(server, ["half_headers", "short_body", "before_answer", "mid_stream"][i % 4])
                return True
            if kind == 3:
                length = ["-1", "5_0", "10, 12"][i % 3]
                return statuses(exchange(server, head("/v1/completions", f"Content-Length: {length}\r\n\r\n"))) == [400]
            return statuses(exchange(server, head("/health", "Connection: close\r\n\r\n", method="PATCH"))) == [405]

        async def mixed():
            aclient = openai.AsyncOpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=120)

            async def one(i):
                r = await aclient.completions.create(
                    model="tiny", prompt=PROMPTS[i % 4], max_tokens=4 + i % 5, temperature=0, n=1 + i % 2
                )
                return [c.text for c in r.choices]

            try:
                return await asyncio.gather(*(one(i) for i in range(200)))
            finally:
                await aclient.close()

        with ThreadPoolExecutor(8) as pool:
            bad = pool.map(hostile, range(150))  # runs while the mixed requests run
            answers = asyncio.run(mixed())
            bad = list(bad)
        assert all(bad), [i for i, ok in enumerate(bad) if not ok]
        for i, got in enumerate(answers):
            assert got == [alone(model, PROMPTS[i % 4], 4 + i % 5, ignore_eos=False)] * (1 + i % 2), i
        assert_streams_as_alone(streams, model)
        client.close()
        wait_idle(app)
        deadline = time.monotonic() + 10
        while (server.open_connections or fd_count() > fds) and time.monotonic() < deadline:
            time.sleep(0.02)  # the server closes its side of each dropped connection as it notices
        assert server.open_connections == 0 and fd_count() <= fds
        assert not app.open and app.loop.live_rows == 0
        assert {n for n in threads() - names if not n.startswith("asyncio_")} == set()  # only the worker pool may grow
        assert time.monotonic() - t0 < 60
    finally:
        server.close()


# ---- as a process: RLIMIT_NOFILE and SIGTERM ---------------------------------------------------------


@pytest.fixture(scope="module")
def process(ckpt):
    """`mathjax-train serve` with RLIMIT_NOFILE 64 (soft and hard)."""

    limited = "import os, resource, sys; resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64)); os.execv(*sys.argv[1:2], sys.argv[1:])"
    cmd = [sys.executable, "-c", limited, sys.executable, "-m", "mathjax_train.cli", "serve", str(ckpt), "--port", "0"]
    cmd += ["--model-name", "tiny", "--no-warmup", "--quiet", "--num-slots", "8", "--max-seq-len", "1024"]
    proc, url = start_serve_process(cmd, cwd=REPO)  # the limit set by exec, not fork: no preexec_fn
    yield proc, url
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Url:
    def __init__(self, url: str):
        self.url = url


def test_104_idle_connections_under_64_fds_neither_spin_nor_keep_others_out(process):
    """accept() failed with EMFILE, socketserver swallowed it and serve_forever spun at 99% CPU; a normal
    request timed out until the idle clients left."""
    proc, url = process
    server = Url(url)
    socks = []
    for _ in range(104):
        try:
            socks.append(socket.create_connection(address(server), timeout=5))
        except OSError:
            break
    try:
        t0, c0 = time.monotonic(), cpu_seconds(proc.pid)
        time.sleep(2.0)  # a window to measure CPU over, not synchronisation
        busy = (cpu_seconds(proc.pid) - c0) / (time.monotonic() - t0)
        assert busy < 0.3, f"the server used {busy:.0%} of a core while only idle clients were connected"
        r = openai.OpenAI(base_url=url, api_key="x", max_retries=0, timeout=10).completions.create(
            model="tiny", prompt="x", max_tokens=2
        )
        assert r.choices[0].finish_reason in ("length", "stop")
    finally:
        for s in socks:
            s.close()


def test_sigterm_ends_streams_with_an_error_event_and_waiting_requests_with_503(process):
    """The process exited before the connection threads wrote their end: streams got EOF with no error event
    and no [DONE]; requests waiting for an answer got 500."""
    proc, url = process
    server = Url(url)
    # 5 rows (all in the 8 slots at once) of 1,000 tokens: far longer than the moment between the first chunks
    # and the signal
    body = {"model": "tiny", "prompt": "Natalia", "max_tokens": 1000, "ignore_eos": True, "temperature": 0}
    socks = []
    for stream in [True] * 3 + [False] * 2:
        data = json.dumps(dict(body, stream=stream)).encode()
        s = socket.create_connection(address(server), timeout=60)
        s.sendall(head("/v1/completions", f"Content-Length: {len(data)}\r\n\r\n") + data)
        socks.append((stream, s))
    got = {}
    for stream, s in socks[:3]:  # every stream has begun
        got[s] = b""
        while b"data:" not in got[s]:
            got[s] += s.recv(4096)
    proc.send_signal(signal.SIGTERM)
    for stream, s in socks:
        raw = got.get(s, b"")
        while chunk := s.recv(65536):
            raw += chunk
        s.close()
        if stream:  # the body is chunked: look for the last events in order
            error, done = raw.rfind(b'data: {"error"'), raw.rfind(b"data: [DONE]")
            assert statuses(raw) == [200] and 0 < error < done, raw[-300:]
        else:
            assert statuses(raw) == [503] and b"shutting down" in raw, raw[:300]
    assert proc.wait(timeout=30) == 0
