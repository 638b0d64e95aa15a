"""The `mathjax-train` command: parse arguments, then call the modules that do the work.

Each area registers its subcommands from its own module (model, train, data, eval, synth, serve,
plan, pipeline); handlers stay thin and import the modules that do the work only when they run. Other
libraries' start-up logs stay off the terminal unless --verbose (cli/quiet.py).
"""

from __future__ import annotations

import argparse
import sys

from mathjax_train.cli import (
    data_commands,
    platforms,
    eval_commands,
    model_commands,
    pipeline_commands,
    plan_commands,
    quiet,
    rl_commands,
    serve_commands,
    synth_commands,
    train_commands,
)

AREAS = (
    model_commands,
    train_commands,
    data_commands,
    eval_commands,
    synth_commands,
    serve_commands,
    plan_commands,
    pipeline_commands,
    rl_commands,
)

# the commands that compile JAX programs: they report what they compiled and what the cache gave back (the
# others do not import jax for it)
COMPILING = frozenset({"train", "generate", "evaluate", "rft", "augment", "rl", "serve", "pipeline", "demo", "plan"})


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mathjax-train", description=__doc__.splitlines()[0])
    p.add_argument(
        "--verbose",
        action="store_true",
        help=f"show the libraries' own logs (TensorFlow, CUDA, absl/Orbax); also {quiet.VERBOSE_ENV}=1",
    )
    sub = p.add_subparsers(dest="command", required=True)
    for area in AREAS:
        area.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    from mathjax_train.errors import InputError
    from mathjax_train.parallel import compile_cache

    args = build_parser().parse_args(argv)
    platforms.keep_off_absent_tpu()
    quiet.configure(quiet.verbose_requested(args.verbose))
    cache = compile_cache.enable()
    try:
        if args.command not in COMPILING:
            return args.fn(args)
        with compile_cache.CompileCount() as count:
            code = args.fn(args)
    except (InputError, FileNotFoundError) as e:  # other exceptions are bugs: their traceback is shown
        print(f"mathjax-train {args.command}: error: {e}", file=sys.stderr)
        return 2
    print(f"mathjax-train {args.command}: {count.describe(cache)}", file=sys.stderr)
    return code
