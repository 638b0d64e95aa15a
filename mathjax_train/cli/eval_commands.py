"""`mathjax-train` evaluate."""

from __future__ import annotations

import json

from mathjax_train.cli.config_flags import add_config_flags, config_from_args


def _cmd_evaluate(args) -> int:
    from mathjax_train.eval.harness import evaluate

    cfg = config_from_args(args)
    res = evaluate(cfg, progress=not args.no_progress)
    r = res.report
    print(
        json.dumps(
            {
                "report": res.paths["report"],
                "dataset": cfg.dataset,
                "problems": r["num_problems"],
                "accuracy": r["accuracy"],
                "pass@k": r["pass@k"],
                "maj@k": r["maj@k"],
                "generated": res.generated,
                "resumed": res.resumed,
                "seconds": r["run"]["seconds"],
                **({"shard": list(res.shard), "joined": res.joined} if res.shard else {}),
            }
        )
    )
    return 0


def register(sub) -> None:
    """`evaluate` (grading/eval issue): flags from `EvalConfig`."""
    from mathjax_train.config import EvalConfig

    s = sub.add_parser("evaluate", help="accuracy, pass@k, maj@k of a checkpoint on gsm8k, math, math500 or a JSONL")
    add_config_flags(s, EvalConfig, required=("checkpoint",))
    s.add_argument("--no-progress", action="store_true")
    s.set_defaults(fn=_cmd_evaluate)
