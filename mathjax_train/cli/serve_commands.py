"""`mathjax-train` serve (OpenAI-compatible HTTP over the sampling engine)."""

from __future__ import annotations

import argparse

from mathjax_train.config import EngineConfig


def _cmd_serve(args) -> int:
    from mathjax_train.serve.launch import serve_checkpoint

    engine = EngineConfig(
        num_slots=args.num_slots,
        page_size=args.page_size,
        num_pages=args.num_pages,
        decode_steps=args.decode_steps,
        prefill_budget=args.prefill_budget,
    )
    return serve_checkpoint(
        args.checkpoint,
        host=args.host,
        port=args.port,
        engine=engine,
        max_seq_len=args.max_seq_len,
        dtype=args.dtype,
        model_name=args.model_name,
        api_key_env=args.api_key_env,
        warmup=not args.no_warmup,
        access_log=not args.quiet,
    )


def register(sub) -> None:
    """`serve`: OpenAI-compatible HTTP server (synthesis II)."""
    d = EngineConfig
    s = sub.add_parser("serve", help="OpenAI-compatible HTTP server (/v1/completions, /v1/chat/completions)")
    s.add_argument("checkpoint", help="checkpoint directory (import-hf or train output)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000, help="0 picks a free port (printed on the ready line)")
    s.add_argument(
        "--num-slots",
        type=int,
        default=d.num_slots,
        help="rows decoded together; requests join the running batch (0 = 64 on CPU, 256 on GPU/TPU)",
    )
    s.add_argument("--max-batch", dest="num_slots", type=int, help=argparse.SUPPRESS)  # deprecated alias
    s.add_argument("--page-size", type=int, default=d.page_size, help="tokens per KV-cache page")
    s.add_argument(
        "--num-pages",
        type=int,
        default=d.num_pages,
        help="KV-cache pages (0 = every slot at the longest sequence, within the free memory)",
    )
    s.add_argument(
        "--decode-steps",
        type=int,
        default=d.decode_steps,
        help="tokens decoded per chunk; new requests are admitted between chunks",
    )
    s.add_argument(
        "--prefill-budget",
        type=int,
        default=d.prefill_budget,
        help="prompt tokens prefilled per chunk while other rows decode",
    )
    s.add_argument(
        "--max-seq-len",
        type=int,
        default=0,
        help="longest prompt + completion (0 = the model's max_position_embeddings)",
    )
    s.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "float32", "bfloat16", "float16"],
        help="compute dtype (auto: float32 on CPU, bfloat16 on GPU/TPU)",
    )
    s.add_argument("--model-name", default=None, help="the `model` clients must send (default: checkpoint dir name)")
    s.add_argument(
        "--api-key-env", default=None, help="require `Authorization: Bearer <key>` with the key read from this env var"
    )
    s.add_argument("--no-warmup", action="store_true", help="skip compiling a one-row chunk at start-up")
    s.add_argument("--quiet", action="store_true", help="no access log on stderr")
    s.set_defaults(fn=_cmd_serve)
