"""`mathjax-train` train and demo."""

from __future__ import annotations

import json
import sys


def _cmd_train(args) -> int:
    from mathjax_train.config import load_config
    from mathjax_train.train.metrics import print_line
    from mathjax_train.train.trainer import PREEMPTED_EXIT_CODE, TrainingDiverged, train

    cfg = load_config(args.config, args.overrides)
    try:
        summary = train(cfg, max_steps_this_run=args.max_steps_this_run)
    except TrainingDiverged as e:
        print(f"mathjax-train train: diverged: {e}", file=sys.stderr)
        return 3
    print_line(json.dumps(summary))
    return PREEMPTED_EXIT_CODE if summary["status"] == "preempted" else 0


def _cmd_demo(args) -> int:
    from mathjax_train.demo import run_demo, run_study

    if args.study:
        print(json.dumps(run_study(args.output_dir or "runs/study", tuple(args.overrides)), indent=1))
    else:
        print(json.dumps(run_demo(args.output_dir or "runs/demo", tuple(args.overrides)), indent=1))
    return 0


def register(sub) -> None:
    """`train`: SFT on the configured mixture; re-running the same command resumes."""
    s = sub.add_parser(
        "train", help="train (or resume) as configured; writes OUTPUT_DIR/{metrics.jsonl,tensorboard,checkpoints}"
    )
    s.add_argument("--config", required=True, help="YAML file (see configs/)")
    s.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.steps=100 mesh.data=-1")
    s.add_argument(
        "--max-steps-this-run",
        type=int,
        default=None,
        help="stop (with a checkpoint) after this many steps; the next run resumes",
    )
    s.set_defaults(fn=_cmd_train)

    s = sub.add_parser(
        "demo",
        help="the main job on CPU: the papers' loop in miniature (configs/pipeline_demo.yaml: "
        "SFT from scratch at four data sizes, pass@k, RFT, retrain, HF export); writes "
        "OUTPUT_DIR/report.md and demo_summary.json; re-running resumes",
    )
    s.add_argument("--output-dir", default=None, help="the pipeline's run_dir (runs/demo; with --study runs/study)")
    s.add_argument(
        "--study",
        action="store_true",
        help="the RFT paper's protocol over three seeds instead (configs/pipeline_study.yaml: SFT to convergence, "
        "k = 16 and 4 paths on its training questions, RFT from the same initialization); writes "
        "OUTPUT_DIR/study_report.md and study_summary.json",
    )
    s.add_argument("overrides", nargs="*", help="pipeline overrides, e.g. stages.rft.k=8 stages.seed.count=2000")
    s.set_defaults(fn=_cmd_demo)
