"""`mathjax-train` evaluate."""
from __future__ import annotations

import json

from mathjax_train.cli.sampling_args import add_dtype_arg, add_sampling_args


def _cmd_evaluate(args) -> int:
    from mathjax_train.config import EvalConfig, GenerateConfig
    from mathjax_train.eval.harness import evaluate

    gen = GenerateConfig(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                         top_k=args.top_k, num_samples=args.num_samples, seed=args.seed, batch_size=args.batch_size,
                         stop=list(args.stop))
    cfg = EvalConfig(checkpoint=args.checkpoint, dataset=args.dataset, split=args.split, data_dir=args.data_dir or "",
                     limit=args.limit, template=args.template, shots=args.shots, exemplars=args.exemplars or "",
                     output_dir=args.output_dir or "", dtype=args.dtype, tools=args.tools,
                     answer_fallback=args.answer_fallback, grading_timeout_s=args.grading_timeout, generate=gen)
    res = evaluate(cfg, progress=not args.no_progress)
    r = res.report
    print(json.dumps({"report": res.paths["report"], "dataset": args.dataset, "problems": r["num_problems"],
                      "accuracy": r["accuracy"], "pass@k": r["pass@k"], "maj@k": r["maj@k"],
                      "generated": res.generated, "resumed": res.resumed, "seconds": r["run"]["seconds"]}))
    return 0


def register(sub) -> None:
    """`evaluate` (grading/eval issue)."""
    s = sub.add_parser("evaluate", help="accuracy, pass@k, maj@k of a checkpoint on gsm8k, math, math500 or a JSONL")
    s.add_argument("--checkpoint", required=True)
    s.add_argument("--dataset", required=True, help="gsm8k | math | math500 | a JSONL file (question/problem, answer, "
                                                    "optional level, subject/type, id/unique_id, solution)")
    s.add_argument("--split", default="test", help="split of a named dataset (default test)")
    s.add_argument("--data-dir", default=None, help="manual data directory (default $MATHJAX_DATA_DIR)")
    s.add_argument("--limit", type=int, default=0, help="evaluate the first N problems (0 = all)")
    s.add_argument("--template", default="question_answer", choices=["alpaca_rft", "question_answer", "chat"])
    s.add_argument("--shots", type=int, default=0, help="few-shot exemplars (from the train split or --exemplars)")
    s.add_argument("--exemplars", default=None, help="JSONL of solved exemplars (question, answer, solution)")
    add_sampling_args(s, max_new_tokens=512, stop_help="extra stop string (repeatable; added to the defaults)")
    s.add_argument("--output-dir", default=None, help="default runs/eval/<dataset>; re-running resumes")
    add_dtype_arg(s)
    s.add_argument("--tools", default="none", choices=["none", "python"], help="python: tool-integrated reasoning")
    s.add_argument("--answer-fallback", default="auto", choices=["auto", "none", "last_number"],
                   help="when no boxed/'The answer is' answer: auto = last number for gsm8k only")
    s.add_argument("--grading-timeout", type=float, default=5.0, help="seconds per symbolic comparison")
    s.add_argument("--no-progress", action="store_true")
    s.set_defaults(fn=_cmd_evaluate)
