"""Logical-axis rules: the one table mapping the layers' logical axis names to mesh axes.

Rules are data. A config can override any row with `mesh.rules` (e.g. `mlp: [fsdp, tensor]`,
or `kv_heads: []` to replicate). Flax applies them in order, skipping a mesh axis that an
earlier dimension of the same array already uses, so `batch` (first) takes `fsdp` for
activations and `embed` falls back to unsharded there, while parameters shard `embed` on `fsdp`.
"""

from __future__ import annotations

import flax.linen as nn
import jax
from jax.sharding import NamedSharding, PartitionSpec

from mathjax_train.errors import ConfigError
from mathjax_train.parallel.mesh import MESH_AXES

LOGICAL_AXES = (
    "batch", "length", "embed", "mlp", "heads", "kv_heads", "head_dim", "vocab", "layers", "lora_rank", "expert"
)  # fmt: skip

DEFAULT_RULES: tuple[tuple[str, tuple[str, ...] | str | None], ...] = (
    ("batch", ("data", "expert", "fsdp")),  # `expert` (1 unless set) spreads tokens too, so it does work
    ("length", None),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("vocab", "tensor"),
    ("layers", None),
    ("lora_rank", None),  # LoRA adapters' inner dimension: small, kept whole
    ("expert", "expert"),  # MoE stacked expert weights (expert parallelism)
)


def axis_rules(overrides: dict[str, list[str]] | None = None):
    """DEFAULT_RULES with rows replaced by `overrides` (logical name -> list of mesh axes)."""
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(LOGICAL_AXES))
    if unknown:
        raise ConfigError(f"mesh.rules: unknown logical axis {unknown[0]!r}; valid: {', '.join(LOGICAL_AXES)}")
    out = []
    for name, target in DEFAULT_RULES:
        if name in overrides:
            axes = tuple(overrides[name])
            bad = [a for a in axes if a not in MESH_AXES]
            if bad:
                raise ConfigError(f"mesh.rules.{name}: {bad[0]!r} is not a mesh axis ({', '.join(MESH_AXES)})")
            target = axes if len(axes) > 1 else (axes[0] if axes else None)
        out.append((name, target))
    return tuple(out)


def logical_shardings(abstract_tree, mesh, rules):
    """NamedShardings for a tree of flax LogicallyPartitioned boxes (e.g. from jax.eval_shape(init))."""
    specs = nn.get_partition_spec(abstract_tree)
    return nn.logical_to_mesh_sharding(specs, mesh, rules)


def batch_sharding(mesh, rules) -> NamedSharding:
    """(batch, length) arrays: rows split over the axes the `batch` rule names."""
    spec = nn.logical_to_mesh_axes(("batch", "length"), rules)
    assert spec is not None  # flax gives None only for names=None
    return NamedSharding(mesh, spec)


def check_divisible(
    abstract_params, shardings, where: str = "model", remedy: str = "change mesh.* or override mesh.rules"
) -> None:
    """Every sharded dimension must divide evenly; name the parameter and (`remedy`) what to change."""
    flat_p = jax.tree_util.tree_leaves_with_path(abstract_params)
    flat_s = jax.tree_util.tree_leaves(shardings, is_leaf=lambda x: isinstance(x, NamedSharding))
    for (path, leaf), sh in zip(flat_p, flat_s):
        spec = sh.spec if isinstance(sh.spec, PartitionSpec) else PartitionSpec()
        for dim, axes in zip(leaf.shape, tuple(spec) + (None,) * (len(leaf.shape) - len(spec))):
            if axes is None:
                continue
            axes = (axes,) if isinstance(axes, str) else tuple(axes)
            n = 1
            for a in axes:
                n *= sh.mesh.shape[a]
            if dim % n:
                raise ConfigError(
                    f"{where}: parameter {jax.tree_util.keystr(path)} has a dimension of {dim}, which the "
                    f"mesh axes {axes} (size {n}) cannot split evenly; {remedy}"
                )
