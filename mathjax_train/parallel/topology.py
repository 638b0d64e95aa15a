"""Cloud TPU slice shapes: chips, hosts, HBM, its bandwidth and peak FLOP/s by accelerator type (`v5p-32`, ...),
and the physical topology (`v5p:2x2x4`) that libtpu's ahead-of-time compiler is given for a slice.

v4 and v5p names count TensorCores (two per chip, one JAX device per chip: "megacore"), v5e and v6e names
count chips. Multi-host slices have 4 chips per host; single-host v5e/v6e slices hold up to 8.
Figures are Cloud TPU's published per-chip specifications.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mathjax_train.errors import ConfigError

GIB = 2**30


@dataclass(frozen=True)
class Family:
    name: str
    hbm_gib: float  # per chip
    peak_tflops: float  # dense bf16, per chip
    cores_per_chip: int  # how many of the name's count make one chip
    max_single_host_chips: int
    device_kinds: tuple[str, ...]  # jax Device.device_kind values, the first as libtpu names it
    hbm_gbps: float  # HBM bandwidth per chip, GB/s
    torus_dims: int  # 3 for v4/v5p slices (AxBxC), 2 for v5e/v6e (AxB)


FAMILIES = {
    "v4": Family("v4", 32.0, 275.0, 2, 4, ("TPU v4",), 1200.0, 3),
    "v5e": Family("v5e", 16.0, 197.0, 1, 8, ("TPU v5 lite", "TPU v5e"), 819.0, 2),
    "v5p": Family("v5p", 95.0, 459.0, 2, 4, ("TPU v5", "TPU v5p"), 2765.0, 3),
    "v6e": Family("v6e", 32.0, 918.0, 1, 8, ("TPU v6 lite", "TPU v6e"), 1638.0, 2),
}
ALIASES = {"v5litepod": "v5e", "v5lite": "v5e", "v6lite": "v6e"}
CHIPS_PER_HOST = 4


@dataclass(frozen=True)
class Topology:
    name: str
    family: Family
    chips: int
    hosts: int

    @property
    def hbm_bytes(self) -> float:
        return self.family.hbm_gib * GIB

    @property
    def peak_flops(self) -> float:
        return self.family.peak_tflops * 1e12

    @property
    def hbm_bytes_per_second(self) -> float:
        return self.family.hbm_gbps * 1e9

    @property
    def device_kind(self) -> str:
        """jax.Device.device_kind of this family's chips, as libtpu reports it."""
        return self.family.device_kinds[0]

    def physical(self) -> dict:
        """libtpu's description of the slice (jax.experimental.topologies.get_topology_desc keyword arguments):
        the chip grid ("v5p:2x2x4"), one JAX device per chip, and the chips each host holds."""
        grid = chip_grid(self.chips, self.family.torus_dims)
        per_host = (2, 2, 1) if self.hosts > 1 else (*grid, 1)[:3]
        return {
            "topology_name": f"{self.family.name}:{'x'.join(map(str, grid))}",
            "chip_config_name": "megacore" if self.family.cores_per_chip > 1 else "default",
            "chips_per_host_bounds": per_host,
        }

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "family": self.family.name,
            "chips": self.chips,
            "hosts": self.hosts,
            "hbm_gib_per_chip": self.family.hbm_gib,
            "peak_tflops_per_chip": self.family.peak_tflops,
        }


def parse_topology(name: str) -> Topology:
    """`v4-32`, `v5e-64` (or `v5litepod-64`), `v5p-32`, `v6e-16` -> chips, hosts, HBM, peak."""
    m = re.fullmatch(r"(v\d+[a-z]*)-(\d+)", name.strip().lower())
    fam_name = ALIASES.get(m.group(1), m.group(1)) if m else None
    if not m or fam_name not in FAMILIES:
        raise ConfigError(
            f"topology {name!r}: expected FAMILY-COUNT with FAMILY one of "
            f"{', '.join(FAMILIES)} (or v5litepod), e.g. v5p-32"
        )
    fam, count = FAMILIES[fam_name], int(m.group(2))
    if count < fam.cores_per_chip or count % fam.cores_per_chip or count & (count - 1):
        raise ConfigError(
            f"topology {name!r}: {fam.name} slices come in powers of two"
            + (f" of at least {fam.cores_per_chip} TensorCores" if fam.cores_per_chip > 1 else "")
        )
    chips = count // fam.cores_per_chip
    hosts = 1 if chips <= fam.max_single_host_chips else chips // CHIPS_PER_HOST
    return Topology(f"{fam.name}-{count}", fam, chips, hosts)


def chip_grid(chips: int, dims: int) -> tuple[int, ...]:
    """The torus shape Cloud TPU gives a slice of `chips` (a power of two): from the smallest (2x2x1 for 3D,
    1x1 for 2D), each doubling goes to the last of the shortest sides (v5p-32 = 16 chips: 2x2x4; v5e-64: 8x8)."""
    grid = [2, 2, 1] if dims == 3 and chips >= 4 else [1] * dims
    while grid[0] * grid[1] * (grid[2] if dims == 3 else 1) < chips:
        shortest = min(grid)
        i = max(j for j, g in enumerate(grid) if g == shortest)
        grid[i] *= 2
    return tuple(grid)


def matches_device_kind(topology: Topology, device_kind: str) -> bool:
    kind = device_kind.lower()
    other = [k for f in FAMILIES.values() if f is not topology.family for k in f.device_kinds]
    # "TPU v5" is a prefix of "TPU v5 lite": the longest matching kind decides the family
    best = max(
        (k for k in topology.family.device_kinds + tuple(other) if kind.startswith(k.lower())), key=len, default=None
    )
    return best in topology.family.device_kinds
