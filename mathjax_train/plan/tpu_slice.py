"""The chips of a TPU slice as libtpu describes them, so that XLA:TPU compiles a slice's programs on any host.

libtpu (the `[tpu]` extra) carries the TPU compiler; given a topology ("v5p:2x2x4") it returns abstract devices
that a mesh can be built on and programs compiled for, with no TPU attached. Nothing runs on them.
"""

from __future__ import annotations

import functools
import importlib.util

from mathjax_train.parallel.topology import Topology


def libtpu_available() -> bool:
    """Whether the TPU compiler is installed (pip install 'mathjax-train[tpu]')."""
    return importlib.util.find_spec("libtpu") is not None


@functools.cache
def _devices(topology_name: str, chip_config_name: str, chips_per_host_bounds: tuple[int, ...]) -> tuple:
    from jax.experimental import topologies

    desc = topologies.get_topology_desc(
        topology_name=topology_name,
        platform="tpu",
        chip_config_name=chip_config_name,
        chips_per_host_bounds=chips_per_host_bounds,
    )
    return tuple(desc.devices)


def slice_devices(topo: Topology) -> list:
    """Every chip of the slice (one JAX device per chip), in libtpu's order, host by host."""
    devices = list(_devices(**topo.physical()))
    if len(devices) != topo.chips:
        raise RuntimeError(f"libtpu describes {topo.physical()} with {len(devices)} devices, not {topo.chips} chips")
    return devices


def host_devices(topo: Topology) -> list:
    """The chips of the slice's first host: where one sampling engine runs (infer/placement.py)."""
    devices = slice_devices(topo)
    first = min(d.process_index for d in devices)
    return [d for d in devices if d.process_index == first]
