"""Per-device memory from an ahead-of-time compile of the real train step on fake CPU devices.

A child process gets as many fake devices as the slice has chips (XLA_FLAGS must be set before JAX
starts), builds the trainer's state layout, mesh and jitted step, lowers it on abstract arguments
(nothing is allocated) and reads XLA's `memory_analysis()`. A 7B model takes minutes to compile
on a small machine, so it compiles the same model and sharding at two depths and extrapolates
linearly to the real depth (scanned layers make memory affine in the layer count).

XLA:CPU keeps bfloat16 intermediates in float32 and fuses differently from XLA:TPU, so the
temporaries are an upper bound for a TPU; argument bytes (parameters, optimizer state, batch) are exact.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import time

DEFAULT_LAYERS = (2, 4)
TIMEOUT_S = 900


def lower_step(cfg, num_layers: int):
    """In this process (its devices are the slice): the train step at `num_layers`, traced and lowered
    with the recipe's mesh and shardings on abstract arguments (nothing is allocated)."""
    import jax
    import jax.numpy as jnp

    from mathjax_train.data.batches import BATCH_DTYPES
    from mathjax_train.train.setup import build_step

    setup = build_step(cfg, dataclasses.replace(cfg.model, num_layers=num_layers))
    shape = (cfg.train.batch_size, cfg.train.seq_len)
    batch = {
        k: jax.ShapeDtypeStruct(shape, jnp.dtype(dt), sharding=setup.batch_sharding) for k, dt in BATCH_DTYPES.items()
    }
    with jax.set_mesh(setup.mesh):
        return setup.step.lower(setup.layout.abstract, batch)


def compile_step(cfg, num_layers: int) -> dict:
    """In this process: compile one train step, return XLA's byte counts."""
    import jax

    lowered = lower_step(cfg, num_layers)
    t = time.perf_counter()
    compiled = lowered.compile()
    ma = compiled.memory_analysis()
    if ma is None:
        raise RuntimeError(f"XLA on {jax.default_backend()} gives no memory analysis of the compiled step")
    return {
        "layers": num_layers,
        "compile_seconds": round(time.perf_counter() - t, 1),
        "argument": ma.argument_size_in_bytes,
        "output": ma.output_size_in_bytes,
        "alias": ma.alias_size_in_bytes,
        "temp": ma.temp_size_in_bytes,
        "peak": ma.argument_size_in_bytes + ma.output_size_in_bytes - ma.alias_size_in_bytes + ma.temp_size_in_bytes,
    }


def extrapolate(points: list[dict], num_layers: int) -> dict:
    """Each byte count at `num_layers` from the line through the two compiled depths."""
    p, q = points
    span = q["layers"] - p["layers"]
    out = {}
    for key in ("argument", "output", "alias", "temp", "peak"):
        slope = (q[key] - p[key]) / span
        out[key] = p[key] + slope * (num_layers - p["layers"])
    return out


def compiled_memory(cfg, chips: int, layers: tuple[int, ...] = DEFAULT_LAYERS) -> dict:
    """Run the compile in a child with `chips` fake CPU devices; bytes per device at the real depth."""
    from mathjax_train.config import ConfigError, to_dict

    depth = cfg.model.num_layers
    layers = tuple(sorted({min(n, depth) for n in layers}))
    if layers[-1] != depth and (len(layers) < 2 or layers[0] < 2):
        # a one-layer scan is compiled as straight-line code and does not lie on the line
        raise ConfigError(
            f"plan --compile-layers {' '.join(map(str, layers))}: give two different depths of at "
            f"least 2 (or the model's {depth})"
        )
    flags = re.sub(r"--xla_force_host_platform_device_count=\S+", "", os.environ.get("XLA_FLAGS", ""))
    env = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        TF_CPP_MIN_LOG_LEVEL="3",
        XLA_FLAGS=f"{flags} --xla_force_host_platform_device_count={chips}".strip(),
    )
    request = json.dumps({"config": to_dict(cfg), "layers": list(layers)})
    t = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "mathjax_train.plan.aot"],
        input=request,
        capture_output=True,
        text=True,
        env=env,
        timeout=TIMEOUT_S,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"plan: the ahead-of-time compile on {chips} fake devices failed:\n{proc.stderr[-3000:]}")
    points = json.loads(proc.stdout.strip().splitlines()[-1])
    if len(points) == 1 or points[-1]["layers"] == depth:
        at_depth = {k: points[-1][k] for k in ("argument", "output", "alias", "temp", "peak")}
        method = f"compiled at the full depth ({depth} layers)"
    else:
        at_depth = extrapolate(points[-2:], depth)
        method = (
            f"compiled at {points[-2]['layers']} and {points[-1]['layers']} layers, extrapolated linearly to {depth}"
        )
    return {
        "devices": chips,
        "method": method,
        "points": points,
        "at_depth": at_depth,
        "seconds": round(time.perf_counter() - t, 1),
    }


def _main() -> None:
    from mathjax_train.config import Config, from_dict

    request = json.loads(sys.stdin.read())
    cfg = from_dict(Config, request["config"])
    cfg.validate()
    print(json.dumps([compile_step(cfg, n) for n in request["layers"]]))


if __name__ == "__main__":
    _main()
