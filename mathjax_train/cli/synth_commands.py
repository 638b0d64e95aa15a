"""`mathjax-train` rft, rft-merge, augment, decontaminate, scaling-fit."""

from __future__ import annotations

import json
import typing

from mathjax_train.config import DTYPE_HELP, SLOTS_HELP, ComputeDtype, InputError
from mathjax_train.cli.config_flags import add_config_flags, config_from_args


def _cmd_rft(args) -> int:
    from mathjax_train.synth.rft_job import run_rft

    cfg = config_from_args(args)
    print(json.dumps(run_rft(cfg, progress=not args.no_progress)))
    return 0


def _cmd_rft_merge(args) -> int:
    from mathjax_train.synth.rft_output import merge_shards

    print(json.dumps(merge_shards(args.output, args.num_shards)))
    return 0


def _add_rft_commands(sub) -> None:
    from mathjax_train.config import RftConfig

    s = sub.add_parser("rft", help="rejection sampling: k paths per training question, keep verified distinct ones")
    add_config_flags(s, RftConfig, required=("output",))
    s.add_argument("--no-progress", action="store_true")
    s.set_defaults(fn=_cmd_rft)

    s = sub.add_parser("rft-merge", help="join finished rft shards OUTPUT.shard-i-of-N into OUTPUT, in question order")
    s.add_argument("--output", required=True)
    s.add_argument("--num-shards", type=int, required=True)
    s.set_defaults(fn=_cmd_rft_merge)


def _cmd_augment(args) -> int:
    from mathjax_train.synth.augment import AugmentConfig, augment, load_seeds
    from mathjax_train.synth.teacher import CheckpointTeacher, HttpTeacher, Sampling, Teacher

    if bool(args.teacher_checkpoint) == bool(args.teacher_url):
        raise InputError("give exactly one of --teacher-checkpoint CKPT or --teacher-url URL")
    if args.teacher_url and not args.teacher_model:
        raise InputError("--teacher-url needs --teacher-model NAME")
    q_sampling = Sampling(args.question_temperature, args.top_p, args.question_max_tokens, args.seed)
    s_sampling = Sampling(args.temperature, args.top_p, args.max_tokens, args.seed + 1)
    cfg = AugmentConfig(
        methods=tuple(args.methods),
        n=args.n,
        min_agreement=args.min_agreement,
        question_sampling=q_sampling,
        solution_sampling=s_sampling,
        answer_fallback="last_number" if args.last_number_fallback else None,
        benchmarks=tuple(args.benchmarks.split(",")),
        ngram=args.ngram,
    )
    cfg.validate()
    seeds = load_seeds(args.seeds, args.data_dir, args.max_seeds)
    teacher: Teacher
    if args.teacher_checkpoint:
        teacher = CheckpointTeacher(
            args.teacher_checkpoint, dtype=args.dtype, batch_size=args.batch_size, prompt_format=args.prompt_format
        )
    else:
        teacher = HttpTeacher(
            args.teacher_url,
            args.teacher_model,
            api_key_env=args.api_key_env,
            api=args.teacher_api,
            concurrency=args.concurrency,
        )
    report = augment(seeds, teacher, cfg, args.output, data_dir=args.data_dir, report_path=args.report)
    print(
        json.dumps(
            {
                "output": args.output,
                "seeds": report.seeds,
                "candidates": report.candidates,
                "kept": report.kept,
                "dropped": {k: v for k, v in report.dropped.items() if v},
                "seconds": round(report.seconds, 2),
            }
        )
    )
    return 0


def _cmd_decontaminate(args) -> int:
    from mathjax_train.synth.decontaminate import decontaminate_with

    summary = decontaminate_with(config_from_args(args), args.output, args.report)
    print(json.dumps(summary | {"output": args.output, "report": args.report}))
    return 0


def _cmd_scaling_fit(args) -> int:
    from mathjax_train.synth.scaling import fit_log_linear, plot_fit, read_point

    fit = fit_log_linear([read_point(r, args.metric) for r in args.reports], args.metric)
    body = fit.as_dict()
    if args.target is not None:
        body["size_for_target"] = {"target": args.target, "size": fit.size_for(args.target)}
    if args.plot:
        plot_fit(fit, args.plot)
        body["plot"] = args.plot
    print(json.dumps(body, indent=1))
    return 0


def _add_augment_commands(sub) -> None:
    """`augment`, `decontaminate`, `scaling-fit` (synthesis II)."""
    s = sub.add_parser("augment", help="new questions from seed problems via a teacher, kept by self-consistency")
    s.add_argument("--seeds", required=True, help="gsm8k | math (their train splits) | a JSONL file")
    s.add_argument("--output", required=True, help="JSONL of kept rows (question, solution, answer, provenance)")
    s.add_argument("--report", default=None, help="report JSON (default: OUTPUT.report.json)")
    t = s.add_mutually_exclusive_group()
    t.add_argument("--teacher-checkpoint", default=None, help="one of our checkpoints, sampled in-process")
    t.add_argument("--teacher-url", default=None, help="base URL of an OpenAI-compatible API, e.g. http://host:8000/v1")
    s.add_argument("--teacher-model", default=None, help="model name sent to --teacher-url")
    s.add_argument("--teacher-api", default="chat", choices=["chat", "completions"])
    s.add_argument("--api-key-env", default="OPENAI_API_KEY", help="env var holding the endpoint's API key")
    s.add_argument("--concurrency", type=int, default=8, help="parallel HTTP requests")
    s.add_argument("--methods", nargs="+", default=["rephrase", "change_numbers", "harder"])
    s.add_argument("--n", type=int, default=4, help="teacher solutions per new question")
    s.add_argument("--min-agreement", type=float, default=0.5, help="share of the n answers the majority needs")
    s.add_argument("--temperature", type=float, default=0.7, help="solution sampling temperature")
    s.add_argument("--question-temperature", type=float, default=0.7)
    s.add_argument("--top-p", type=float, default=0.95)
    s.add_argument("--max-tokens", type=int, default=768, help="per solution")
    s.add_argument("--question-max-tokens", type=int, default=384)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--max-seeds", type=int, default=0, help="use the first N seeds (0: all)")
    s.add_argument(
        "--last-number-fallback",
        action="store_true",
        help="accept a solution's last number as its answer when it boxes none (GSM8K style)",
    )
    s.add_argument("--data-dir", default=None, help="benchmark directory (default: $MATHJAX_DATA_DIR)")
    s.add_argument("--benchmarks", default="gsm8k,math", help="test sets to decontaminate against")
    s.add_argument("--ngram", type=int, default=13)
    s.add_argument("--dtype", default="auto", choices=typing.get_args(ComputeDtype), help=DTYPE_HELP)
    s.add_argument("--batch-size", type=int, default=0, help="checkpoint teacher: " + SLOTS_HELP)
    s.add_argument(
        "--prompt-format",
        default="chat",
        choices=["chat", "plain"],
        help="checkpoint teacher: chat template (fallback format without one) or raw text",
    )
    s.set_defaults(fn=_cmd_augment)

    from mathjax_train.config import DecontaminateConfig

    s = sub.add_parser("decontaminate", help="drop JSONL rows that copy GSM8K / MATH test questions")
    add_config_flags(s, DecontaminateConfig, required=("input",))
    s.add_argument("--output", required=True)
    s.add_argument("--report", default=None, help="JSON report: each dropped row with the test ids it hits")
    s.set_defaults(fn=_cmd_decontaminate)

    s = sub.add_parser("scaling-fit", help="fit metric = a + b ln(data size) across evaluation reports")
    s.add_argument("reports", nargs="+", help="REPORT.json[:SIZE]; without :SIZE the report's train_examples")
    s.add_argument("--metric", default="accuracy", help="report field (dotted path for nested fields)")
    s.add_argument("--plot", default=None, help="write the plot here (PNG)")
    s.add_argument("--target", type=float, default=None, help="also print the size the law predicts for this value")
    s.set_defaults(fn=_cmd_scaling_fit)


def register(sub) -> None:
    """`rft` (synthesis I), `augment`, `decontaminate`, `scaling-fit` (synthesis II)."""
    _add_rft_commands(sub)
    _add_augment_commands(sub)
