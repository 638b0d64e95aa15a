"""`mathjax-train serve CKPT`: load a checkpoint, answer OpenAI-style requests until interrupted."""
from __future__ import annotations

import json
import signal
import sys
import threading

from etils import epath

from mathjax_train.infer.loading import load_for_inference
from mathjax_train.serve.app import ServeApp
from mathjax_train.serve.batcher import Job
from mathjax_train.serve.server import api_key_from_env, start_server


def warm_up(app: ServeApp) -> None:
    """Compile the smallest bucket once so the first client does not wait for it."""
    tok = app.tokenizer
    ids = tok.encode("1 + 1 =") or [tok.bos_id or 0]
    app.batcher.submit(Job(ids, 1, 0.0, 1.0, (), 0)).result()


def serve_checkpoint(ckpt_dir: str, *, host: str = "127.0.0.1", port: int = 8000, max_batch: int = 8,
                     dtype: str | None = None, model_name: str | None = None, api_key_env: str | None = None,
                     chat_max_tokens: int = 256, warmup: bool = True, access_log: bool = True) -> int:
    api_key = api_key_from_env(api_key_env)
    model = load_for_inference(ckpt_dir, dtype=dtype)
    name = model_name or epath.Path(ckpt_dir).name
    app = ServeApp(model, name, max_batch=max_batch, chat_max_tokens=chat_max_tokens)
    if warmup:
        warm_up(app)
    server = start_server(app, host, port, api_key=api_key, access_log=access_log)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    # One machine-readable line: scripts (and the tests) wait for it to know the port.
    print(json.dumps({"serving": server.url, "model": name, "max_batch": max_batch}), flush=True)
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
        print(json.dumps({"stopped": server.url, "batcher": app.batcher.stats.as_dict()}), file=sys.stderr, flush=True)
    return 0
