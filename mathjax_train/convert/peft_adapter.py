"""Our LoRA adapter checkpoints <-> PEFT's adapter directory (adapter_model.safetensors +
adapter_config.json), which `peft.PeftModel.from_pretrained(base_hf_model, dir)` loads as is.

PEFT stores a projection's adapter as `base_model.model.<HF module>.lora_A.weight` (rank, in) and
`...lora_B.weight` (out, rank) and adds (lora_alpha / r) B A x; ours are `lora_a` (*in, rank) and
`lora_b` (rank, *out) next to the kernel, so conversion is the same transpose and reshape as for
the HF weights (hf_params.linear_spec).
"""

from __future__ import annotations

import json

import numpy as np
from etils import epath

from mathjax_train.config import ConfigError, LoraConfig
from mathjax_train.convert.hf_config import read_json
from mathjax_train.convert.hf_params import ParamSpec, get_path, linear_spec, param_specs, tree_path
from mathjax_train.convert.import_hf import copy_tokenizer_files, tensors_to_tree
from mathjax_train.convert.safetensors_io import write_safetensors
from mathjax_train.model import checkpoint as ckpt
from mathjax_train.model import lora as lora_params
from mathjax_train.model.layers import DTYPES

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
PEFT_PREFIX = "base_model.model."
# adapter_config.json fields with the only values we support (PEFT's defaults)
PLAIN_LORA = {
    "bias": "none",
    "fan_in_fan_out": False,
    "use_rslora": False,
    "use_dora": False,
    "modules_to_save": None,
    "layers_to_transform": None,
    "layers_pattern": None,
}


def adapter_specs(cfg, lora: LoraConfig) -> list[ParamSpec]:
    """PEFT's tensors for `lora` on a model `cfg`: lora_A and lora_B of every targeted projection."""
    specs = []
    for s in param_specs(cfg):
        if s.layer is None or s.path[-1] != "kernel" or s.path[-2] not in lora.targets:
            continue
        n_in = next(i for i in range(1, len(s.shape)) if int(np.prod(s.shape[:i])) == s.hf_shape[1])
        in_shape, out_shape = s.shape[:n_in], s.shape[n_in:]
        name = PEFT_PREFIX + s.hf_name[: -len(".weight")]
        module = s.path[:-1]
        specs.append(linear_spec(name + ".lora_A.weight", module + ("lora_a",), s.layer, in_shape, (lora.rank,)))
        specs.append(linear_spec(name + ".lora_B.weight", module + ("lora_b",), s.layer, (lora.rank,), out_shape))
    return specs


def peft_config(lora: LoraConfig, base: str) -> dict:
    return {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": lora.rank,
        "lora_alpha": lora.alpha,
        "lora_dropout": lora.dropout,
        "target_modules": sorted(lora.targets),
        "base_model_name_or_path": base,
        "init_lora_weights": True,
        "inference_mode": True,
        **PLAIN_LORA,
    }


def export_adapter(ckpt_dir, out_dir, *, dtype: str | None = None) -> list[str]:
    """Write the PEFT directory of an adapter checkpoint; `dtype` defaults to the adapters' own."""
    meta = lora_params.load_adapter_meta(ckpt_dir)
    if meta is None:
        raise ConfigError(
            f"{ckpt_dir}: not an adapter checkpoint (no {lora_params.ADAPTER_FILE}); "
            "export-hf without --adapter writes the full model"
        )
    base, lora = meta
    cfg = ckpt.load_model_config(ckpt_dir)
    np_dtype = np.dtype(DTYPES[dtype or lora.param_dtype])
    adapters = lora_params.load_adapters(ckpt_dir, cfg, lora)
    specs = {s.hf_name: s for s in adapter_specs(cfg, lora)}

    def produce(name: str) -> np.ndarray:
        s = specs[name]
        path, layer = tree_path(s, cfg.scan_layers)
        leaf = np.asarray(get_path(adapters, path)).astype(np.float32)
        return s.to_hf(leaf[layer] if layer is not None else leaf).astype(np_dtype)

    out = epath.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_safetensors(out / ADAPTER_WEIGHTS, [(s.hf_name, s.hf_shape, np_dtype) for s in specs.values()], produce)
    (out / ADAPTER_CONFIG).write_text(json.dumps(peft_config(lora, base), indent=2))
    return [ADAPTER_WEIGHTS, ADAPTER_CONFIG]


def lora_from_peft(data: dict, where: str) -> LoraConfig:
    """Our LoraConfig from adapter_config.json, refusing the PEFT options we do not implement."""
    if data.get("peft_type") != "LORA":
        raise ConfigError(f"{where}: peft_type is {data.get('peft_type')!r}; only LORA adapters can be imported")
    for key, value in PLAIN_LORA.items():
        if data.get(key, value) not in (value, [] if value is None else value):
            raise ConfigError(f"{where}: {key}={data[key]!r} is not supported (only {value!r})")
    for key in ("rank_pattern", "alpha_pattern"):
        if data.get(key):
            raise ConfigError(f"{where}: {key} (per-module ranks) is not supported")
    targets = data.get("target_modules")
    if not isinstance(targets, list):
        raise ConfigError(f"{where}: target_modules must be a list of module names, got {targets!r}")
    for key in ("r", "lora_alpha"):
        if not isinstance(data.get(key), (int, float)) or isinstance(data.get(key), bool):
            raise ConfigError(f"{where}: field {key!r} must be a number, got {data.get(key)!r}")
    lora = LoraConfig(
        rank=int(data["r"]),
        alpha=float(data["lora_alpha"]),
        dropout=float(data.get("lora_dropout", 0.0)),
        targets=sorted(targets),
    )
    lora.validate(where)
    if not lora.enabled:
        raise ConfigError(f"{where}: r must be >= 1, got {lora.rank}")
    return lora


def import_adapter(peft_dir, ckpt_dir, base_ckpt) -> dict:
    """A PEFT LoRA directory on the base checkpoint `base_ckpt` (ours, e.g. from import-hf) -> our
    adapter checkpoint at `ckpt_dir`, loadable by generate/evaluate/serve/rft and export-hf."""
    src = epath.Path(peft_dir)
    lora = lora_from_peft(read_json(src / ADAPTER_CONFIG, "PEFT adapter config"), str(src / ADAPTER_CONFIG))
    cfg = ckpt.load_model_config(base_ckpt)
    weights = src / ADAPTER_WEIGHTS
    if not weights.exists():
        raise ConfigError(
            f"{src}: no {ADAPTER_WEIGHTS} found (PEFT's .bin format is not read; save with safe_serialization=True)"
        )
    tree, _ = tensors_to_tree(
        adapter_specs(cfg, lora), [weights], cfg, DTYPES[lora.param_dtype], lambda name: False, weights
    )
    out = epath.Path(ckpt_dir)
    ckpt.save_params(out, tree)
    ckpt.save_model_config(out, cfg)
    lora_params.save_adapter_meta(out, str(base_ckpt), lora)
    copy_tokenizer_files(ckpt.resolve(base_ckpt).tokenizer_dir, out / ckpt.TOKENIZER_DIR)
    return {
        "adapter_parameters": ckpt.param_count(tree),
        "rank": lora.rank,
        "alpha": lora.alpha,
        "targets": lora.targets,
        "base": str(base_ckpt),
    }
