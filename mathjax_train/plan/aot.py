"""Compile a recipe's programs ahead of time, in a child process, and bring back XLA's figures per chip.

With libtpu installed (the `[tpu]` extra) the child compiles with XLA:TPU for the slice's own chips
(plan/tpu_slice.py: no TPU needed), at the recipe's full depth: the bytes are the ones the slice will see, and the
Pallas kernels are the Mosaic ones it will run. Without it, the child compiles the train step with XLA:CPU on
as many fake devices as the slice has chips, at two depths extrapolated to the real one: an estimate (XLA:CPU
keeps bfloat16 intermediates in float32 and fuses differently; argument bytes are exact).

The child also gets a roofline bound per program (plan/roofline.py) on a TPU target. A child keeps libtpu's
start-up lines off the terminal (they are shown only if it fails) and frees the compiler's memory when it ends.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
import subprocess
import sys
import time
import typing
from typing import Any

from mathjax_train.model.attention import PagedKernel

TIMEOUT_S = 3600
CPU_LAYERS = (2, 4)  # depths of the XLA:CPU estimate


def _compile_train(cfg, devices, depth: int | None, roofline: bool) -> dict:
    from mathjax_train.plan import programs, roofline as rl
    from mathjax_train.plan.compiled import compile_figures

    model = cfg.model if depth is None else dataclasses.replace(cfg.model, num_layers=depth)
    out: dict[str, Any] = {
        "programs": [compile_figures("train_step", programs.train_step(cfg, devices, model)).as_dict()]
    }
    if roofline:
        micro = cfg.train.microbatches
        rows = cfg.train.batch_size // micro

        def build(n: int, m: int):
            c = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, batch_size=rows * m, microbatches=m))
            return programs.train_step(c, devices, rl.unrolled(cfg.model, n), unroll_microbatches=True)

        out["costs"] = {"train_step": rl.by_depth_and_microbatches(build, cfg.model.num_layers, micro, "train_step")}
    return out


def _compile_engine(model, shape, devices, roofline: bool) -> dict:
    from mathjax_train.plan import programs, roofline as rl
    from mathjax_train.plan.compiled import compile_figures

    lowered = programs.engine_programs(model, shape, devices)
    out: dict[str, Any] = {"programs": [compile_figures(n, low).as_dict() for n, low in lowered.items()]}
    if roofline:
        probe = dataclasses.replace(shape, layers="unroll")
        out["costs"] = {
            name: rl.by_depth(functools.partial(_engine_probe, model, probe, devices, name), model.num_layers, name)
            for name in lowered
        }
    return out


def _engine_probe(model, shape, devices, name: str, layers: int):
    """One engine program at `layers` layers, written out (a roofline probe)."""
    from mathjax_train.plan import programs, roofline as rl

    return programs.engine_programs(rl.unrolled(model, layers), shape, devices)[name]


def _compile_rl(cfg, devices, kernel: PagedKernel, roofline: bool, depth: int | None = None) -> dict:
    """rl's programs (plan/programs.py rl_programs) at the model's depth or `depth` layers, but for the reshard,
    always at the model's depth (quick to compile, and not affine in the depth: XLA:TPU moves the largest array
    through a whole copy of it on each chip, the stacked layers' at full depth, the embedding's at a few layers);
    the roofline probes are the full model's either way."""
    from mathjax_train.plan import programs, roofline as rl
    from mathjax_train.plan.compiled import compile_figures

    at = cfg if depth is None else dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, num_layers=depth))
    lowered, live = programs.rl_programs(at, devices, kernel)
    if depth is not None and "reshard" in lowered:
        lowered["reshard"] = programs.rl_programs(cfg, devices, kernel, only="reshard")[0]["reshard"]
    out: dict[str, Any] = {"programs": [compile_figures(n, low).as_dict() for n, low in lowered.items()], "live": live}
    out["arguments"] = programs.rl_arguments(live)
    out["engine"] = dataclasses.asdict(programs.rl_engine_shape(cfg, cfg.model, kernel, live["hosts"]))
    if roofline:
        costs = {}
        for name in lowered:

            def build(n: int, name=name):
                small = dataclasses.replace(cfg, model=rl.unrolled(cfg.model, n))
                low, _ = programs.rl_programs(small, devices, kernel, only=name)
                return low[name]

            costs[name] = rl.by_depth(build, cfg.model.num_layers, name)
        out["costs"] = costs
    return out


def run_request(request: dict) -> dict:
    """In the child: compile what `request` asks for on its target's devices; figures per chip."""
    from mathjax_train.config import Config, ModelConfig, from_dict
    from mathjax_train.parallel.topology import parse_topology
    from mathjax_train.plan import programs

    topo = parse_topology(request["topology"])
    tpu = request["target"] == "tpu"
    if tpu:
        from mathjax_train.plan import tpu_slice

        devices = tpu_slice.slice_devices(topo)
    else:
        import jax

        devices = jax.devices()
    job = request["job"]
    roofline = tpu and request.get("roofline", True)
    if job == "sampling":
        model = from_dict(ModelConfig, request["model"])
        shape = programs.EngineShape(**request["engine"])
        per_host = tpu_slice.host_devices(topo) if tpu else devices
        return _compile_engine(model, shape, per_host[: request["tensor"]], roofline)
    cfg = from_dict(Config, request["config"])
    cfg.validate()
    if job == "rl":
        return _compile_rl(cfg, devices, typing.cast(PagedKernel, request["kernel"]), roofline, request.get("depth"))
    if tpu:
        return _compile_train(cfg, devices, request.get("depth"), roofline)
    points = [_compile_train(cfg, devices, n, False)["programs"][0] | {"layers": n} for n in request["layers"]]
    return {"points": points}


def _child_env(target: str, chips: int) -> dict:
    flags = re.sub(r"--xla_force_host_platform_device_count=\S+", "", os.environ.get("XLA_FLAGS", ""))
    # JAX on the host CPU (the slice's devices come from libtpu's topology, not a backend); a compile-only child
    # touches no TPU, so libtpu's one-process-per-TPU lock is not taken (plans may compile side by side)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", JAX_PLATFORMS="cpu", ALLOW_MULTIPLE_LIBTPU_LOAD="1")
    if target == "cpu":
        flags = f"{flags} --xla_force_host_platform_device_count={chips}"
    env["XLA_FLAGS"] = flags.strip()
    return env


def compile_in_child(request: dict, chips: int) -> dict:
    """Run `request` in a child process (see module docstring); its result, with the wall time it took."""
    t = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "mathjax_train.plan.aot"],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        env=_child_env(request["target"], chips),
        timeout=TIMEOUT_S,
    )
    compiler = "XLA:TPU" if request["target"] == "tpu" else f"XLA:CPU on {chips} fake devices"
    if proc.returncode != 0:
        raise RuntimeError(f"plan: the ahead-of-time compile ({compiler}) failed:\n{proc.stderr[-4000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["wall_seconds"] = round(time.perf_counter() - t, 1)
    return out


def _main() -> None:
    request = json.loads(sys.stdin.read())
    result = run_request(request)
    print(json.dumps(result))


if __name__ == "__main__":
    _main()
