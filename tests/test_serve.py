"""`serve`: the official openai client against a real server on localhost with a tiny checkpoint.

Greedy text must equal what Generator gives for the same prompt; chat prompts must equal what
transformers' apply_chat_template gives; bad requests get OpenAI-shaped errors with the right
status codes; 200 concurrent requests are all answered, in shared batches.
"""
import asyncio
import http.client
import json
import urllib.parse

import openai
import pytest

from hf_fixtures import make_hf_model
from mathjax_train.cli import main
from mathjax_train.infer import Generator, SamplingParams
from mathjax_train.infer.loading import load_for_inference
from mathjax_train.serve.app import ServeApp, text_deltas
from mathjax_train.infer.chat import FALLBACK_STOP, render_chat
from mathjax_train.serve.server import start_server

CHAT_TEMPLATE = ("{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")
PROMPTS = ["Natalia sold 48 clips in April", "Compute 3x + 5 = 20", "def add(a, b):", "The answer is"]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    d = tmp_path_factory.mktemp("serve")
    make_hf_model(d / "hf", "llama", seed=3)
    cfg_path = d / "hf" / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps(dict(cfg, chat_template=CHAT_TEMPLATE)))
    assert main(["import-hf", str(d / "hf"), str(d / "ckpt"), "--dtype", "float32"]) == 0
    model = load_for_inference(d / "ckpt")
    app = ServeApp(model, "tiny", max_batch=4)
    server = start_server(app, "127.0.0.1", 0)
    client = openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=120)
    yield server, client, model, d / "hf"
    client.close()
    server.close()


_GENERATORS = {}


def greedy(model, prompt_ids, n):
    """The reference: Generator alone (one per model, one padded shape, so it compiles once)."""
    tok = model.tokenizer
    if id(model) not in _GENERATORS:
        _GENERATORS[id(model)] = Generator(model.cfg, model.params, eos_ids=sorted(set(model.cfg.eos_token_id) | {tok.eos_id}))
    return _GENERATORS[id(model)].generate([prompt_ids], SamplingParams(max_new_tokens=n), [0], prompt_len=64,
                                            decode_text=tok.decode)[0]


def test_models_list_and_retrieve(served):
    _, client, _, _ = served
    assert [m.id for m in client.models.list().data] == ["tiny"]
    assert client.models.retrieve("tiny").owned_by == "mathjax-train"


def test_completion_greedy_equals_generator(served):
    _, client, model, _ = served
    r = client.completions.create(model="tiny", prompt=PROMPTS[:2], max_tokens=12, temperature=0)
    assert [c.index for c in r.choices] == [0, 1]
    expected_new = 0
    for prompt, choice in zip(PROMPTS[:2], r.choices):
        ids = model.tokenizer.encode(prompt)
        want = greedy(model, ids, 12)
        assert choice.text == want.text
        assert choice.finish_reason == ("stop" if want.finish_reason == "eos" else "length")
        expected_new += len(want.token_ids)
    prompt_tokens = sum(len(model.tokenizer.encode(p)) for p in PROMPTS[:2])
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (prompt_tokens, expected_new)
    assert r.usage.total_tokens == prompt_tokens + expected_new


def test_completion_stream_joins_to_the_same_text(served):
    _, client, _, _ = served
    plain = client.completions.create(model="tiny", prompt=PROMPTS[2], max_tokens=10, temperature=0)
    stream = client.completions.create(model="tiny", prompt=PROMPTS[2], max_tokens=10, temperature=0,
                                       stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == plain.choices[0].text
    assert len([c for c in chunks if c.choices and c.choices[0].text]) > 1  # sent in pieces, not one blob
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == [plain.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == plain.usage.completion_tokens


def test_chat_uses_the_checkpoint_template_and_matches_generator(served):
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

    stream = client.chat.completions.create(model="tiny", messages=messages, max_tokens=12, temperature=0,
                                            stream=True)
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == want.text
    assert chunks[-1].choices[0].finish_reason == r.choices[0].finish_reason


def test_fallback_chat_format_without_a_template(tmp_path):
    from hf_fixtures import write_tokenizer

    from mathjax_train.data.vocab import load_tokenizer

    write_tokenizer(tmp_path)
    tok = load_tokenizer(tmp_path)
    r = render_chat(tok, [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"},
                          {"role": "assistant", "content": "A"}, {"role": "user", "content": "Q2"}])
    assert r.text == "System: S\nUser: Q\nAssistant: A\nUser: Q2\nAssistant:"
    assert r.prompt_ids == tok.encode(r.text) and r.prompt_ids[0] == tok.bos_id
    assert r.implicit_stop == (FALLBACK_STOP,)


def test_stop_string_cuts_and_reports_stop(served):
    _, client, _, _ = served
    full = client.completions.create(model="tiny", prompt=PROMPTS[0], max_tokens=16, temperature=0).choices[0]
    stop = full.text[len(full.text) // 2:][:2]
    assert stop.strip()
    cut = client.completions.create(model="tiny", prompt=PROMPTS[0], max_tokens=16, temperature=0,
                                    stop=[stop]).choices[0]
    assert cut.text == full.text[:full.text.find(stop)] and cut.finish_reason == "stop"


def test_n_samples_are_seeded_and_distinct(served):
    _, client, _, _ = served
    kw = dict(model="tiny", prompt=PROMPTS[3], max_tokens=12, temperature=1.0, n=3, seed=7)
    a = [c.text for c in client.completions.create(**kw).choices]
    b = [c.text for c in client.completions.create(**kw).choices]
    assert a == b and len(set(a)) == 3
    c = [c.text for c in client.completions.create(**dict(kw, seed=8)).choices]
    assert c != a


def raw(server, method, path, body=None, headers=None):
    u = urllib.parse.urlsplit(server.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
    conn.request(method, u.path + path, body=data, headers=headers or {"Content-Type": "application/json"})
    resp = conn.getresponse()
    payload = json.loads(resp.read())
    conn.close()
    return resp.status, payload


BAD = [
    ("POST", "/completions", {"model": "other", "prompt": "x"}, 404, "model", "model_not_found"),
    ("POST", "/completions", {"model": "tiny", "prompt": "x", "temperature": 3}, 400, "temperature", None),
    ("POST", "/completions", {"model": "tiny"}, 400, "prompt", None),
    ("POST", "/completions", {"prompt": "x"}, 400, "model", None),
    ("POST", "/completions", {"model": "tiny", "prompt": "x", "n": 0}, 400, "n", None),
    ("POST", "/completions", {"model": "tiny", "prompt": "x", "max_tokens": "9"}, 400, "max_tokens", None),
    ("POST", "/completions", {"model": "tiny", "prompt": "x", "stop": 5}, 400, "stop", None),
    ("POST", "/completions", {"model": "tiny", "prompt": "x", "frobnicate": 1}, 400, "frobnicate", None),
    ("POST", "/completions", {"model": "tiny", "prompt": "x", "logprobs": 5}, 400, "logprobs", None),
    ("POST", "/completions", {"model": "tiny", "prompt": [[5, 99999]]}, 400, "prompt", None),
    ("POST", "/completions", {"model": "tiny", "prompt": "x", "max_tokens": 5000}, 400, "prompt",
     "context_length_exceeded"),
    ("POST", "/completions", b"{not json", 400, None, None),
    ("POST", "/completions", [1, 2], 400, None, None),
    ("POST", "/chat/completions", {"model": "tiny", "messages": []}, 400, "messages", None),
    ("POST", "/chat/completions", {"model": "tiny", "messages": [{"role": "wizard", "content": "x"}]}, 400,
     "messages.[0].role", None),
    ("POST", "/chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": "x"}],
                                   "tools": [{"type": "function"}]}, 400, "tools", None),
    ("POST", "/chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "x"}}]}]}, 400, "messages.[0].content", None),
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
    keyed = start_server(server.app, "127.0.0.1", 0, api_key="sekret")
    try:
        bad = openai.OpenAI(base_url=keyed.url, api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            bad.models.list()
        good = openai.OpenAI(base_url=keyed.url, api_key="sekret", max_retries=0)
        assert [m.id for m in good.models.list().data] == ["tiny"]
    finally:
        keyed.httpd.shutdown()
        keyed.httpd.server_close()  # the app (and its batcher) belongs to the module fixture


def test_a_full_queue_answers_429_and_the_worker_survives(served):
    from mathjax_train.serve.protocol import ApiError

    server, _, model, _ = served
    app, limit = server.app, server.app.batcher.max_queue
    try:
        app.batcher.max_queue = 0
        with pytest.raises(ApiError) as e:
            app.completions({"model": "tiny", "prompt": "x", "max_tokens": 12})
        assert e.value.status == 429 and e.value.body()["error"]["code"] == "rate_limit_exceeded"
    finally:
        app.batcher.max_queue = limit
    r = app.completions({"model": "tiny", "prompt": "x", "max_tokens": 12, "temperature": 0})
    assert r["choices"][0]["text"] == greedy(model, model.tokenizer.encode("x"), 12).text


def test_200_concurrent_requests_are_all_answered_in_shared_batches(served):
    server, _, model, _ = served
    prompts = [f"Question {i}: how many clips?" for i in range(10)]
    expected = {p: greedy(model, model.tokenizer.encode(p), 12).text for p in prompts}
    before = server.app.batcher.stats.batches

    async def run():
        client = openai.AsyncOpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=300)

        async def one(i):
            p = prompts[i % len(prompts)]
            if i % 4 == 0:  # a quarter of them stream
                stream = await client.completions.create(model="tiny", prompt=p, max_tokens=12, temperature=0,
                                                         stream=True)
                return p, "".join([c.choices[0].text async for c in stream if c.choices])
            r = await client.completions.create(model="tiny", prompt=p, max_tokens=12, temperature=0)
            return p, r.choices[0].text

        try:
            return await asyncio.gather(*(one(i) for i in range(200)))
        finally:
            await client.close()

    results = asyncio.run(run())
    assert len(results) == 200
    assert all(text == expected[p] for p, text in results)
    batches = server.app.batcher.stats.batches - before
    assert batches <= 200 // 4 + 10  # max_batch 4: close to full batches, not one batch per request


def test_text_deltas_join_to_the_final_text():
    decode = lambda ids: "".join(chr(65 + i) for i in ids)  # noqa: E731
    assert text_deltas(decode, [0, 1, 2], "ABC") == ["A", "B", "C"]
    assert "".join(text_deltas(decode, [0, 1, 2, 3], "AB")) == "AB"  # cut by a stop string
    half = lambda ids: "x\ufffd" if len(ids) == 1 else "xé"  # noqa: E731  (a split UTF-8 character)
    assert text_deltas(half, [7, 8], "xé") == ["xé"]
