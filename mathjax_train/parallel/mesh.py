"""The device mesh with axes (data, expert, fsdp, tensor) built from `mesh.*` in the config."""

from __future__ import annotations

import math

import jax
import numpy as np
from jax.sharding import AxisType, Mesh

from mathjax_train.config import ConfigError, MeshConfig

MESH_AXES = ("data", "expert", "fsdp", "tensor")  # `expert` (size 1 unless set) splits MoE experts


def resolve_shape(cfg: MeshConfig, num_devices: int) -> tuple[int, ...]:
    """Mesh axis sizes in MESH_AXES order with at most one -1 filled by the remaining devices; errors say why not."""
    sizes = [cfg.data, cfg.expert, cfg.fsdp, cfg.tensor]
    for name, s in zip(MESH_AXES, sizes):
        if s == 0 or s < -1:
            raise ConfigError(f"mesh.{name}: {s} is not a valid size (a positive integer, or -1 to fill)")
    fill = [i for i, s in enumerate(sizes) if s == -1]
    if len(fill) > 1:
        raise ConfigError(f"mesh: only one axis may be -1, got {', '.join(MESH_AXES[i] for i in fill)}")
    known = math.prod(s for s in sizes if s != -1)
    if fill:
        if num_devices % known:
            raise ConfigError(
                f"mesh: {num_devices} devices cannot be split as "
                + ", ".join(f"{a}={s}" for a, s in zip(MESH_AXES, sizes))
                + f" ({num_devices} is not a multiple of {known})"
            )
        sizes[fill[0]] = num_devices // known
    if math.prod(sizes) != num_devices:
        raise ConfigError(
            "mesh: " + " x ".join(f"{a}={s}" for a, s in zip(MESH_AXES, sizes)) + f" = {math.prod(sizes)} "
            f"devices, but {num_devices} are available"
        )
    return tuple(sizes)


def host_groups(devices) -> list[list]:
    """`devices` by host (Device.process_index, which libtpu's description of a slice sets too: 4 chips a host on
    v4 and v5p), hosts in order, each host's devices in their order."""
    by_host: dict[int, list] = {}
    for d in devices:
        by_host.setdefault(d.process_index, []).append(d)
    return [by_host[h] for h in sorted(by_host)]


def make_mesh(cfg: MeshConfig, devices=None) -> Mesh:
    """A mesh over `devices` (default: all, across hosts), tensor axis innermost (fastest links)."""
    devices = list(devices if devices is not None else jax.devices())
    shape = resolve_shape(cfg, len(devices))
    try:
        from jax.experimental import mesh_utils

        grid = mesh_utils.create_device_mesh(shape, devices=devices, allow_split_physical_axes=True)
    except (ValueError, NotImplementedError, AssertionError):
        grid = np.asarray(devices).reshape(shape)
    return Mesh(grid, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))
