"""`mathjax-train` serve (OpenAI-compatible HTTP)."""
from __future__ import annotations



def _cmd_serve(args) -> int:
    from mathjax_train.serve.launch import serve_checkpoint

    return serve_checkpoint(args.checkpoint, host=args.host, port=args.port, max_batch=args.max_batch,
                            dtype=args.dtype, model_name=args.model_name, api_key_env=args.api_key_env,
                            chat_max_tokens=args.chat_max_tokens, warmup=not args.no_warmup,
                            access_log=not args.quiet)


def register(sub) -> None:
    """`serve`: OpenAI-compatible HTTP server (synthesis II)."""
    s = sub.add_parser("serve", help="OpenAI-compatible HTTP server (/v1/completions, /v1/chat/completions)")
    s.add_argument("checkpoint", help="checkpoint directory (import-hf or train output)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000, help="0 picks a free port (printed on the ready line)")
    s.add_argument("--max-batch", type=int, default=8, help="rows per generation batch (fixed shape)")
    s.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                   help="override the compute dtype")
    s.add_argument("--model-name", default=None, help="the `model` clients must send (default: checkpoint dir name)")
    s.add_argument("--api-key-env", default=None,
                   help="require `Authorization: Bearer <key>` with the key read from this env var")
    s.add_argument("--chat-max-tokens", type=int, default=256,
                   help="max_tokens of a chat request that gives none (capped by the context length)")
    s.add_argument("--no-warmup", action="store_true", help="skip compiling the smallest batch at start-up")
    s.add_argument("--quiet", action="store_true", help="no access log on stderr")
    s.set_defaults(fn=_cmd_serve)
