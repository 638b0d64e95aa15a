"""`serve`: the official openai client against a real server on localhost with a tiny checkpoint.

Greedy and seeded text equal what the Engine gives directly for the same prompt, settings and seed;
chat prompts equal transformers' apply_chat_template; streams send text while the row still runs
and hold back what may be a stop string; a client that disconnects frees its slot and pages; 200
concurrent mixed requests all answer in shared batches; a soak of bad and abandoned requests
leaves the server answering with nothing leaked.
"""

import asyncio
import http.client
import json
import socket
import time
import urllib.parse

import openai
import pytest

from hf_fixtures import make_hf_model
from mathjax_train.cli import main
from mathjax_train.config import EngineConfig
from mathjax_train.infer.chat import FALLBACK_STOP, render_chat
from mathjax_train.infer.engine import Engine
from mathjax_train.infer.loading import load_for_inference
from mathjax_train.infer.params import SamplingParams, sample_seed
from mathjax_train.serve.app import ServeApp
from mathjax_train.serve.server import start_server
from mathjax_train.serve.text_stream import TextStream
from serve_helpers import wait_idle

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
PROMPTS = ["Natalia sold 48 clips in April", "Compute 3x + 5 = 20", "def add(a, b):", "The answer is"]
CONTEXT = 256  # the served max_seq_len: long generations and over-long prompts stay cheap
ENGINE = EngineConfig(num_slots=8, page_size=64, decode_steps=8, prefill_budget=64)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    d = tmp_path_factory.mktemp("serve")
    make_hf_model(d / "hf", "llama", seed=3)
    cfg_path = d / "hf" / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps(dict(cfg, chat_template=CHAT_TEMPLATE)))
    assert main(["import-hf", str(d / "hf"), str(d / "ckpt"), "--dtype", "float32"]) == 0
    model = load_for_inference(d / "ckpt")
    app = ServeApp(model, "tiny", ENGINE, max_seq_len=CONTEXT)
    server = start_server(app, "127.0.0.1", 0)
    client = openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=120)
    yield server, client, model, d / "hf"
    client.close()
    server.close()


_REF = {}


def reference(model) -> Engine:
    """The Engine alone, same settings as the server (its compiled programs are shared)."""
    if id(model) not in _REF:
        _REF[id(model)] = Engine(model, ENGINE, max_seq_len=CONTEXT)
    return _REF[id(model)]


def greedy(model, prompt_ids, n, **kw):
    return reference(model).generate([prompt_ids], SamplingParams(max_tokens=n, **kw), [[0]])[0][0]


def oa_reason(engine_reason):
    return "length" if engine_reason == "length" else "stop"


def test_models_list_and_retrieve(served):
    _, client, _, _ = served
    assert [m.id for m in client.models.list().data] == ["tiny"]
    assert client.models.retrieve("tiny").owned_by == "mathjax-train"


def test_completion_greedy_equals_the_engine(served):
    _, client, model, _ = served
    r = client.completions.create(model="tiny", prompt=PROMPTS[:2], max_tokens=12, temperature=0)
    assert [c.index for c in r.choices] == [0, 1]
    expected_new = 0
    for prompt, choice in zip(PROMPTS[:2], r.choices):
        want = greedy(model, model.tokenizer.encode(prompt), 12)
        assert choice.text == want.text and choice.finish_reason == oa_reason(want.finish_reason)
        expected_new += len(want.token_ids)
    prompt_tokens = sum(len(model.tokenizer.encode(p)) for p in PROMPTS[:2])
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (prompt_tokens, expected_new)
    assert r.usage.total_tokens == prompt_tokens + expected_new


def test_default_max_tokens_fills_the_context(served):
    _, client, model, _ = served
    n_prompt = len(model.tokenizer.encode(PROMPTS[1]))
    r = client.completions.create(model="tiny", prompt=PROMPTS[1], temperature=0, extra_body={"ignore_eos": True})
    assert r.usage.completion_tokens == CONTEXT - n_prompt and r.choices[0].finish_reason == "length"


def test_completion_stream_joins_to_the_same_text(served):
    _, client, _, _ = served
    plain = client.completions.create(model="tiny", prompt=PROMPTS[2], max_tokens=40, temperature=0)
    stream = client.completions.create(
        model="tiny",
        prompt=PROMPTS[2],
        max_tokens=40,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == plain.choices[0].text
    assert len([c for c in chunks if c.choices and c.choices[0].text]) > 1  # sent in pieces, not one blob
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == [plain.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == plain.usage.completion_tokens


def test_stream_sends_tokens_while_the_row_runs_and_a_disconnect_frees_it(served):
    server, client, _, _ = served
    app = server.app
    wait_idle(app)
    aborted = app.loop.stats.finish_reasons["aborted"]
    stream = client.completions.create(
        model="tiny", prompt=PROMPTS[0], max_tokens=200, temperature=0, stream=True, extra_body={"ignore_eos": True}
    )
    first = next(iter(stream))
    # the first text arrived after one decode chunk of 8 tokens, while the row still has ~190 to go
    assert first.choices[0].text and first.choices[0].finish_reason is None
    assert app.loop.live_rows == 1 and len(app.engine.running) == 1
    stream.close()  # the client goes away mid-stream
    wait_idle(app)
    assert app.loop.stats.finish_reasons["aborted"] == aborted + 1  # cancelled, not run to its end


def test_chat_uses_the_checkpoint_template_and_matches_the_engine(served):
    import transformers

    _, client, model, hf_dir = served
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 3 + 4?"}]
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(hf_dir))
    ids = hf_tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
    assert render_chat(model.tokenizer, messages).prompt_ids == ids  # one BOS, from the template
    want = greedy(model, ids, 12)
    r = client.chat.completions.create(model="tiny", messages=messages, max_tokens=12, temperature=0)
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == want.text
    assert r.usage.prompt_tokens == len(ids)

    stream = client.chat.completions.create(model="tiny", messages=messages, max_tokens=12, temperature=0, stream=True)
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == want.text
    assert chunks[-1].choices[0].finish_reason == r.choices[0].finish_reason


def test_fallback_chat_format_without_a_template(tmp_path):
    from hf_fixtures import write_tokenizer

    from mathjax_train.data.vocab import load_tokenizer

    write_tokenizer(tmp_path)
    tok = load_tokenizer(tmp_path)
    r = render_chat(
        tok,
        [
            {"role": "system", "content": "S"},
            {"role": "user", "content": "Q"},
            {"role": "assistant", "content": "A"},
            {"role": "user", "content": "Q2"},
        ],
    )
    assert r.text == "System: S\nUser: Q\nAssistant: A\nUser: Q2\nAssistant:"
    assert r.prompt_ids == tok.encode(r.text) and r.prompt_ids[0] == tok.bos_id
    assert r.implicit_stop == (FALLBACK_STOP,)


def test_stop_string_cuts_and_is_never_streamed(served):
    _, client, _, _ = served
    kw = dict(model="tiny", prompt=PROMPTS[0], max_tokens=40, temperature=0)
    full = client.completions.create(**kw).choices[0]
    stop = full.text[len(full.text) // 2 :][:2]
    assert stop.strip()
    cut = client.completions.create(**kw, stop=[stop]).choices[0]
    assert cut.text == full.text[: full.text.find(stop)] and cut.finish_reason == "stop"
    chunks = list(client.completions.create(**kw, stop=[stop], stream=True))
    pieces = [c.choices[0].text for c in chunks]
    assert "".join(pieces) == cut.text and chunks[-1].choices[0].finish_reason == "stop"
    assert all(stop not in "".join(pieces[:k]) for k in range(len(pieces) + 1))


def test_n_samples_are_seeded_like_the_engine(served):
    _, client, model, _ = served
    kw = dict(model="tiny", prompt=PROMPTS[3], max_tokens=12, temperature=1.0, top_p=0.9, n=3, seed=7)
    a = [c.text for c in client.completions.create(**kw).choices]
    b = [c.text for c in client.completions.create(**kw).choices]
    assert a == b and len(set(a)) == 3
    assert [c.text for c in client.completions.create(**dict(kw, seed=8)).choices] != a
    ids = model.tokenizer.encode(PROMPTS[3])
    want = reference(model).generate(
        [ids], SamplingParams(max_tokens=12, temperature=1.0, top_p=0.9), [[sample_seed(7, 0, j) for j in range(3)]]
    )[0]
    assert a == [c.text for c in want]


def test_logprobs_are_the_engines(served):
    _, client, model, _ = served
    ids = model.tokenizer.encode(PROMPTS[1])
    want = greedy(model, ids, 10, ignore_eos=True)
    extra = {"ignore_eos": True}
    r = client.completions.create(
        model="tiny", prompt=PROMPTS[1], max_tokens=10, temperature=0, logprobs=1, extra_body=extra
    )
    lp = r.choices[0].logprobs
    assert lp.token_logprobs == pytest.approx(want.logprobs, abs=1e-5) and len(lp.tokens) == 10
    assert lp.text_offset[0] == 0 and lp.top_logprobs == [{}] * 10
    streamed = [
        c.choices[0].logprobs
        for c in client.completions.create(
            model="tiny", prompt=PROMPTS[1], max_tokens=10, temperature=0, logprobs=1, stream=True, extra_body=extra
        )
        if c.choices[0].logprobs
    ]
    assert [x for s in streamed for x in s.token_logprobs] == pytest.approx(want.logprobs, abs=1e-5)
    assert [o for s in streamed for o in s.text_offset] == lp.text_offset
    chat = client.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "2+2?"}],
        max_tokens=6,
        temperature=0,
        logprobs=True,
        extra_body=extra,
    )
    content = chat.choices[0].logprobs.content
    assert len(content) == 6 == chat.usage.completion_tokens and all(t.logprob <= 0 for t in content)


def raw(server, method, path, body=None, headers=None):
    u = urllib.parse.urlsplit(server.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
    conn.request(method, u.path + path, body=data, headers=headers or {"Content-Type": "application/json"})
    resp = conn.getresponse()
    payload = json.loads(resp.read())
    conn.close()
    return resp.status, payload


LONG = [5] * CONTEXT  # a prompt as long as the whole context
BAD = [
    ("POST", "/completions", {"model": "other", "prompt": "x"}, 404, "model", "model_not_found"),
    ("POST", "/completions", {"model": "tiny", "prompt": "x", "temperature": 3}, 400, "temperature", None),
    ("POST", "/completions", {"model": "tiny"}, 400, "prompt", None),
    ("POST", "/completions", {"prompt": "x"}, 400, "model", None),
    ("POST", "/completions", {"model": "tiny", "prompt": "x", "n": 0}, 400, "n", None),
    ("POST", "/completions", {"model": "tiny", "prompt": "x", "max_tokens": "9"}, 400, "max_tokens", None),
    ("POST", "/completions", {"model": "tiny", "prompt": "x", "stop": 5}, 400, "stop", None),
    ("POST", "/completions", {"model": "tiny", "prompt": "x", "frobnicate": 1}, 400, "frobnicate", None),
    ("POST", "/completions", {"model": "tiny", "prompt": "x", "logprobs": 6}, 400, "logprobs", None),
    ("POST", "/completions", {"model": "tiny", "prompt": "x", "logprobs": True}, 400, "logprobs", None),
    ("POST", "/completions", {"model": "tiny", "prompt": "x", "top_k": -1}, 400, "top_k", None),
    ("POST", "/completions", {"model": "tiny", "prompt": "x", "top_p": 0}, 400, "top_p", None),
    ("POST", "/completions", {"model": "tiny", "prompt": "x", "ignore_eos": "yes"}, 400, "ignore_eos", None),
    ("POST", "/completions", {"model": "tiny", "prompt": "x", "seed": "7"}, 400, "seed", None),
    ("POST", "/completions", {"model": "tiny", "prompt": [[5, 99999]]}, 400, "prompt", None),
    (
        "POST",
        "/completions",
        {"model": "tiny", "prompt": "x", "max_tokens": 5000},
        400,
        "prompt",
        "context_length_exceeded",
    ),
    ("POST", "/completions", {"model": "tiny", "prompt": LONG}, 400, "prompt", "context_length_exceeded"),
    ("POST", "/completions", b"{not json", 400, None, None),
    ("POST", "/completions", [1, 2], 400, None, None),
    ("POST", "/chat/completions", {"model": "tiny", "messages": []}, 400, "messages", None),
    (
        "POST",
        "/chat/completions",
        {"model": "tiny", "messages": [{"role": "wizard", "content": "x"}]},
        400,
        "messages.[0].role",
        None,
    ),
    (
        "POST",
        "/chat/completions",
        {"model": "tiny", "messages": [{"role": "user", "content": "x"}], "top_logprobs": 2},
        400,
        "top_logprobs",
        None,
    ),
    (
        "POST",
        "/chat/completions",
        {"model": "tiny", "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]},
        400,
        "tools",
        None,
    ),
    (
        "POST",
        "/chat/completions",
        {
            "model": "tiny",
            "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
        },
        400,
        "messages.[0].content",
        None,
    ),
    (
        "POST",
        "/chat/completions",
        {"model": "tiny", "messages": [{"role": "user", "content": "x " * CONTEXT}]},
        400,
        "messages",
        "context_length_exceeded",
    ),
    ("GET", "/completions", None, 405, None, "method_not_allowed"),
    ("POST", "/embeddings", {"model": "tiny", "input": "x"}, 404, None, "unknown_url"),
]


@pytest.mark.parametrize("method,path,body,status,param,code", BAD)
def test_bad_requests_get_openai_shaped_errors(served, method, path, body, status, param, code):
    server, _, _, _ = served
    got, payload = raw(server, method, path, body)
    assert got == status, payload
    assert set(payload) == {"error"} and set(payload["error"]) == {"message", "type", "param", "code"}
    err = payload["error"]
    assert err["message"] and err["type"] == "invalid_request_error"
    assert (err["param"], err["code"]) == (param, code)


def test_an_over_long_prompt_error_names_the_lengths(served):
    server, _, _, _ = served
    _, payload = raw(server, "POST", "/completions", {"model": "tiny", "prompt": [5] * 200, "max_tokens": 100})
    msg = payload["error"]["message"]
    assert f"maximum context length is {CONTEXT} tokens" in msg and "300 tokens (200 in the prompt, 100 in" in msg


def test_openai_client_raises_typed_errors(served):
    _, client, _, _ = served
    with pytest.raises(openai.NotFoundError) as e:
        client.completions.create(model="nope", prompt="x")
    assert e.value.status_code == 404 and e.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}], top_p=1.5)
    assert e.value.param == "top_p"


def test_api_key_is_enforced_when_set(served):
    server, _, _, _ = served
    keyed = start_server(server.app, "127.0.0.1", 0, api_key="sekret", owns_app=False)
    try:
        bad = openai.OpenAI(base_url=keyed.url, api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            bad.models.list()
        good = openai.OpenAI(base_url=keyed.url, api_key="sekret", max_retries=0)
        assert [m.id for m in good.models.list().data] == ["tiny"]
    finally:
        keyed.close()  # the app (and its engine loop) belongs to the module fixture


def test_a_full_server_answers_429_and_keeps_working(served):
    server, client, model, _ = served
    app = server.app
    wait_idle(app)
    stream = client.completions.create(
        model="tiny", prompt="x", max_tokens=200, temperature=0, stream=True, extra_body={"ignore_eos": True}
    )
    next(iter(stream))  # one row runs
    limit = app.loop.max_live_rows
    try:
        app.loop.max_live_rows = 3
        with pytest.raises(openai.RateLimitError) as e:  # 1 + 3 rows: nothing of the request is queued
            client.completions.create(model="tiny", prompt="x", max_tokens=12, n=3)
        assert e.value.code == "rate_limit_exceeded"
        assert app.loop.live_rows == 1
    finally:
        app.loop.max_live_rows = limit
        stream.close()
    r = client.completions.create(model="tiny", prompt="x", max_tokens=12, temperature=0)
    assert r.choices[0].text == greedy(model, model.tokenizer.encode("x"), 12).text
    wait_idle(app)


def test_a_failed_engine_step_answers_500_and_the_server_survives(served):
    server, client, model, _ = served
    app, real_step = server.app, server.app.engine.step
    wait_idle(app)

    def failing_step():
        app.engine.step = real_step  # fail once
        raise RuntimeError("injected failure")

    app.engine.step = failing_step
    try:
        with pytest.raises(openai.InternalServerError, match="injected failure"):
            client.completions.create(model="tiny", prompt="x", max_tokens=8)
    finally:
        app.engine.step = real_step
    wait_idle(app)
    r = client.completions.create(model="tiny", prompt="x", max_tokens=8, temperature=0)
    assert r.choices[0].text == greedy(model, model.tokenizer.encode("x"), 8).text


def test_200_concurrent_mixed_requests_are_all_answered_in_shared_batches(served):
    server, _, model, _ = served
    app = server.app
    prompts = [f"Question {i}: how many clips?" for i in range(10)]
    stops = [None, ["e"], ["th", "x"]]
    reqs = []
    for i in range(200):
        greedy_row = i % 3 == 0
        reqs.append(
            dict(
                prompt=prompts[i % 10],
                max_tokens=4 + i % 9,
                temperature=0.0 if greedy_row else 0.7 + (i % 2) * 0.3,
                top_p=1.0 if i % 4 else 0.9,
                stop=stops[i % 3],
                n=1 + i % 3,
                seed=None if greedy_row else i,
                stream=i % 4 == 1,
            )
        )
    wait_idle(app)
    chunks_before, rows_before = app.engine.stats.decode_chunks, app.engine.stats.decode_rows

    async def run():
        client = openai.AsyncOpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=300)

        async def one(rq):
            kw = {k: v for k, v in rq.items() if v is not None}
            if rq["stream"]:
                texts = {}
                async for c in await client.completions.create(model="tiny", **kw):
                    texts[c.choices[0].index] = texts.get(c.choices[0].index, "") + c.choices[0].text
                return [texts[j] for j in range(rq["n"])]
            kw.pop("stream")
            r = await client.completions.create(model="tiny", **kw)
            return [c.text for c in r.choices]

        try:
            return await asyncio.gather(*(one(rq) for rq in reqs))
        finally:
            await client.close()

    results = asyncio.run(run())
    chunks = app.engine.stats.decode_chunks - chunks_before
    shared = (app.engine.stats.decode_rows - rows_before) / chunks
    # the same requests through the Engine alone, one submit per request as the server does
    ref = reference(model)
    want = ref.generate(
        [model.tokenizer.encode(rq["prompt"]) for rq in reqs],
        [
            SamplingParams(
                max_tokens=rq["max_tokens"],
                temperature=rq["temperature"],
                top_p=rq["top_p"],
                stop=tuple(rq["stop"] or ()),
            )
            for rq in reqs
        ],
        [[sample_seed(rq["seed"] or 0, 0, j) for j in range(rq["n"])] for rq in reqs],
    )
    assert len(results) == 200
    for rq, got, exp in zip(reqs, results, want):
        assert got == [c.text for c in exp], rq
    assert shared > 4, (chunks, shared)  # rows share decode chunks (alone, a chunk would hold one)
    wait_idle(app)


def _abandon(server, how: str) -> None:
    """Send (part of) a request on a raw socket, then drop the connection."""
    u = urllib.parse.urlsplit(server.url)
    body = json.dumps(
        {
            "model": "tiny",
            "prompt": "Natalia sold",
            "max_tokens": 200,
            "ignore_eos": True,
            "temperature": 0,
            "stream": how == "mid_stream",
        }
    ).encode()
    head = (
        f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection((u.hostname, u.port), timeout=30) as s:
        if how == "half_headers":
            s.sendall(head[:20])
        elif how == "short_body":
            s.sendall(head + body[:10])
        elif how == "before_answer":
            s.sendall(head + body)
        elif how == "mid_stream":
            s.sendall(head + body)
            got = b""
            while b"data:" not in got:
                got += s.recv(4096)


def test_soak_of_bad_and_abandoned_requests_leaves_nothing_behind(served):
    server, client, model, _ = served
    app = server.app
    wait_idle(app)
    start = time.monotonic()
    bodies = [
        b"{",
        b"[1, 2",
        b"\xff\xfe",
        b"null",
        json.dumps({"model": "tiny", "prompt": 7}).encode(),
        json.dumps({"model": "tiny", "prompt": "x", "n": "2"}).encode(),
        json.dumps({"model": "tiny", "prompt": LONG}).encode(),
        json.dumps({"model": "nope", "prompt": "x"}).encode(),
        json.dumps({"model": "tiny", "messages": "hi"}).encode(),
    ]
    statuses = []
    for i in range(30):
        statuses.append(
            raw(server, "POST", "/chat/completions" if i % 9 == 8 else "/completions", bodies[i % len(bodies)])[0]
        )
    assert all(s in (400, 404) for s in statuses), statuses
    ways = ["half_headers", "short_body", "before_answer", "mid_stream"]
    for i in range(20):
        _abandon(server, ways[i % 4])
    wait_idle(app)
    assert time.monotonic() - start < 60
    r = client.completions.create(model="tiny", prompt="x", max_tokens=8, temperature=0)
    assert r.choices[0].text == greedy(model, model.tokenizer.encode("x"), 8).text
    wait_idle(app)


def test_a_non_streaming_client_that_disconnects_is_cancelled(served):
    server, _, _, _ = served
    app = server.app
    wait_idle(app)
    aborted = app.loop.stats.finish_reasons["aborted"]
    u = urllib.parse.urlsplit(server.url)
    body = json.dumps({"model": "tiny", "prompt": "Natalia sold", "max_tokens": 240, "ignore_eos": True}).encode()
    with socket.create_connection((u.hostname, u.port), timeout=30) as s:
        s.sendall(f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        deadline = time.monotonic() + 30
        while not app.engine.running and time.monotonic() < deadline:
            time.sleep(0.005)
        assert app.engine.running
    wait_idle(app)
    assert app.loop.stats.finish_reasons["aborted"] == aborted + 1


def test_text_stream_holds_back_partial_characters_and_stop_prefixes():
    decode = lambda ids: "".join(chr(65 + i) for i in ids)  # noqa: E731
    s = TextStream(decode, [], ["CD"])
    assert [s.push([0]), s.push([1]), s.push([2])] == ["A", "B", ""]  # "C" may start "CD"
    assert s.push([4]) == "CE"  # it did not
    assert s.push([2, 3, 5]) == "" and s.finish("ABCE") == "" and s.sent == "ABCE"  # never past the stop
    half = lambda ids: {1: "x\ufffd", 2: "xé"}[len(ids)]  # noqa: E731  (a split UTF-8 character)
    h = TextStream(half, [9], ())
    assert [h.push([7]), h.push([8, 9])] == ["x", "é"]  # the EOS id 9 adds nothing
    assert h.finish("xé") == "" and not h.mismatch


def test_the_serve_docs_commands_parse():
    """docs/serve.md's `mathjax-train` commands parse against the real CLI, and their settings validate."""
    import re
    import shlex
    from pathlib import Path

    from mathjax_train.cli import build_parser
    from mathjax_train.cli.config_flags import config_from_args

    doc = (Path(__file__).parent.parent / "docs" / "serve.md").read_text()
    commands = [
        shlex.split(line.split("  #")[0])[1:]
        for block in re.findall(r"```bash\n(.*?)```", doc, flags=re.S)
        for line in block.splitlines()
        if line.startswith("mathjax-train ")
    ]
    assert len(commands) >= 2
    for argv in commands:
        config = config_from_args(build_parser().parse_args(argv))
        assert config.checkpoint == "runs/smol"
