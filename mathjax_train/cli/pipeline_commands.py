"""`mathjax-train` pipeline."""

from __future__ import annotations

import json


def _cmd_pipeline(args) -> int:
    from mathjax_train.pipeline.runner import run_pipeline
    from mathjax_train.pipeline.spec import load_pipeline
    from mathjax_train.pipeline.stages import StagePreempted
    from mathjax_train.train.run_loop import PREEMPTED_EXIT_CODE

    pipe = load_pipeline(args.config, args.overrides)
    try:
        summary = run_pipeline(pipe, dry_run=args.dry_run, stop_after=args.stop_after)
    except StagePreempted as e:
        print(json.dumps({"status": "preempted", "detail": str(e)}))
        return PREEMPTED_EXIT_CODE
    print(
        json.dumps(
            {
                "run_dir": pipe.run_dir,
                "manifest": None if args.dry_run else f"{pipe.run_dir}/manifest.json",
                "stages": summary,
            },
            indent=1,
        )
    )
    return 0


def register(sub) -> None:
    """`pipeline`: the loop's stages from one YAML, resumable, with RUN_DIR/manifest.json."""
    s = sub.add_parser(
        "pipeline",
        help="run the stages of a pipeline YAML in order (resumes; skips stages done "
        "with the same config and inputs); writes RUN_DIR/manifest.json",
    )
    s.add_argument("--config", required=True, help="pipeline YAML (see configs/pipeline_*.yaml)")
    s.add_argument(
        "overrides", nargs="*", help="run_dir=DIR or stages.NAME.FIELD=VALUE, e.g. stages.sft.train.steps=10"
    )
    s.add_argument("--dry-run", action="store_true", help="only print which stages would run, and why")
    s.add_argument("--stop-after", default=None, metavar="STAGE", help="end the run after this stage")
    s.set_defaults(fn=_cmd_pipeline)
