"""Where one engine's arrays live: this host's first device, or with `engine.tensor` = T > 1 a mesh
(data=1, fsdp=1, tensor=T) over this host's first T devices, the parameters split by the training rules
(parallel/rules.py) and the paged KV cache by kv heads.

An engine is one replica on one host: it only ever uses `jax.local_devices()`, so on a pod each host runs
its own engine over its shard of the work (parallel/host_shard.py) and no engine call crosses hosts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax
from jax.sharding import AbstractMesh, AxisType, Mesh, NamedSharding, PartitionSpec, Sharding, SingleDeviceSharding

from mathjax_train.config import ConfigError, MeshConfig, ModelConfig
from mathjax_train.model.checkpoint import boxed_params
from mathjax_train.parallel.mesh import MESH_AXES, make_mesh
from mathjax_train.parallel.rules import axis_rules, check_divisible, logical_shardings

# where the kv-head axis sits in each cache array: pages {"k", "v"} (layers, kv_heads, pages, page_size, head_dim),
# the pallas pool (layers, pages, page_size, 2 * kv_heads, head_dim) whose (K, V) pairs stay together when its
# combined-head axis is cut into T contiguous blocks, and side buffers (layers, kv_heads, batch, length, head_dim)
KV_HEAD_AXIS = {"k": 1, "v": 1, "pool": 3}


def tensor_problem(cfg: ModelConfig, tensor: int) -> str | None:
    """Why the model cannot be split `tensor` ways by the default rules (None if it can): the kv heads (the
    cache is split by them), the heads, then any other parameter dimension the rules split."""
    if tensor == 1:
        return None
    for what, n in (("kv heads", cfg.num_kv_heads), ("attention heads", cfg.num_heads)):
        if n % tensor:
            return f"engine.tensor={tensor} does not divide the model's {n} {what}"
    mesh = AbstractMesh((1, 1, 1, tensor), MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))
    boxed = boxed_params(cfg)
    try:
        check_divisible(
            nn.meta.unbox(boxed), logical_shardings(boxed, mesh, axis_rules()), "engine", "choose another engine.tensor"
        )
    except ConfigError as e:
        return f"engine.tensor={tensor}: {e}"
    return None


def resolve_tensor(requested: int, cfg: ModelConfig, local_devices: int) -> int:
    """engine.tensor checked against the model and this host's device count; -1 = the most local devices the
    model splits over (the largest count up to `local_devices` that `tensor_problem` accepts)."""
    if requested == -1:
        return next(t for t in range(local_devices, 0, -1) if tensor_problem(cfg, t) is None)
    if requested > local_devices:
        raise ConfigError(
            f"engine.tensor={requested}: this host has {local_devices} device(s); one engine spans the devices of "
            "one host (a pod runs an engine per host)"
        )
    problem = tensor_problem(cfg, requested)
    if problem:
        raise ConfigError(problem)
    return requested


@dataclass(frozen=True)
class Placement:
    """One engine's devices. `mesh` is None for one device (the programs then carry no sharding at all)."""

    devices: tuple[Any, ...]
    mesh: Mesh | None
    rules: tuple

    @property
    def tensor(self) -> int:
        return len(self.devices)

    def _named(self, spec: PartitionSpec) -> Sharding:
        return SingleDeviceSharding(self.devices[0]) if self.mesh is None else NamedSharding(self.mesh, spec)

    def replicated(self) -> Sharding:
        return self._named(PartitionSpec())

    def param_shardings(self, cfg: ModelConfig):
        """The parameter tree's shardings: the logical rules on this mesh (scanned or unscanned layers alike)."""
        if self.mesh is None:
            return jax.tree_util.tree_map(lambda _: self.replicated(), nn.meta.unbox(boxed_params(cfg)))
        return logical_shardings(boxed_params(cfg), self.mesh, self.rules)

    def kv_sharding(self, name: str, ndim: int = 5) -> Sharding:
        """A cache array (`name` of KV_HEAD_AXIS; side buffers are laid out like "k") split on its kv-head axis."""
        spec = nn.logical_to_mesh_axes(("kv_heads",), self.rules)
        assert spec is not None  # flax gives None only for names=None
        axes = [None] * ndim
        axes[KV_HEAD_AXIS[name]] = spec[0]
        return self._named(PartitionSpec(*axes))

    def cache_shardings(self, cache: dict) -> dict:
        return {name: self.kv_sharding(name, x.ndim) for name, x in cache.items()}

    def place_params(self, params, cfg: ModelConfig):
        """`params` on these devices, split by the rules; arrays already placed so are not copied."""
        shardings = self.param_shardings(cfg)
        if is_placed(params, shardings):
            return params
        return jax.device_put(params, shardings)

    def free_memory_bytes(self) -> int | None:
        """The least free memory among the devices (None where devices do not report it, e.g. on CPU)."""
        free = []
        for dev in self.devices:
            stats = dev.memory_stats() if dev.platform != "cpu" else None
            if not stats or "bytes_limit" not in stats:
                return None
            free.append(int(stats["bytes_limit"] - stats.get("bytes_in_use", 0)))
        return min(free)


def is_placed(params, shardings) -> bool:
    """Whether every leaf of `params` (arrays, or abstract ShapeDtypeStructs with shardings) is already laid out
    as `shardings` says."""
    leaves = jax.tree_util.tree_leaves(params)
    targets = jax.tree_util.tree_leaves(shardings, is_leaf=lambda x: isinstance(x, Sharding))
    return len(leaves) == len(targets) and all(
        isinstance(getattr(x, "sharding", None), Sharding) and x.sharding.is_equivalent_to(s, x.ndim)
        for x, s in zip(leaves, targets)
    )


def engine_placement(tensor: int, cfg: ModelConfig) -> Placement:
    """engine.tensor resolved (see resolve_tensor) to this host's first T devices and, for T > 1, their mesh."""
    local = jax.local_devices()
    t = resolve_tensor(tensor, cfg, len(local))
    devices = tuple(local[:t])
    mesh = None if t == 1 else make_mesh(MeshConfig(data=1, fsdp=1, tensor=t), devices=list(devices))
    return Placement(devices, mesh, axis_rules())
