"""HF directory (config.json + safetensors + tokenizer) -> our checkpoint, streamed tensor by tensor.

The tokenizer may come from another directory (`--tokenizer`), for a weights-only directory as
`model.save_pretrained` alone writes.

Destination arrays are allocated once at the target dtype and filled as each source tensor is read,
so the host holds about one copy of the model, never two.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
from etils import epath

from mathjax_train.config import ConfigError, Dtype, ModelConfig
from mathjax_train.convert.hf_config import model_config_from_hf, read_json
from mathjax_train.convert.hf_gemma import text_tensor_name
from mathjax_train.convert.hf_params import get_path, param_specs, set_path, stack_index, tree_path
from mathjax_train.convert.safetensors_io import iter_tensors
from mathjax_train.data.vocab import TOKENIZER_FILES, load_tokenizer
from mathjax_train.model import checkpoint as ckpt
from mathjax_train.model.layers import DTYPES

# Tensors some exporters write that carry no parameters of ours.
IGNORABLE_SUFFIXES = ("rotary_emb.inv_freq",)
GENERATION_CONFIG = "generation_config.json"


@dataclass
class ImportReport:
    config: ModelConfig
    num_params: int
    files: list[str]
    skipped: list[str] = field(default_factory=list)
    tokenizer_dir: str = ""


def safetensors_files(hf_dir: epath.Path) -> list[epath.Path]:
    """The weight files of an HF directory: the sharded index if present, else model.safetensors."""
    index = hf_dir / "model.safetensors.index.json"
    if index.exists():
        weight_map = read_json(index, "safetensors index").get("weight_map")
        if not isinstance(weight_map, dict):
            raise ConfigError(f"{index}: field 'weight_map' is missing")
        return [hf_dir / name for name in sorted(set(weight_map.values()))]
    single = hf_dir / "model.safetensors"
    if single.exists():
        return [single]
    if any((hf_dir / n).exists() for n in ("pytorch_model.bin", "pytorch_model.bin.index.json")):
        raise ConfigError(
            f"{hf_dir}: only PyTorch .bin weights found; save the model with safetensors "
            "(model.save_pretrained(dir, safe_serialization=True)) and import that"
        )
    raise ConfigError(f"{hf_dir}: no model.safetensors or model.safetensors.index.json found")


def import_hf(
    hf_dir,
    ckpt_dir,
    *,
    scan_layers: bool = True,
    param_dtype: Dtype = ModelConfig.param_dtype,
    dtype: Dtype = ModelConfig.dtype,
    tokenizer_dir=None,
) -> ImportReport:
    """`tokenizer_dir`: where the tokenizer files are (default: `hf_dir`)."""
    hf = epath.Path(hf_dir)
    tok_dir = epath.Path(tokenizer_dir) if tokenizer_dir else hf
    config_path = hf / "config.json"
    generation = read_json(hf / GENERATION_CONFIG, "generation config") if (hf / GENERATION_CONFIG).exists() else None
    raw = read_json(config_path, "config.json")
    cfg = model_config_from_hf(raw, str(config_path), generation)
    rename = text_tensor_name if raw.get("model_type") == "gemma3" else None  # the multimodal model's text part
    cfg.scan_layers, cfg.param_dtype, cfg.dtype = scan_layers, param_dtype, dtype
    try:
        tokenizer = load_tokenizer(tok_dir)  # fails early, naming the directory, when no tokenizer is there
    except ConfigError as e:
        if tokenizer_dir:
            raise
        raise ConfigError(
            f"{e}; for a weights-only directory, pass the tokenizer's directory with --tokenizer DIR"
        ) from None
    if tokenizer.vocab_size > cfg.vocab_size:
        raise ConfigError(
            f"{tok_dir}: the tokenizer has {tokenizer.vocab_size} tokens, more than the model's "
            f"vocab_size ({cfg.vocab_size}, {config_path}); is it this model's tokenizer?"
        )
    files = safetensors_files(hf)

    def skip(name: str) -> bool:
        return name.endswith(IGNORABLE_SUFFIXES) or (name == "lm_head.weight" and cfg.tie_embeddings)

    tree, skipped = tensors_to_tree(param_specs(cfg), files, cfg, DTYPES[param_dtype], skip, hf, rename)

    out = epath.Path(ckpt_dir)
    ckpt.save_params(out, tree)
    ckpt.save_model_config(out, cfg)
    copy_tokenizer_files(tok_dir, out / ckpt.TOKENIZER_DIR)
    if tok_dir != hf and (hf / GENERATION_CONFIG).exists():  # the model's own, not the tokenizer directory's
        (out / ckpt.TOKENIZER_DIR / GENERATION_CONFIG).write_bytes((hf / GENERATION_CONFIG).read_bytes())
    return ImportReport(cfg, ckpt.param_count(tree), [str(f) for f in files], skipped, str(tok_dir))


def tensors_to_tree(specs, files, cfg: ModelConfig, target, skip, where, rename=None) -> tuple[dict, list[str]]:
    """Our parameter tree from the safetensors `files` holding exactly the tensors of `specs` (each
    checked for shape, duplicates and absence; `skip(name)` names tensors to pass over; `rename(name)`, if
    given, maps a file's names to the specs' ones, None to skip). Arrays are allocated once at dtype `target`
    and filled tensor by tensor. Returns (tree, skipped names)."""
    specs = {s.hf_name: s for s in specs}
    tree: dict = {}
    for s in specs.values():
        path, layer = tree_path(s, cfg.scan_layers)
        shape = s.shape if s.expert is None else (cfg.num_experts,) + s.shape
        shape = shape if layer is None else (cfg.num_layers,) + shape
        try:
            get_path(tree, path)
        except KeyError:
            set_path(tree, path, np.empty(shape, target))
    filled, skipped = set(), []
    for f in files:
        for name, arr in iter_tensors(f):
            if rename is not None:
                mapped = rename(name)
                if mapped is None:
                    skipped.append(name)
                    continue
                name = mapped
            spec = specs.get(name)
            if spec is None:
                if skip(name):
                    skipped.append(name)
                    continue
                raise ConfigError(f"{f}: unexpected tensor {name!r} for a {cfg.architecture} model with this config")
            if tuple(arr.shape) != spec.hf_shape:
                raise ConfigError(
                    f"{f}: tensor {name!r} has shape {tuple(arr.shape)}, but the config implies {spec.hf_shape}"
                )
            if name in filled:
                raise ConfigError(f"{f}: tensor {name!r} appears twice")
            path, layer = tree_path(spec, cfg.scan_layers)
            dest = get_path(tree, path)
            value = spec.to_ours(arr.astype(target))
            dest[stack_index(spec, layer)] = value
            filled.add(name)
    missing = [n for n in specs if n not in filled]
    if missing:
        raise ConfigError(
            f"{where}: tensor {missing[0]!r} is missing from the safetensors files ({len(missing)} missing in all)"
        )
    return tree, skipped


def copy_tokenizer_files(src: epath.Path, dst: epath.Path) -> list[str]:
    dst.mkdir(parents=True, exist_ok=True)
    copied = []
    for name in TOKENIZER_FILES:
        if (src / name).exists():
            (dst / name).write_bytes((src / name).read_bytes())
            copied.append(name)
    return copied


def report_json(report: ImportReport) -> str:
    return json.dumps(
        {
            "num_params": report.num_params,
            "architecture": report.config.architecture,
            "files": report.files,
            "skipped_tensors": report.skipped,
            "tokenizer": report.tokenizer_dir,
        }
    )
