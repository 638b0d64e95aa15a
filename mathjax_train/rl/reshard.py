"""The learner's parameters handed to the sampler in device memory, resharded to the engine's layout.

The learner shards the policy by the run's mesh over every device of every host; each host's engine holds
its replica on that host's first T devices (rl.engine.tensor), split by the default rules over (1, 1, T)
and replicated across hosts. One jitted identity moves the learner's arrays to the *sampler layout*, a
mesh over all devices shaped (D / T, 1, T) whose rows are T devices of one host: XLA's collectives do the
resharding on the devices, no host round trip. Each host's engine then reads the shards on its own first
row, which are the engine's arrays without a further copy. Peak per device while the copy is alive: the
learner's state plus the parameters / T (every row holds a replica; rows other than the engines' are
dropped as soon as the engine's arrays are taken). When the learner's layout already is the engine's (one
device), the engine reads the learner's arrays themselves and nothing is copied.
"""

from __future__ import annotations

import time

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, Sharding, SingleDeviceSharding

from mathjax_train.config import ConfigError, ModelConfig
from mathjax_train.infer.placement import Placement, is_placed
from mathjax_train.model.checkpoint import boxed_params
from mathjax_train.parallel.mesh import MESH_AXES, host_groups
from mathjax_train.parallel.rules import logical_shardings


def sampler_mesh(tensor: int, devices) -> Mesh:
    """All `devices` as (replicas, 1, 1, tensor) over MESH_AXES: each host's devices in their order, cut into rows of `tensor`."""
    rows = []
    for host, devs in enumerate(host_groups(devices)):
        if len(devs) % tensor:
            raise ConfigError(
                f"rl.engine.tensor={tensor} does not divide host {host}'s {len(devs)} devices (each host's devices "
                "are cut into engine-sized groups)"
            )
        rows += [devs[i : i + tensor] for i in range(0, len(devs), tensor)]
    grid = np.empty((len(rows), 1, 1, tensor), dtype=object)
    for i, row in enumerate(rows):
        grid[i, 0, 0, :] = row
    return Mesh(grid, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def sampler_shardings(model_cfg: ModelConfig, mesh: Mesh, rules):
    """The parameter tree's shardings in the sampler layout: split over `tensor` as the engine splits them,
    replicated over the rows."""
    return logical_shardings(boxed_params(model_cfg), mesh, rules)


def in_device_order(sharding: NamedSharding, devices) -> NamedSharding:
    """`sharding`'s placement (each device's shard) over a mesh whose devices are listed in the order of `devices`,
    the same devices: one jitted program takes its arguments and results over one device order, and the sampler
    layout lists each host's devices together where the learner's mesh (parallel/mesh.py, by the chips' links)
    need not."""
    own = tuple(sharding.mesh.devices.flat)
    devices = tuple(devices)
    if own == devices:
        return sharding
    index = {d: i for i, d in enumerate(devices)}
    grid = np.empty(len(devices), dtype=object)
    grid[:] = devices
    mesh = Mesh(
        grid.reshape(sharding.mesh.devices.shape), sharding.mesh.axis_names, axis_types=sharding.mesh.axis_types
    )
    # mesh position k is device devices[ids[k]] = own[k]: the placement is unchanged (JAX's own device_put across
    # device orders does the same)
    return NamedSharding(mesh, sharding.spec, _logical_device_ids=tuple(index[d] for d in own))


def reshard_program(learner_shardings, target_shardings):
    """params (learner layout) -> params (sampler layout): the jitted identity XLA lowers to collectives, the
    targets expressed over the learner mesh's device order (`in_device_order`). Compiled ahead of time by
    `plan --rl`."""
    first = jax.tree_util.tree_leaves(learner_shardings, is_leaf=lambda x: isinstance(x, Sharding))[0]
    order = tuple(first.mesh.devices.flat)
    targets = jax.tree_util.tree_map(
        lambda s: in_device_order(s, order), target_shardings, is_leaf=lambda x: isinstance(x, Sharding)
    )
    return jax.jit(lambda p: p, in_shardings=(learner_shardings,), out_shardings=targets)


class Resharder:
    """Hands the learner's parameters to this host's engine (see the module docstring)."""

    def __init__(self, model_cfg: ModelConfig, learner_shardings, placement: Placement, devices):
        self.model_cfg, self.placement = model_cfg, placement
        self.local = placement.param_shardings(model_cfg)
        self.mesh = sampler_mesh(placement.tensor, devices)
        if tuple(placement.devices) not in [tuple(row) for row in self.mesh.devices[:, 0, 0, :]]:
            raise ConfigError(f"rl: the engine's devices {placement.devices} are not one row of the sampler layout")
        self.copy = reshard_program(learner_shardings, sampler_shardings(model_cfg, self.mesh, placement.rules))
        self.last_seconds = 0.0  # what the latest hand-over took (0 when the engine reads the learner's arrays)

    def __call__(self, params):
        """The engine's parameters for `params`: the same arrays when they already lie as the engine needs them."""
        if is_placed(params, self.local):
            self.last_seconds = 0.0
            return params
        t = time.perf_counter()
        full = self.copy(params)
        out = jax.tree_util.tree_map(self._take, full, self.local, is_leaf=lambda x: isinstance(x, jax.Array))
        del full  # the other rows' copies go now; the engine's shards live on in `out`
        jax.block_until_ready(out)
        self.last_seconds = time.perf_counter() - t
        return out

    def _take(self, x: jax.Array, sharding: Sharding) -> jax.Array:
        """This host's engine row of `x`, as an array on the engine's devices (the shards themselves, not copies)."""
        devices = set(self.placement.devices)
        if isinstance(sharding, SingleDeviceSharding):
            (shard,) = [s for s in x.addressable_shards if s.device in devices]
            return shard.data
        assert isinstance(sharding, NamedSharding)
        shards = [s.data for s in x.addressable_shards if s.device in devices]
        return jax.make_array_from_single_device_arrays(x.shape, sharding, shards)
