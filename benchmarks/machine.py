"""The machine a benchmark ran on, printed with its figures: the CPU's model, the vector instruction sets that
decide which kernels run (XLA:CPU, oneDNN/MKL and our C++ kernel pick by them), and the cores."""

from __future__ import annotations

import os
import platform

# the instruction sets that change which matmul and attention code runs
ISA = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16", "amx_fp16")


def _cpuinfo() -> dict[str, str]:
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


def cpu_model() -> str:
    return _cpuinfo().get("model name") or platform.processor() or "unknown"


def cpu_description() -> dict:
    """{"cpu": model name, "isa": the ISA flags it has, "cores": usable cores}."""
    info = _cpuinfo()
    flags = set(info.get("flags", "").split())
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": cpu_model(), "isa": [f for f in ISA if f in flags], "cores": cores}
