"""`mathjax-train plan` (TPU memory and step time) of a training config or of each training stage of a
pipeline file."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mathjax_train.config import Config


def _training_configs(args) -> list[tuple[str, Config]]:
    """(label, Config) to plan: the config file, or every training stage of a pipeline file."""
    from mathjax_train.config import load_config
    from mathjax_train.pipeline.spec import is_pipeline_file, load_pipeline

    if not is_pipeline_file(args.config):
        return [(args.config, load_config(args.config, args.overrides))]
    pipe = load_pipeline(args.config, args.overrides)
    out = [(f"{args.config} stage {s.name}", s.cfg) for s in pipe.stages if s.kind == "train"]
    out += [(f"{args.config} stage {s.name} (each size)", s.cfg.train) for s in pipe.stages if s.kind == "scaling"]
    return out


def _cmd_plan(args) -> int:
    from mathjax_train.cli.config_flags import flags_given
    from mathjax_train.config import ConfigError, SamplingPlanConfig
    from mathjax_train.plan.report import DEFAULT_MFU, format_plan, make_plan

    if args.sampling:
        return _plan_sampling(args)
    given = flags_given(args, SamplingPlanConfig)
    if given:
        raise ConfigError(f"{given[0]} is a setting of the sampling engine: add --sampling to plan the engine")
    plans = [
        (
            label,
            make_plan(
                cfg,
                args.topology or "",
                mfu=DEFAULT_MFU if args.mfu is None else args.mfu,
                compile=args.compile,
                compile_layers=tuple(args.compile_layers) if args.compile_layers else None,
                compiler=args.compiler,
                bound=not args.no_bound,
                rl=args.rl,
            ),
        )
        for label, cfg in _training_configs(args)
    ]
    return _report(args, plans, format_plan)


def _plan_sampling(args) -> int:
    """`plan --sampling`: the engine's memory per chip for the model of the config (or of each training stage)."""
    from mathjax_train.cli.config_flags import config_from_flags
    from mathjax_train.config import ConfigError, SamplingPlanConfig
    from mathjax_train.plan.sampling import format_sampling_plan, sampling_plan

    for flag, set_ in (
        ("--rl", args.rl),
        ("--mfu", args.mfu is not None),
        ("--compile-layers", args.compile_layers),
        ("--compiler cpu", args.compiler == "cpu"),
    ):
        if set_:
            raise ConfigError(f"plan --sampling plans the sampling engine alone; drop {flag} (a training setting)")
    s = config_from_flags(args, SamplingPlanConfig, "plan --sampling")
    plans = [
        (
            label,
            sampling_plan(
                cfg.model, args.topology or cfg.mesh.topology, s, compile=args.compile, bound=not args.no_bound
            ),
        )
        for label, cfg in _training_configs(args)
    ]
    return _report(args, plans, format_sampling_plan)


def _report(args, plans: list, fmt) -> int:
    """Print (label, plan) pairs as JSON or text; exit 1 when any plan does not fit."""
    if args.json:
        print(json.dumps(plans[0][1] if len(plans) == 1 else {label: p for label, p in plans}, indent=2))
    else:
        print("\n\n".join(fmt(p, label) for label, p in plans))
    return 0 if all(p["fits"] for _, p in plans) else 1


def register(sub) -> None:
    """`plan`: will this config fit and how fast will it run on a TPU slice (no TPU needed)."""
    s = sub.add_parser(
        "plan",
        help="parameters, FLOPs/token, per-device memory and step time of a config (or of "
        "each training stage of a pipeline file) on a TPU slice; exit code 1 when one "
        "does not fit",
    )
    s.add_argument("--config", required=True, help="YAML file (see configs/): a training config or a pipeline")
    s.add_argument(
        "overrides",
        nargs="*",
        help="key=value overrides, e.g. train.microbatches=2 (pipeline: stages.NAME.train.microbatches=2)",
    )
    s.add_argument("--topology", default=None, help="v4-32, v5e-64, v5p-32, v6e-16, ... (default: mesh.topology)")
    s.add_argument("--mfu", type=float, default=None, help="model FLOPs utilization for the step time (default 0.4)")
    s.add_argument(
        "--compile",
        action="store_true",
        help="also compile the job's programs for the slice and report the compiler's per-chip bytes, its verdict "
        "and a roofline bound: with XLA:TPU when libtpu is installed (the [tpu] extra; any host, no TPU needed), "
        "at the full depth (minutes for a 7B model); without it, an XLA:CPU estimate of the train step",
    )
    s.add_argument(
        "--compile-layers",
        type=int,
        nargs=2,
        default=None,
        metavar=("A", "B"),
        help="compile at these two depths and extrapolate linearly to the model's, labelled as such (faster; "
        "default: the full depth with XLA:TPU, 2 and 4 for the XLA:CPU estimate)",
    )
    s.add_argument(
        "--compiler",
        choices=("auto", "tpu", "cpu"),
        default="auto",
        help="with --compile: tpu = XLA:TPU through libtpu, cpu = the XLA:CPU estimate on fake devices; "
        "auto (default) = tpu when libtpu is installed",
    )
    s.add_argument(
        "--no-bound",
        action="store_true",
        help="with --compile on XLA:TPU: skip the roofline bound, whose cost probes (each program compiled again at "
        "1 and 2 layers, loops written out) take about as long again",
    )
    s.add_argument(
        "--rl",
        action="store_true",
        help="plan the `rl` job of the config: the learner on rl minibatches over every chip (the mesh), the "
        "optional reference model, each host's engine (its parameters, resharded from the learner's, and KV pages "
        "on rl.engine.tensor chips)",
    )
    s.add_argument(
        "--sampling",
        action="store_true",
        help="plan the sampling engine instead (generate, evaluate, rft, serve): params and KV pages per chip, "
        "sequences per host, at each tensor degree; the settings below",
    )
    from mathjax_train.cli.config_flags import add_field_flags
    from mathjax_train.config import SamplingPlanConfig

    add_field_flags(s.add_argument_group("sampling engine (with --sampling)"), SamplingPlanConfig)
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")
    s.set_defaults(fn=_cmd_plan)
