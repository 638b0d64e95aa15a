"""LoRA adapters on a frozen base: the split of the parameter tree, the int8 base, merging, and
adapter checkpoints.

`Decoder(cfg, lora)` gives each targeted projection `lora_a` (*in, rank) and `lora_b` (rank, *out)
next to its `kernel` (layers.DenseGeneral); with `quantize_base: int8` every projection's `kernel` is
int8 with a float32 `kernel_scale` per output channel (absmax / 127). `split` separates the adapters
(trained, checkpointed) from the base (frozen). An adapter checkpoint is a model checkpoint whose
`params/` holds only adapters and whose `adapter.json` names the LoRA settings and the base
checkpoint; `load_plain_params` turns any checkpoint into the plain decoder's parameters, merging
W + (alpha / rank) A B (on the int8-rounded base when the adapters were trained on one).
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
from etils import epath
from flax import traverse_util

from mathjax_train.config import ConfigError, LoraConfig, ModelConfig, from_dict, is_remote, to_dict
from mathjax_train.model import checkpoint as ckpt

ADAPTER_KEYS = ("lora_a", "lora_b")
SCALE_KEY = "kernel_scale"
ADAPTER_FILE = "adapter.json"


def split(params) -> tuple[dict, dict]:
    """(adapters, base): the `lora_a`/`lora_b` leaves and everything else, each keeping the tree's nesting."""
    flat = traverse_util.flatten_dict(params)
    adapters = {k: v for k, v in flat.items() if k[-1] in ADAPTER_KEYS}
    base = {k: v for k, v in flat.items() if k[-1] not in ADAPTER_KEYS}
    return traverse_util.unflatten_dict(adapters), traverse_util.unflatten_dict(base)


def join(base, adapters) -> dict:
    """The one tree `split` came from."""
    flat = traverse_util.flatten_dict(base)
    flat.update(traverse_util.flatten_dict(adapters))
    return traverse_util.unflatten_dict(flat)


def _lead(path: tuple) -> int:
    """Leading axes before a module's own: 1 (the `layers` axis) for scanned layers, else 0."""
    return 1 if path[0] == "layers" else 0


def quantize_int8(kernel, lead: int, n_out: int):
    """kernel (*lead, *in, *out) -> (int8 kernel, float32 scale (*lead, *out)): symmetric absmax per
    output channel, so q * scale is within scale / 2 of the kernel everywhere."""
    k = kernel.astype(jnp.float32)
    axes = tuple(range(lead, k.ndim - n_out))
    scale = jnp.max(jnp.abs(k), axis=axes) / 127.0
    scale = jnp.where(scale > 0, scale, 1.0)
    q = jnp.clip(jnp.round(k / jnp.expand_dims(scale, axes)), -127, 127).astype(jnp.int8)
    return q, scale


def dequantize_int8(q, scale, lead: int):
    n_in = q.ndim - scale.ndim
    return q.astype(jnp.float32) * jnp.expand_dims(scale, tuple(range(lead, lead + n_in)))


def quantize_base(plain, like) -> dict:
    """The plain decoder's parameters laid out as the base tree `like` (abstract): kernels that are
    int8 there are quantized, the rest kept."""
    flat, target = traverse_util.flatten_dict(plain), traverse_util.flatten_dict(like)
    out = {}
    for path, value in flat.items():
        if target[path].dtype == jnp.int8:
            scale_path = path[:-1] + (SCALE_KEY,)
            lead = _lead(path)
            out[path], out[scale_path] = quantize_int8(value, lead, target[scale_path].ndim - lead)
        else:
            out[path] = value
    return traverse_util.unflatten_dict(out)


def merge(base, adapters, lora: LoraConfig, dtype=jnp.float32) -> dict:
    """Plain decoder parameters from a base tree (int8 or not) and its adapters: each targeted kernel
    becomes W + (alpha / rank) A B, computed in float32 and cast to `dtype`."""
    flat = traverse_util.flatten_dict(base)
    ad = traverse_util.flatten_dict(adapters)
    out = {}
    for path, value in flat.items():
        if path[-1] == SCALE_KEY:
            continue
        lead = _lead(path)
        if value.dtype == jnp.int8:
            value = dequantize_int8(value, flat[path[:-1] + (SCALE_KEY,)], lead)
        a, b = ad.get(path[:-1] + ("lora_a",)), ad.get(path[:-1] + ("lora_b",))
        if path[-1] == "kernel" and a is not None:
            lead_shape, r = a.shape[:lead], a.shape[-1]
            a2 = jnp.reshape(a.astype(jnp.float32), lead_shape + (-1, r))
            b2 = jnp.reshape(b.astype(jnp.float32), lead_shape + (r, -1))
            delta = jnp.einsum("...ir,...ro->...io", a2, b2) * lora.scaling
            value = value.astype(jnp.float32) + delta.reshape(value.shape)
        out[path] = value.astype(dtype) if path[-1] == "kernel" else value
    return traverse_util.unflatten_dict(out)


def abstract_trees(cfg: ModelConfig, lora: LoraConfig) -> tuple[dict, dict]:
    """(adapters, base) as ShapeDtypeStructs on one device: what an adapter checkpoint restores into."""
    return split(ckpt.abstract_params(cfg, lora=lora))


def save_adapter_meta(directory, base: str, lora: LoraConfig) -> None:
    """`adapter.json`: the LoRA settings and the base checkpoint (a local path is made absolute)."""
    base = base if is_remote(base) else os.path.abspath(base)
    path = epath.Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    (path / ADAPTER_FILE).write_text(json.dumps({"base": base, "lora": to_dict(lora)}, indent=2))


def load_adapter_meta(ckpt_dir) -> tuple[str, LoraConfig] | None:
    """(base checkpoint, LoraConfig) of an adapter checkpoint; None for a full one."""
    path = ckpt.resolve(ckpt_dir).config_file.parent / ADAPTER_FILE
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from None
    if not isinstance(data, dict) or not isinstance(data.get("base"), str) or not isinstance(data.get("lora"), dict):
        raise ConfigError(f'{path}: expected {{"base": CHECKPOINT, "lora": {{...}}}}')
    lora = from_dict(LoraConfig, data["lora"], f"{path}: lora")
    lora.validate(f"{path}: lora")
    if not lora.enabled:
        raise ConfigError(f"{path}: lora.rank must be > 0 in an adapter checkpoint")
    return data["base"], lora


def load_adapters(ckpt_dir, cfg: ModelConfig, lora: LoraConfig) -> dict:
    """The adapter tree of an adapter checkpoint (shapes checked against cfg and lora)."""
    adapters, _ = abstract_trees(cfg, lora)
    return ckpt.load_params(ckpt_dir, cfg, target=adapters)


def load_plain_params(ckpt_dir, cfg: ModelConfig, shardings=None) -> dict:
    """The plain decoder's parameters (cfg.param_dtype) of a full checkpoint, or of an adapter
    checkpoint merged onto its base: every inference path and export-hf loads through here. `shardings`
    (a tree like the params; default: this host's first device) is where they are read to and merged."""
    meta = load_adapter_meta(ckpt_dir)
    if meta is None:
        return ckpt.load_params(ckpt_dir, cfg, shardings)
    base_dir, lora = meta
    try:
        base = ckpt.load_params(base_dir, cfg, shardings)
    except ConfigError as e:
        raise ConfigError(f"{ckpt_dir}: its base checkpoint (adapter.json) does not load: {e}") from None
    adapters = load_adapters(ckpt_dir, cfg, lora)
    if shardings is not None:  # the small adapters go whole to every device the base is split over
        first = jax.tree_util.tree_leaves(shardings, is_leaf=lambda x: isinstance(x, jax.sharding.Sharding))[0]
        mesh = getattr(first, "mesh", None)
        if mesh is not None:
            adapters = jax.device_put(adapters, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
    _, like = abstract_trees(cfg, lora)
    merged = jax.jit(
        lambda b, a: merge(quantize_base(b, like), a, lora, jnp.dtype(cfg.param_dtype)), out_shardings=shardings
    )
    return merged(base, adapters)
