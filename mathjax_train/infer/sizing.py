"""How many KV-cache pages an engine takes: the one rule that `Engine` sizes its cache by and that
`plan --sampling` reports, so the two cannot disagree.

All figures are per device: with engine.tensor = T each device holds every page for 1/T of the kv heads,
so a page costs a device 1/T of its bytes and the cache's page count is the same on all T devices.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mathjax_train.config import InputError

if TYPE_CHECKING:
    from mathjax_train.infer.placement import Placement

GIB = 2**30
DEFAULT_SLOTS = {"cpu": 128}  # engine.num_slots = 0: rows decoded together by backend
DEFAULT_SLOTS_ELSEWHERE = 256


def engine_slots(num_slots: int, backend: str) -> int:
    """engine.num_slots, or for 0 the backend's default (128 on CPU, 256 on TPU/GPU)."""
    return num_slots or DEFAULT_SLOTS.get(backend, DEFAULT_SLOTS_ELSEWHERE)


@dataclass(frozen=True)
class KvFit:
    """The cache for `slots` rows of `pages_per_seq` pages (the longest sequence) in `fraction` of `free_bytes`."""

    page_bytes: int  # one page on one device
    free_bytes: int | None  # free memory of one device (None = unknown: every wanted page is taken)
    fraction: float  # engine.kv_memory_fraction
    slots: int
    pages_per_seq: int

    @property
    def wanted(self) -> int:
        """Every slot at the longest sequence, plus the trash page."""
        return self.slots * self.pages_per_seq + 1

    @property
    def fit(self) -> int:
        """Pages within `fraction` of the free memory."""
        if self.free_bytes is None:
            return self.wanted
        return int(self.free_bytes * self.fraction // self.page_bytes)

    @property
    def fits(self) -> bool:
        """Whether one sequence of the longest length fits (the engine refuses to start otherwise)."""
        return self.fit >= self.pages_per_seq + 1

    @property
    def pages(self) -> int:
        """The pages the engine allocates (the trash page included)."""
        return max(2, min(self.wanted, self.fit))

    @property
    def cache_bytes(self) -> int:
        return self.pages * self.page_bytes

    @property
    def sequences(self) -> int:
        """Sequences of the longest length the cache holds at once (at most `slots` run together)."""
        return (self.pages - 1) // self.pages_per_seq

    def problem(self, max_seq_len: int, remedy: str) -> str | None:
        """Why the cache cannot hold one sequence of `max_seq_len` tokens (None if it can)."""
        if self.fits:
            return None
        return (
            f"the KV cache for one {max_seq_len}-token sequence needs "
            f"{(self.pages_per_seq + 1) * self.page_bytes / GIB:.2f} GiB per device but "
            f"engine.kv_memory_fraction={self.fraction} of the free {(self.free_bytes or 0) / GIB:.2f} GiB leaves less; "
            + remedy
        )


def kv_fit(page_bytes: int, free_bytes: float | None, fraction: float, slots: int, pages_per_seq: int) -> KvFit:
    """The fit of `slots` rows of `pages_per_seq` pages of `page_bytes` (per device) in `fraction` of
    `free_bytes` (per device; None = unknown)."""
    if page_bytes <= 0 or slots < 1 or pages_per_seq < 1:
        raise ValueError(f"kv_fit: page_bytes {page_bytes}, slots {slots}, pages_per_seq {pages_per_seq}")
    free = None if free_bytes is None else max(0, int(free_bytes))
    return KvFit(page_bytes, free, fraction, slots, pages_per_seq)


def engine_pages(
    page_bytes: int, placement: Placement, fraction: float, slots: int, pages_per_seq: int, max_seq_len: int
) -> int:
    """The pages an engine takes with engine.num_pages = 0: `fraction` (engine.kv_memory_fraction) of the
    least free memory among its devices, for pages of `page_bytes` split over them by kv heads."""
    fit = kv_fit(page_bytes // placement.tensor, free_memory_bytes(placement) or None, fraction, slots, pages_per_seq)
    problem = fit.problem(max_seq_len, "lower the sequence length, set engine.num_pages or raise engine.tensor")
    if problem:
        raise InputError(problem)
    return fit.pages


def free_memory_bytes(placement: Placement) -> int:
    """Free memory of one of the engine's devices: the least free HBM among them, or on CPU the host RAM
    they share (what the kernel could hand out: MemAvailable), divided among them (0 = unknown). Host RAM
    moves from run to run, and the page count it gives is a shape of every engine program, so it is rounded
    down to four significant bits (at most 1/8 less): a rerun then takes the same pages and reads its
    programs back from the compilation cache."""
    free = placement.free_memory_bytes()
    if free is not None:
        return free
    return stable_floor(available_host_bytes() // placement.tensor)


def available_host_bytes() -> int:
    """/proc/meminfo's MemAvailable (free RAM plus the page cache the kernel can reclaim), else free RAM
    (0 = unknown)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return 0


def stable_floor(n: int, bits: int = 4) -> int:
    """`n` rounded down to its `bits` highest binary digits (bits=4: 6840 -> 6656, at most 1/8 less)."""
    drop = max(0, n.bit_length() - bits)
    return (n >> drop) << drop
