"""Our checkpoint -> an HF directory that transformers loads with no code of ours.

Writes safetensors shards (one tensor produced at a time), an index when sharded, config.json,
generation_config.json and the tokenizer files that came in with the import.
"""

from __future__ import annotations

import json

import numpy as np
from etils import epath

from mathjax_train.config import ConfigError, ExportStageConfig
from mathjax_train.convert.hf_config import model_config_to_hf
from mathjax_train.convert.hf_params import ParamSpec, get_path, param_specs, stack_index, tree_path
from mathjax_train.convert.import_hf import copy_tokenizer_files
from mathjax_train.convert.safetensors_io import write_safetensors
from mathjax_train.model import checkpoint as ckpt
from mathjax_train.model.layers import DTYPES
from mathjax_train.model.lora import load_plain_params

TORCH_DTYPE_NAMES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


def export_hf(
    ckpt_dir, hf_dir, *, dtype: str | None = None, max_shard_bytes: int = int(ExportStageConfig.max_shard_gb * 2**30)
) -> list[str]:
    """Export; `dtype` defaults to the checkpoint's parameter dtype. Returns the files written. An
    adapter checkpoint (LoRA) is written merged onto its base (convert/peft_adapter.py writes the adapters)."""
    src = epath.Path(ckpt_dir)
    cfg = ckpt.load_model_config(src)
    dtype = dtype or cfg.param_dtype
    if dtype not in DTYPES:
        raise ConfigError(f"--dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    np_dtype = np.dtype(DTYPES[dtype])
    params = load_plain_params(src, cfg)
    specs = param_specs(cfg)

    shards: list[list[ParamSpec]] = []
    current: list[ParamSpec] = []
    size = 0
    for s in specs:
        nbytes = int(np.prod(s.hf_shape)) * np_dtype.itemsize
        if current and size + nbytes > max_shard_bytes:
            shards.append(current)
            current, size = [], 0
        current.append(s)
        size += nbytes
    shards.append(current)

    out = epath.Path(hf_dir)
    out.mkdir(parents=True, exist_ok=True)
    by_name = {s.hf_name: s for s in specs}

    def produce(name: str) -> np.ndarray:
        s = by_name[name]
        path, layer = tree_path(s, cfg.scan_layers)
        leaf = get_path(params, path)
        value = np.asarray(leaf[stack_index(s, layer)]).astype(np.float32)
        return s.to_hf(value).astype(np_dtype)

    written, weight_map = [], {}
    for i, shard in enumerate(shards):
        name = "model.safetensors" if len(shards) == 1 else f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        write_safetensors(out / name, [(s.hf_name, s.hf_shape, np_dtype) for s in shard], produce)
        weight_map.update({s.hf_name: name for s in shard})
        written.append(name)
    if len(shards) > 1:
        total = sum(int(np.prod(s.hf_shape)) * np_dtype.itemsize for s in specs)
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
        written.append("model.safetensors.index.json")

    (out / "config.json").write_text(json.dumps(model_config_to_hf(cfg, TORCH_DTYPE_NAMES[dtype]), indent=2))
    written.append("config.json")
    written += copy_tokenizer_files(ckpt.resolve(src).tokenizer_dir, out)
    if not (out / "generation_config.json").exists():
        gen = {"bos_token_id": cfg.bos_token_id, "eos_token_id": cfg.eos_token_id, "pad_token_id": cfg.pad_token_id}
        (out / "generation_config.json").write_text(json.dumps(gen, indent=2))
        written.append("generation_config.json")
    return written
