"""`mathjax-train serve CKPT`: load a checkpoint, answer OpenAI-style requests until SIGTERM or SIGINT,
then end gracefully (open streams get an error event and [DONE], waiting requests a 503)."""

from __future__ import annotations

import json
import queue
import resource
import signal
import sys
import threading

from etils import epath

from mathjax_train.config import ServeConfig
from mathjax_train.infer.loading import load_for_inference
from mathjax_train.infer.params import SamplingParams
from mathjax_train.serve.app import ServeApp
from mathjax_train.serve.server import api_key_from_env, start_server


def warm_up(app: ServeApp, timeout_s: float = 600.0) -> None:
    """One short request through the engine loop (the programs were compiled ahead)."""
    tok = app.tokenizer
    ids = tok.encode("1 + 1 =") or [tok.bos_id or 0]
    events: queue.SimpleQueue = queue.SimpleQueue()
    params = SamplingParams(max_tokens=min(app.engine.cfg.decode_steps, app.context - len(ids)))
    app.loop.submit([(ids, params, [0])], events.put)
    kind, _, payload = events.get(timeout=timeout_s)
    if kind == "error":
        raise RuntimeError(f"warm-up generation failed: {payload}")


def raise_fd_limit() -> None:
    """Lift the soft RLIMIT_NOFILE to the hard limit: each client connection takes a descriptor."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


def serve_checkpoint(cfg: ServeConfig) -> int:
    """Serve `cfg.checkpoint` until SIGTERM or Ctrl-C; prints one JSON line when ready, one when stopped."""
    api_key = api_key_from_env(cfg.api_key_env)
    model = load_for_inference(cfg.checkpoint, dtype=cfg.dtype, tensor=cfg.engine.tensor)
    name = cfg.model_name or epath.Path(cfg.checkpoint).name
    app = ServeApp(model, name, cfg.engine, max_seq_len=cfg.max_seq_len, compile_ahead=cfg.warmup)
    if cfg.warmup:
        warm_up(app)
    raise_fd_limit()
    server = start_server(app, cfg.host, cfg.port, api_key=api_key, access_log=not cfg.quiet)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    e = app.engine
    # One machine-readable line: scripts (and the tests) wait for it to know the port.
    print(
        json.dumps(
            {
                "serving": server.url,
                "model": name,
                "num_slots": e.num_slots,
                "num_pages": e.num_pages,
                "page_size": e.page_size,
                "context": app.context,
                "dtype": model.cfg.dtype,
            }
        ),
        flush=True,
    )
    try:
        while not stop.wait(0.5):  # a timed wait, so that the main thread runs the signal handlers
            pass
    finally:
        server.close()
        print(json.dumps({"stopped": server.url, **app.stats_dict()}), file=sys.stderr, flush=True)
    return 0
