"""`mathjax-train` plan (TPU memory and step time)."""
from __future__ import annotations

import json


def _cmd_plan(args) -> int:
    from mathjax_train.config import load_config
    from mathjax_train.plan.report import format_plan, make_plan

    cfg = load_config(args.config, args.overrides)
    plan = make_plan(cfg, args.topology or "", mfu=args.mfu, compile=args.compile,
                     compile_layers=tuple(args.compile_layers), rl=args.rl)
    print(json.dumps(plan, indent=2) if args.json else format_plan(plan, args.config))
    return 0 if plan["fits"] else 1


def register(sub) -> None:
    """`plan`: will this config fit and how fast will it run on a TPU slice (no TPU needed)."""
    s = sub.add_parser("plan", help="parameters, FLOPs/token, per-device memory and step time of a config on a TPU "
                                    "slice; exit code 1 when it does not fit")
    s.add_argument("--config", required=True, help="YAML file (see configs/)")
    s.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.microbatches=2")
    s.add_argument("--topology", default=None, help="v4-32, v5e-64, v5p-32, v6e-16, ... (default: mesh.topology)")
    s.add_argument("--mfu", type=float, default=0.4, help="model FLOPs utilization for the step time (default 0.4)")
    s.add_argument("--compile", action="store_true",
                   help="also compile the real train step ahead of time on fake CPU devices and report XLA's "
                        "memory analysis (minutes for a 7B model)")
    s.add_argument("--compile-layers", type=int, nargs=2, default=[2, 4], metavar=("A", "B"),
                   help="depths to compile, extrapolated linearly to the model's (default 2 4)")
    s.add_argument("--rl", action="store_true", help="plan the `rl` job of the config: learner on rl minibatches "
                                                     "+ the sampler's KV pages + the optional reference model")
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")
    s.set_defaults(fn=_cmd_plan)
