"""Cloud TPU slice shapes: chips, hosts, HBM and peak FLOP/s by accelerator type (`v5p-32`, ...).

v4 and v5p names count TensorCores (two per chip, one JAX device per chip), v5e and v6e names
count chips. Multi-host slices have 4 chips per host; single-host v5e/v6e slices hold up to 8.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mathjax_train.config import ConfigError

GIB = 2**30


@dataclass(frozen=True)
class Family:
    name: str
    hbm_gib: float  # per chip
    peak_tflops: float  # dense bf16, per chip
    cores_per_chip: int  # how many of the name's count make one chip
    max_single_host_chips: int
    device_kinds: tuple[str, ...]  # jax Device.device_kind values


FAMILIES = {
    "v4": Family("v4", 32.0, 275.0, 2, 4, ("TPU v4",)),
    "v5e": Family("v5e", 16.0, 197.0, 1, 8, ("TPU v5 lite", "TPU v5e")),
    "v5p": Family("v5p", 95.0, 459.0, 2, 4, ("TPU v5", "TPU v5p")),
    "v6e": Family("v6e", 32.0, 918.0, 1, 8, ("TPU v6 lite", "TPU v6e")),
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


def matches_device_kind(topology: Topology, device_kind: str) -> bool:
    kind = device_kind.lower()
    other = [k for f in FAMILIES.values() if f is not topology.family for k in f.device_kinds]
    # "TPU v5" is a prefix of "TPU v5 lite": the longest matching kind decides the family
    best = max(
        (k for k in topology.family.device_kinds + tuple(other) if kind.startswith(k.lower())), key=len, default=None
    )
    return best in topology.family.device_kinds
