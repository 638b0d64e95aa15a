"""`mathjax-train` serve (OpenAI-compatible HTTP over the sampling engine)."""

from __future__ import annotations

from mathjax_train.cli.config_flags import add_config_flags, add_flag_alias, config_from_args


def _cmd_serve(args) -> int:
    from mathjax_train.serve.launch import serve_checkpoint

    return serve_checkpoint(config_from_args(args))


def register(sub) -> None:
    """`serve`: OpenAI-compatible HTTP server (synthesis II); flags from `ServeConfig`."""
    from mathjax_train.config import ServeConfig

    s = sub.add_parser("serve", help="OpenAI-compatible HTTP server (/v1/completions, /v1/chat/completions)")
    add_config_flags(s, ServeConfig, required=("checkpoint",))
    add_flag_alias(s, "--max-batch", "engine.num_slots")  # the old name of --num-slots
    s.set_defaults(fn=_cmd_serve)
