"""`mathjax-train` rl."""

from __future__ import annotations

import json
import sys


def _cmd_rl(args) -> int:
    from mathjax_train.config import load_config
    from mathjax_train.rl.trainer import PREEMPTED_EXIT_CODE, run_rl

    cfg = load_config(args.config, args.overrides)
    if args.tools:
        cfg.rl.tools = args.tools
        cfg.rl.validate()
    summary = run_rl(cfg, max_steps_this_run=args.max_steps_this_run)
    print(json.dumps({k: v for k, v in summary.items() if k != "heldout"}), file=sys.stdout)
    return PREEMPTED_EXIT_CODE if summary["status"] == "preempted" else 0


def register(sub) -> None:
    """`rl`: online RL with verifiable rewards (GRPO family); re-running the same command resumes."""
    s = sub.add_parser(
        "rl",
        help="GRPO-family RL from init_from: sample on the engine, reward with the grader, "
        "update in place; writes OUTPUT_DIR/{metrics.jsonl,tensorboard,checkpoints,"
        "rl_summary.json}",
    )
    s.add_argument("--config", required=True, help="YAML file with an `rl` section (e.g. configs/grpo_demo.yaml)")
    s.add_argument("overrides", nargs="*", help="key=value overrides, e.g. init_from=DIR rl.group_size=8")
    s.add_argument(
        "--tools",
        default=None,
        choices=["none", "python"],
        help="python: tool-integrated rollouts, interpreter output masked out of the loss (= rl.tools)",
    )
    s.add_argument(
        "--max-steps-this-run",
        type=int,
        default=None,
        help="stop (with a checkpoint) after this many steps; the next run resumes",
    )
    s.set_defaults(fn=_cmd_rl)
