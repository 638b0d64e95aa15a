"""A model checkpoint directory: `model_config.json`, Orbax `params/`, and `tokenizer/` files.

import-hf writes one. A training run writes `model_config.json` and `tokenizer/` once at
OUTPUT_DIR and `params/` in every step directory OUTPUT_DIR/checkpoints/STEP; `resolve` accepts a
model directory, OUTPUT_DIR or OUTPUT_DIR/checkpoints (the latest complete step) or a step
directory. Paths may be local or `gs://` (etils.epath).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from mathjax_train.config import ConfigError, ModelConfig, from_dict, is_remote, to_dict

CONFIG_FILE = "model_config.json"
PARAMS_DIR = "params"
TOKENIZER_DIR = "tokenizer"


CHECKPOINTS_DIR = "checkpoints"


@dataclass(frozen=True)
class CheckpointPaths:
    config_file: epath.Path
    params_dir: epath.Path
    tokenizer_dir: epath.Path
    step: int | None = None


def _latest_step_dir(steps_dir: epath.Path) -> tuple[int, epath.Path] | None:
    from orbax.checkpoint._src.path import step as ocp_step

    steps = []
    for child in steps_dir.iterdir():
        if child.name.isdigit() and (child / PARAMS_DIR).exists() and ocp_step.is_checkpoint_finalized(child):
            steps.append((int(child.name), child))
    return max(steps) if steps else None


def resolve(ckpt_dir) -> CheckpointPaths:
    """Where the config, params and tokenizer of a model or training checkpoint live."""
    d = epath.Path(ckpt_dir)
    if (d / CONFIG_FILE).exists() and (d / PARAMS_DIR).exists():
        return CheckpointPaths(d / CONFIG_FILE, d / PARAMS_DIR, d / TOKENIZER_DIR)
    root, steps_dir, step_dir = None, None, None
    if (d / CONFIG_FILE).exists() and (d / CHECKPOINTS_DIR).exists():
        root, steps_dir = d, d / CHECKPOINTS_DIR
    elif d.name == CHECKPOINTS_DIR and (d.parent / CONFIG_FILE).exists():
        root, steps_dir = d.parent, d
    elif (d / PARAMS_DIR).exists() and d.parent.name == CHECKPOINTS_DIR and (d.parent.parent / CONFIG_FILE).exists():
        root, step_dir = d.parent.parent, d
    if root is None:
        raise ConfigError(
            f"{d / CONFIG_FILE}: not found; is {ckpt_dir} a checkpoint written by import-hf or a training OUTPUT_DIR?"
        )
    step = int(step_dir.name) if step_dir is not None and step_dir.name.isdigit() else None
    if steps_dir is not None:
        latest = _latest_step_dir(steps_dir)
        if latest is None:
            raise ConfigError(f"{steps_dir}: no complete checkpoint step found")
        step, step_dir = latest
    assert step_dir is not None  # each layout above names a step directory
    return CheckpointPaths(root / CONFIG_FILE, step_dir / PARAMS_DIR, root / TOKENIZER_DIR, step)


def save_model_config(ckpt_dir, cfg: ModelConfig) -> None:
    path = epath.Path(ckpt_dir)
    path.mkdir(parents=True, exist_ok=True)
    (path / CONFIG_FILE).write_text(json.dumps(to_dict(cfg), indent=2))


def load_model_config(ckpt_dir) -> ModelConfig:
    path = resolve(ckpt_dir).config_file
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from None
    cfg = from_dict(ModelConfig, data, str(path))
    cfg.validate(str(path))
    return cfg


def absolute(path: epath.Path) -> epath.Path:
    """The path as Orbax wants it: local paths made absolute, object store URLs as they are."""
    return path if is_remote(path) else path.absolute()


def save_params(ckpt_dir, params) -> None:
    """Write params (numpy or jax arrays, possibly sharded) as an Orbax checkpoint."""
    path = epath.Path(ckpt_dir) / PARAMS_DIR
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(absolute(path), params, force=True)
        ckptr.wait_until_finished()


def boxed_params(cfg: ModelConfig, lora=None):
    """The parameter tree of `cfg` as shapes in flax LogicallyPartitioned boxes (their logical axis names),
    without memory: what the sharding rules map to shardings (parallel/rules.py: logical_shardings)."""
    import jax.numpy as jnp

    from mathjax_train.model.decoder import Decoder

    return jax.eval_shape(lambda: Decoder(cfg, lora).init(jax.random.PRNGKey(0), jnp.zeros((1, 1), jnp.int32)))[
        "params"
    ]


def abstract_params(cfg: ModelConfig, shardings=None, lora=None):
    """ShapeDtypeStructs of the parameter tree for `cfg` (no memory), with optional shardings (default: this
    host's first device); `lora` (a LoraConfig) for the tree with adapters (model/lora.py)."""
    import flax.linen as nn

    shapes = nn.meta.unbox(boxed_params(cfg, lora))
    if shardings is None:
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        return jax.tree_util.tree_map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=device), shapes)
    return jax.tree_util.tree_map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shardings)


def load_params(ckpt_dir, cfg: ModelConfig, shardings=None, target=None):
    """Restore params for `cfg` (or the abstract tree `target`); shapes are checked, naming any mismatch."""
    path = resolve(ckpt_dir).params_dir
    if not path.exists():
        raise ConfigError(f"{path}: no Orbax params found in checkpoint {ckpt_dir}")
    target = abstract_params(cfg, shardings) if target is None else target
    with ocp.StandardCheckpointer() as ckptr:
        meta = ckptr.metadata(absolute(path))
        _check_shapes(meta.item_metadata if hasattr(meta, "item_metadata") else meta, target, str(path))
        return ckptr.restore(absolute(path), target)


def _check_shapes(meta, target, where: str) -> None:
    flat_t = {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_leaves_with_path(target)}
    flat_m = {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_leaves_with_path(meta)}
    missing = sorted(set(flat_t) - set(flat_m))
    if missing:
        raise ConfigError(f"{where}: parameter {missing[0]} is missing from the checkpoint")
    for key, t in flat_t.items():
        shape = tuple(getattr(flat_m[key], "shape", ()) or ())
        if shape != tuple(t.shape):
            raise ConfigError(f"{where}: parameter {key} has shape {shape}, the model config needs {tuple(t.shape)}")


def param_count(params) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(params)))
