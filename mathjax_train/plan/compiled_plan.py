"""The compiled half of a plan: which programs a job runs, compiled for the slice (plan/aot.py), and what they
hold together on one chip.

- training: the train step; its bytes are the chip's.
- sampling (generate, evaluate, rft, serve): the engine's prefill and decode chunks share the parameters and the
  KV cache (their arguments), so the chip holds the larger program and every program's code.
- rl: the learner update, the reference's log-probabilities, the reshard of the parameters to the engines and
  the engine run one after another while the learner state, the reference, the engine's parameters, the KV
  cache and the decoding copy all stay alive: each program's bytes plus the live arrays it does not count
  itself, at the largest, plus every program's code, on a chip of an engine (the fullest). The reshard's peak
  assumes the engine's previous parameters are dropped before the copy is made.
"""

from __future__ import annotations

from typing import Any

from mathjax_train.config import Config, ConfigError, ModelConfig, to_dict
from mathjax_train.model.attention import PagedKernel
from mathjax_train.parallel.topology import Topology
from mathjax_train.plan.aot import CPU_LAYERS, compile_in_child
from mathjax_train.plan.roofline import bound, model_flops
from mathjax_train.plan.tpu_slice import libtpu_available

MEMORY = ("argument", "output", "alias", "temp", "code", "total")
TPU_MISSING = "the TPU compiler is not installed (pip install 'mathjax-train[tpu]' adds libtpu)"


def _compiler(target: str, topo: Topology) -> str:
    if target == "tpu":
        return f"XLA:TPU for {topo.name} ({topo.device_kind})"
    return f"XLA:CPU on {topo.chips} fake devices (an estimate)"


def _summary(result: dict, topo: Topology, target: str, method: str, total: int, work: dict) -> dict:
    """`work`: each program's model FLOPs per chip (roofline.model_flops), the floor of its bound's FLOPs."""
    programs = {p["name"]: p for p in result["programs"]}
    roofline = {n: bound(c["flops"], c["bytes"], topo, work.get(n, 0.0)) for n, c in result.get("costs", {}).items()}
    return {
        "compiler": _compiler(target, topo),
        "target": target,
        "estimate": target != "tpu",
        "method": method,
        "programs": programs,
        "total": total,
        "refused": [n for n, p in programs.items() if p["refused"]],
        "compile_seconds": round(sum(p["seconds"] for p in programs.values()), 1),
        "wall_seconds": result["wall_seconds"],
        "roofline": roofline,
    }


def _extrapolate(points: list[dict], depth: int, name: str = "train_step") -> dict:
    """Each byte count at `depth` from the line through the two compiled depths (scanned layers make memory
    affine in the layer count)."""
    p, q = points[-2:]
    span = q["layers"] - p["layers"]
    out = {k: p[k] + (q[k] - p[k]) * (depth - p["layers"]) / span for k in MEMORY if k != "total"}
    out["total"] = out["argument"] + out["output"] - out["alias"] + out["temp"] + out["code"]
    refused = p["refused"] or q["refused"]
    return {**q, **{k: int(v) for k, v in out.items()}, "name": name, "refused": refused}


def _depths(layers: tuple[int, ...], depth: int) -> list[int]:
    """The depths to compile for --compile-layers (two of at least 2, or the model's own)."""
    depths = sorted({min(n, depth) for n in layers})
    if depths[-1] != depth and (len(depths) < 2 or depths[0] < 2):
        # a one-layer scan is compiled as straight-line code and does not lie on the line
        raise ConfigError(
            f"plan --compile-layers {' '.join(map(str, layers))}: give two different depths of at "
            f"least 2 (or the model's {depth})"
        )
    return depths


def resolve_compiler(choice: str, where: str = "plan --compile") -> str:
    """--compiler: tpu (XLA:TPU through libtpu), cpu (the XLA:CPU estimate), auto = tpu when libtpu is installed."""
    if choice not in ("auto", "tpu", "cpu"):
        raise ConfigError(f"{where}: --compiler must be auto, tpu or cpu, not {choice!r}")
    if choice == "auto":
        return "tpu" if libtpu_available() else "cpu"
    if choice == "tpu" and not libtpu_available():
        raise ConfigError(f"{where} --compiler tpu: {TPU_MISSING}")
    return choice


def train(
    cfg: Config, topo: Topology, layers: tuple[int, ...] | None = None, compiler: str = "auto", bound: bool = True
) -> dict:
    """The train step compiled for the slice: with XLA:TPU at full depth (or at `layers`, extrapolated and
    labelled); with XLA:CPU (no libtpu, or asked for), an estimate at 2 and 4 layers."""
    target = resolve_compiler(compiler)
    depth = cfg.model.num_layers
    if layers is None and target == "cpu":
        layers = CPU_LAYERS
    request: dict[str, Any] = {
        "job": "train",
        "target": target,
        "topology": topo.name,
        "config": to_dict(cfg),
        "roofline": bound,
    }
    if layers is None:
        result = compile_in_child(request, topo.chips)
        method = f"compiled at the full depth ({depth} layers)"
    else:
        depths = _depths(layers, depth)
        if target == "tpu":
            points: list[dict] = []
            costs: dict = {}
            wall = 0.0
            for n in depths:
                r = compile_in_child({**request, "depth": n, "roofline": bound and not costs}, topo.chips)
                points.append({**r["programs"][0], "layers": n})
                costs, wall = costs or r.get("costs", {}), wall + r["wall_seconds"]
            result = {"costs": costs, "wall_seconds": wall}
        else:
            result = compile_in_child({**request, "layers": depths}, topo.chips)
            points = result["points"]
        if depths[-1] == depth:
            program, method = points[-1], f"compiled at the full depth ({depth} layers)"
        else:
            program = _extrapolate(points, depth)
            method = f"compiled at {depths[-2]} and {depths[-1]} layers, extrapolated linearly to {depth}"
        program["seconds"] = round(sum(p["seconds"] for p in points), 1)
        result["programs"] = [program]
    step = result["programs"][0]
    tokens = cfg.train.batch_size * cfg.train.seq_len / topo.chips
    work = {"train_step": model_flops("train_step", cfg.model, tokens, cfg.train.seq_len)}
    return _summary(result, topo, target, method, step["total"], work)


def _engine_total(programs: list[dict], extra: dict | None = None) -> int:
    """The chip's bytes while the largest program runs (plus live arrays it does not take, `extra`), with every
    program's code loaded."""
    code = sum(p["code"] for p in programs)
    return max(p["total"] - p["code"] + (extra or {}).get(p["name"], 0) for p in programs) + code


def sampling(model: ModelConfig, topo: Topology, engine: dict, tensor: int, bound: bool = True) -> dict:
    """The sampling engine's prefill and decode chunks at their largest shapes (`engine`: EngineShape's fields)
    on the first `tensor` chips of one host."""
    resolve_compiler("tpu", "plan --sampling --compile")
    request = {
        "job": "sampling",
        "target": "tpu",
        "topology": topo.name,
        "model": to_dict(model),
        "engine": engine,
        "tensor": tensor,
        "roofline": bound,
    }
    result = compile_in_child(request, topo.chips)
    method = f"compiled at the full depth ({model.num_layers} layers), {engine['slots']} slots, {engine['pages']} pages"
    return _summary(result, topo, "tpu", method, _engine_total(result["programs"]), engine_work(model, engine, tensor))


def engine_work(model: ModelConfig, engine: dict, tensor: int) -> dict:
    """Model FLOPs per chip of a prefill chunk (prefill_budget tokens) and of one decode step of every slot."""
    budget, context = engine["prefill_budget"], engine["max_seq_len"]
    return {
        "prefill": model_flops("prefill", model, budget, context) / tensor,
        "decode": model_flops("decode", model, engine["slots"], context) / tensor,
    }


def rl(
    cfg: Config, topo: Topology, kernel: PagedKernel, bound: bool = True, layers: tuple[int, ...] | None = None
) -> dict:
    """rl's programs as it lays them out on the slice (plan/programs.py rl_programs), with the arrays that stay
    alive around each (module docstring); at the full depth, or at `layers` (two depths) extrapolated."""
    from mathjax_train.plan.programs import LIVE_BYTES

    resolve_compiler("tpu", "plan --rl --compile")
    request: dict[str, Any] = {
        "job": "rl",
        "target": "tpu",
        "topology": topo.name,
        "config": to_dict(cfg),
        "kernel": kernel,
        "roofline": bound,
    }
    depth = cfg.model.num_layers
    depths = [depth] if layers is None else _depths(layers, depth)
    if depths == [depth]:
        result = compile_in_child(request, topo.chips)
        method = f"compiled at the full depth ({depth} layers)"
    else:
        runs = [
            compile_in_child({**request, "depth": n, "roofline": bound and i == 0}, topo.chips)
            for i, n in enumerate(depths)
        ]
        result = _extrapolate_rl(runs, depths, depth)
        method = f"compiled at {depths[-2]} and {depths[-1]} layers, extrapolated linearly to {depth}"
    live = result["live"]
    alive = sum(live[k] for k in LIVE_BYTES)
    extra = {name: alive - taken for name, taken in result["arguments"].items()}
    method += (
        f"; the learner on all {topo.chips} chips, the engine of each of the {live['hosts']} hosts on "
        f"{live['engine_tensor']} chip(s), with the live arrays"
    )
    r, seq = cfg.rl, cfg.train.seq_len
    rows = r.prompts_per_step * r.group_size
    work = {
        "update": model_flops("update", cfg.model, rows // r.minibatches * seq, seq) / topo.chips,
        "reference": model_flops("reference", cfg.model, rows // r.minibatches * seq, seq) / topo.chips,
        **engine_work(cfg.model, result["engine"], live["engine_tensor"]),
    }
    out = _summary(result, topo, "tpu", method, _engine_total(result["programs"], extra), work)
    code = sum(p["code"] for p in result["programs"])
    out["peaks"] = {p["name"]: p["total"] - p["code"] + extra.get(p["name"], 0) + code for p in result["programs"]}
    out["live"] = live
    return out


def _extrapolate_rl(runs: list[dict], depths: list[int], depth: int) -> dict:
    """rl's compiled figures at `depth` from two depths: each program's bytes and each live array's (parameters,
    Adam, the KV cache: all affine in the layer count) on the line through them; the reshard's as compiled."""
    from mathjax_train.plan.programs import LIVE_BYTES, rl_arguments

    names = [p["name"] for p in runs[-1]["programs"]]
    points = {
        n: [{**next(p for p in r["programs"] if p["name"] == n), "layers": k} for r, k in zip(runs, depths)]
        for n in names
    }
    programs = [  # the reshard: compiled at the full depth each time (plan/aot.py _compile_rl), not extrapolated
        points[n][-1]
        if n == "reshard"
        else {**_extrapolate(points[n], depth, n), "seconds": round(sum(p["seconds"] for p in points[n]), 1)}
        for n in names
    ]
    (a, b), (p, q) = depths[-2:], (runs[-2]["live"], runs[-1]["live"])
    live = {**q, **{k: int(p[k] + (q[k] - p[k]) * (depth - a) / (b - a)) for k in (*LIVE_BYTES, "params")}}
    return {
        "programs": programs,
        "live": live,
        "arguments": rl_arguments(live),
        "engine": runs[-1]["engine"],
        "costs": runs[0].get("costs", {}),
        "wall_seconds": round(sum(r["wall_seconds"] for r in runs), 1),
    }
