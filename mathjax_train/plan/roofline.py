"""A roofline bound on each program's time per chip: its FLOPs at the chip's peak or its HBM bytes at the chip's
bandwidth, whichever takes longer. It is a bound, not a measurement: a program runs at best this fast.

XLA's cost analysis counts a loop body once, so a scanned stack of L layers reads as one layer and a scan over
micro-batches as one micro-batch. The costs therefore come from probes with every loop written out: the same
program at 1 and 2 layers (layers unrolled) and, with micro-batches, at 1 and 2 of them (the micro-batch loop
unrolled). A program is affine in both, so

    cost(L, M) = M (E + L F) + U + L O

(E: the per-micro-batch work outside the layers, F: a layer's forward and backward, U and O: the update of the
other and of a layer's parameters) is solved from the four probes and evaluated at the recipe's L and M.

XLA's count can still fall short of the work: Pallas kernels count as the cost their authors declare (JAX's
splash and ragged paged attention declare none), and XLA:TPU leaves out matmuls it fuses with FSDP's
all-gathers and reduce-scatters (a 7B layer on 16 chips reads 3.7 of its 5.0 TFLOP per chip). So the FLOPs of the
bound are the larger of XLA's count and the model's own (6N + attention a trained token, a third of it a forward
token: train/flops.py), both shown.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from mathjax_train.parallel.topology import Topology
from mathjax_train.plan.compiled import ProgramFigures, compile_figures
from mathjax_train.train.flops import train_flops_per_token


def _cost(f: ProgramFigures) -> tuple[float, float]:
    return f.flops, f.bytes_accessed


def by_depth(build: Callable[[int], object], depth: int, name: str) -> dict:
    """FLOPs and bytes of a program with `depth` layers from probes at 1 and 2 layers (`build(n)` lowers it at n
    layers, unrolled)."""
    one, two = (compile_figures(f"{name} probe {n}", build(n)) for n in (1, 2))
    (f1, b1), (f2, b2) = _cost(one), _cost(two)
    return {
        "flops": f1 + (depth - 1) * (f2 - f1),
        "bytes": b1 + (depth - 1) * (b2 - b1),
        "probe_seconds": one.seconds + two.seconds,
    }


def by_depth_and_microbatches(build: Callable[[int, int], object], depth: int, micro: int, name: str) -> dict:
    """As `by_depth`, with `micro` micro-batches: `build(n, m)` lowers n layers and m micro-batches, unrolled."""
    if micro == 1:
        return by_depth(lambda n: build(n, 1), depth, name)
    probes = {(n, m): compile_figures(f"{name} probe {n}x{m}", build(n, m)) for n in (1, 2) for m in (1, 2)}
    out = {"probe_seconds": sum(p.seconds for p in probes.values())}
    for key, index in (("flops", 0), ("bytes", 1)):
        c = {k: _cost(p)[index] for k, p in probes.items()}
        f = c[2, 2] - c[1, 2] - (c[2, 1] - c[1, 1])  # a layer's per-micro-batch work F
        o = c[2, 1] - c[1, 1] - f  # a layer's update O
        e = c[1, 2] - c[1, 1] - f  # per micro-batch outside the layers E
        u = c[1, 1] - e - f - o  # the rest of the update U
        out[key] = micro * (e + depth * f) + u + depth * o
    return out


def bound(xla_flops: float, nbytes: float, topo: Topology, model_flops: float = 0.0) -> dict:
    """Seconds per chip at peak FLOP/s (the larger of XLA's and the model's FLOPs) and at HBM bandwidth, and the
    larger of the two."""
    flops = max(xla_flops, model_flops)
    compute, memory = flops / topo.peak_flops, nbytes / topo.hbm_bytes_per_second
    return {
        "flops": flops,
        "xla_flops": xla_flops,
        "model_flops": model_flops,
        "bytes": nbytes,
        "compute_seconds": compute,
        "memory_seconds": memory,
        "seconds": max(compute, memory),
        "limited_by": "compute" if compute >= memory else "memory",
    }


def model_flops(program: str, model, tokens: float, context: int) -> float:
    """The model's FLOPs for `tokens` tokens of `program` with `context` tokens of attention: a train step or an
    update trains them (6N + attention), the others run them forward (a third of that)."""
    per_token = train_flops_per_token(model, context)
    return tokens * (per_token if program in ("train_step", "update") else per_token / 3)


def unrolled(model_cfg, layers: int):
    """The model at `layers` layers, written out (no scan)."""
    return dataclasses.replace(model_cfg, num_layers=layers, scan_layers=False)
