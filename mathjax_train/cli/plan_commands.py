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
    from mathjax_train.plan.report import format_plan, make_plan

    plans = [
        (
            label,
            make_plan(
                cfg,
                args.topology or "",
                mfu=args.mfu,
                compile=args.compile,
                compile_layers=tuple(args.compile_layers),
                rl=args.rl,
            ),
        )
        for label, cfg in _training_configs(args)
    ]
    if args.json:
        print(json.dumps(plans[0][1] if len(plans) == 1 else {label: p for label, p in plans}, indent=2))
    else:
        print("\n\n".join(format_plan(p, label) for label, p in plans))
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
    s.add_argument("--mfu", type=float, default=0.4, help="model FLOPs utilization for the step time (default 0.4)")
    s.add_argument(
        "--compile",
        action="store_true",
        help="also compile the real train step ahead of time on fake CPU devices and report XLA's "
        "memory analysis (minutes for a 7B model)",
    )
    s.add_argument(
        "--compile-layers",
        type=int,
        nargs=2,
        default=[2, 4],
        metavar=("A", "B"),
        help="depths to compile, extrapolated linearly to the model's (default 2 4)",
    )
    s.add_argument(
        "--rl",
        action="store_true",
        help="plan the `rl` job of the config: learner on rl minibatches "
        "+ the sampler's KV pages + the optional reference model",
    )
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")
    s.set_defaults(fn=_cmd_plan)
