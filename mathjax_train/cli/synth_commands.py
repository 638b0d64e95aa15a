"""`mathjax-train` rft, rft-merge, augment, decontaminate, scaling-fit."""

from __future__ import annotations

import json

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
    from mathjax_train.synth.augment import run_augment_job

    job = config_from_args(args)
    report = run_augment_job(job)
    print(
        json.dumps(
            {
                "output": job.output,
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
    """`augment`, `decontaminate` (flags from `AugmentJobConfig`, `DecontaminateConfig`), `scaling-fit`."""
    from mathjax_train.config import AugmentJobConfig, DecontaminateConfig

    s = sub.add_parser("augment", help="new questions from seed problems via a teacher, kept by self-consistency")
    add_config_flags(s, AugmentJobConfig, required=("seeds", "output"))
    s.set_defaults(fn=_cmd_augment)

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
