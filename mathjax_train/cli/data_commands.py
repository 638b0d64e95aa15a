"""`mathjax-train` data stats, cache, build-tokenizer, procedural."""

from __future__ import annotations

import json
import sys

from mathjax_train.cli.config_flags import add_config_flags, config_from_args
from mathjax_train.config import InputError, ProblemsStageConfig, TokenizerStageConfig


def _cmd_data_stats(args) -> int:
    from mathjax_train.config import load_config
    from mathjax_train.data.stats import mixture_stats

    overrides = list(args.overrides) + ([f"data.mixture={args.mixture}"] if args.mixture else [])
    cfg = load_config(args.config, overrides)
    if cfg.data.mixture == "toy_copy":
        raise InputError("--mixture: give a SeqIO mixture or task (toy_copy has no dataset to count)")
    print(json.dumps(mixture_stats(cfg, split=args.split, max_examples=args.max_examples, rows=args.rows)))
    return 0


def _cmd_data_cache(args) -> int:
    from mathjax_train.config import load_config

    try:
        from mathjax_train.data.cache import cache_tasks
    except ImportError as e:
        raise InputError(f"data cache needs Apache Beam ({e}): pip install 'mathjax-train[cache]'") from None
    split_at = next((i for i, a in enumerate(args.overrides) if a.startswith("-")), len(args.overrides))
    overrides, beam_args = args.overrides[:split_at], args.overrides[split_at:]
    if any(a == "--runner" or a.startswith("--runner=") for a in beam_args):
        raise InputError("give the runner once, as --runner before `--`")
    cfg = load_config(args.config, overrides)
    summary = cache_tasks(
        cfg,
        args.task,
        args.output_dir,
        splits=args.split or ["train"],
        num_files=args.num_files,
        pipeline_args=[f"--runner={args.runner}", *beam_args],
        overwrite=args.overwrite,
        log=lambda line: print(line, file=sys.stderr),
    )
    print(json.dumps(summary))
    return 0


def _cmd_data_build_tokenizer(args) -> int:
    from mathjax_train.data.tokenizer_training import build_tokenizer

    info = build_tokenizer(args.out_dir, config_from_args(args))
    print(json.dumps(info))
    return 0


def _cmd_data_procedural(args) -> int:
    from mathjax_train.data.procedural import write_problems

    c = config_from_args(args)
    print(json.dumps({"output": args.output, "split": c.split, "problems": write_problems(args.output, c)}))
    return 0


def register(sub) -> None:
    """`data stats` (counts for a mixture split), `data cache` (pre-tokenize with Beam) and `data build-tokenizer`."""
    data = sub.add_parser("data", help="training data: mixture statistics, tokenizer for from-scratch models")
    dsub = data.add_subparsers(dest="data_command", required=True)
    s = dsub.add_parser("stats", help="one pass over a mixture split through the training pipeline; prints JSON")
    s.add_argument("--mixture", default=None, help="mixture or task name (default: data.mixture of the config)")
    s.add_argument("--split", default="train")
    s.add_argument("--config", default=None, help="YAML config (data and train.seq_len are used)")
    s.add_argument("--max-examples", type=int, default=0, help="cap on examples (needed for procedural tasks)")
    s.add_argument("--rows", type=int, default=0, help="rows per packed batch (default: train.batch_size)")
    s.add_argument("overrides", nargs="*", help="key=value overrides, e.g. data.tokenizer=DIR train.seq_len=1024")
    s.set_defaults(fn=_cmd_data_stats)
    s = dsub.add_parser(
        "cache",
        help="pre-tokenize finite tasks once into a SeqIO cache with Apache Beam "
        "(train from it with data.cache_dir=DIR)",
        usage="mathjax-train data cache --task TASK --output-dir DIR [--config FILE] [key=value ...] "
        "[--runner DirectRunner|DataflowRunner] [-- BEAM_OPTION ...]",
    )
    s.add_argument("--task", action="append", required=True, help="a finite task, e.g. synthetic (repeatable)")
    s.add_argument("--output-dir", required=True, help="cache root (local or gs://); writes DIR/<task>/")
    s.add_argument("--config", default=None, help="YAML config (its data section builds the tasks)")
    s.add_argument("--split", action="append", default=None, help="split to cache (repeatable; default: train)")
    s.add_argument(
        "--num-files",
        type=int,
        default=64,
        help="TFRecord files per split; a training host count that divides it reads only its own files",
    )
    s.add_argument("--runner", default="DirectRunner", choices=["DirectRunner", "DataflowRunner"])
    s.add_argument("--overwrite", action="store_true", help="rebuild a task that is already cached")
    s.add_argument(
        "overrides",
        nargs="*",
        help="key=value overrides, then `--` and Beam pipeline options, e.g. "
        "data.jsonl=[gs://b/s.jsonl] -- --project=P --region=R "
        "--temp_location=gs://b/tmp",
    )
    s.set_defaults(fn=_cmd_data_cache)
    s = dsub.add_parser("build-tokenizer", help="train a byte-level BPE tokenizer.json on procedural problems")
    s.add_argument("out_dir")
    add_config_flags(s, TokenizerStageConfig)
    s.set_defaults(fn=_cmd_data_build_tokenizer)
    s = dsub.add_parser("procedural", help="write procedural problems as JSONL (e.g. held-out ones for evaluate)")
    s.add_argument("output")
    add_config_flags(s, ProblemsStageConfig)
    s.set_defaults(fn=_cmd_data_procedural)
