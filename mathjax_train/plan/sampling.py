"""`plan --sampling`: what the sampling engine of one host holds per chip of a TPU slice, for a model and the
engine's settings, at each tensor degree the model and the host allow.

Per chip: the parameters as the engine places them (the training rules on a data=1 x fsdp=1 x tensor=T mesh,
summed shard by shard, at model.param_dtype: what the checkpoint holds), then the KV cache by the engine's own
rule (infer/sizing.py: engine.kv_memory_fraction of the memory left after the parameters, each chip holding
1/T of every page). The memory left is the usable HBM of `plan` (USABLE_HBM_FRACTION of the chip's HBM; on a
TPU the engine reads it from the device) minus the parameters. A degree fits when one sequence of the longest
length fits, as the engine requires to start. The engine runs one replica per host, so T is at most the
host's chips and each host holds chips / T replicas.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax

from mathjax_train.config import ConfigError, ModelConfig, SamplingPlanConfig
from mathjax_train.infer.paged_kernels import cache_page_bytes, kernel_spec
from mathjax_train.infer.placement import tensor_problem
from mathjax_train.infer.sizing import engine_slots, kv_fit
from mathjax_train.model.checkpoint import boxed_params
from mathjax_train.model.target import Target
from mathjax_train.parallel.rules import axis_rules, logical_shardings
from mathjax_train.parallel.topology import GIB, Topology, parse_topology
from mathjax_train.plan.memory import USABLE_HBM_FRACTION, abstract_mesh, local_bytes

MIB = 2**20


def param_bytes_per_chip(model: ModelConfig, tensor: int) -> int:
    """Bytes of the parameters on one chip of an engine split `tensor` ways (exact: each array's shard)."""
    boxed = boxed_params(model)
    shardings = logical_shardings(boxed, abstract_mesh({"data": 1, "fsdp": 1, "tensor": tensor}), axis_rules())
    params = jax.tree_util.tree_map(
        lambda a, sh: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh), nn.meta.unbox(boxed), shardings
    )
    return local_bytes(params)


def degrees(model: ModelConfig, chips_per_host: int) -> list[int]:
    """Tensor degrees an engine may use on one host: 1, 2, 4, ... up to its chips, that split the model."""
    out, t = [], 1
    while t <= chips_per_host:
        if tensor_problem(model, t) is None:
            out.append(t)
        t *= 2
    return out


def _degree(model: ModelConfig, topo: Topology, s: SamplingPlanConfig, tensor: int, chips_per_host: int) -> dict:
    """The per-chip figures of one tensor degree."""
    e = s.engine
    kernel = kernel_spec(e.attention, model, e.page_size, tensor, Target("tpu", topo.device_kind))
    max_seq_len = min(s.max_seq_len or model.max_position_embeddings, model.max_position_embeddings)
    pages_per_seq = math.ceil(max_seq_len / e.page_size)
    params = param_bytes_per_chip(model, tensor)
    usable = USABLE_HBM_FRACTION * topo.hbm_bytes
    free = max(0.0, usable - params)
    page = cache_page_bytes(kernel, model, e.page_size) // tensor
    fit = kv_fit(page, free, e.kv_memory_fraction, engine_slots(e.num_slots, "tpu"), pages_per_seq)
    if e.num_pages:  # a fixed cache: it must hold one sequence and fit the memory left
        pages, fits = e.num_pages, e.num_pages > pages_per_seq and e.num_pages * page <= free
    else:
        pages, fits = fit.pages, fit.fits
    sequences = (pages - 1) // pages_per_seq if fits else 0
    replicas = chips_per_host // tensor
    return {
        "tensor": tensor,
        "kernel": kernel.name,
        "max_seq_len": max_seq_len,
        "pages_per_sequence": pages_per_seq,
        "slots": fit.slots,
        "params": params,
        "usable": usable,
        "free": free,
        "kv_budget": free * e.kv_memory_fraction,
        "page_bytes": page,
        "pages_wanted": fit.wanted,
        "pages": pages if fits else 0,
        "kv_cache": pages * page if fits else 0,
        "sequences_per_replica": sequences,
        "concurrent_rows_per_replica": min(sequences, fit.slots),
        "replicas_per_host": replicas,
        "sequences_per_host": sequences * replicas,
        "sequences_per_slice": sequences * replicas * topo.hosts,
        "fits": fits,
    }


def sampling_plan(
    model: ModelConfig, topology: str, s: SamplingPlanConfig, compile: bool = False, bound: bool = True
) -> dict:
    """Everything `plan --sampling` reports, JSON-ready (bytes per chip): the degree asked for (engine.tensor;
    -1 = the largest the host takes) and every other degree, with the smallest that fits. `compile`: the engine's
    programs at that degree, compiled with XLA:TPU at the KV pages the plan promises (plan/compiled_plan.py);
    the verdict is then the compiler's."""
    s.validate("plan --sampling")
    if not topology:
        raise ConfigError("plan: no topology; pass --topology (e.g. v5e-64) or set mesh.topology in the config")
    topo = parse_topology(topology)
    per_host = topo.chips // topo.hosts
    options = degrees(model, per_host)
    tensor = s.engine.tensor if s.engine.tensor != -1 else options[-1]
    if tensor > per_host:
        raise ConfigError(
            f"--tensor {tensor}: a host of {topo.name} has {per_host} chips, and an engine spans one host's chips"
        )
    problem = tensor_problem(model, tensor)
    if problem:
        raise ConfigError(problem.replace("engine.tensor=", "--tensor "))
    rows = {t: _degree(model, topo, s, t, per_host) for t in sorted(set(options) | {tensor})}
    smallest = next((t for t, r in rows.items() if r["fits"]), None)
    chosen = rows[tensor]
    out: dict[str, Any] = {
        "topology": {**topo.as_dict(), "chips_per_host": per_host},
        "model": {
            "architecture": model.architecture,
            "layers": model.num_layers,
            "heads": model.num_heads,
            "kv_heads": model.num_kv_heads,
            "head_dim": model.resolved_head_dim,
            "param_dtype": model.param_dtype,
            "cache_dtype": model.dtype,
        },
        "engine": {
            "slots": chosen["slots"],
            "page_size": s.engine.page_size,
            "max_seq_len": chosen["max_seq_len"],
            "kv_memory_fraction": s.engine.kv_memory_fraction,
            "num_pages": s.engine.num_pages,
            "attention": s.engine.attention,
        },
        "usable_fraction": USABLE_HBM_FRACTION,
        "per_chip": chosen,
        "by_tensor": list(rows.values()),
        "smallest_tensor": smallest,
        "fits": chosen["fits"],
        "compiled": None,
    }
    if compile and chosen["fits"]:
        from mathjax_train.plan import compiled_plan

        shape = {
            "slots": chosen["slots"],
            "pages": chosen["pages"],
            "page_size": s.engine.page_size,
            "max_seq_len": chosen["max_seq_len"],
            "decode_steps": s.engine.decode_steps,
            "prefill_budget": s.engine.prefill_budget,
            "kernel": chosen["kernel"],
            "layers": s.engine.layers,
        }
        c = compiled_plan.sampling(model, topo, shape, tensor, bound)
        c["usable"], c["analytic_total"] = chosen["usable"], chosen["params"] + chosen["kv_cache"]
        out["compiled"] = c
        out["fits"] = not c["refused"] and c["total"] <= chosen["usable"]
    return out


def _gib(x: float) -> str:
    return f"{x / GIB:8.2f} GiB"


def format_sampling_plan(plan: dict, source: str = "") -> str:
    t, m, e, c = plan["topology"], plan["model"], plan["engine"], plan["per_chip"]
    kv_head_share = f"{m['kv_heads'] // c['tensor']} of {m['kv_heads']} kv heads"
    lines = [
        f"sampling plan{' for ' + source if source else ''}",
        f"  topology      {t['name']}: {t['chips']} chips on {t['hosts']} hosts ({t['chips_per_host']} per host), "
        f"{t['hbm_gib_per_chip']:g} GiB HBM per chip",
        f"  model         {m['architecture']}, {m['layers']} layers, {m['heads']} heads / {m['kv_heads']} kv heads "
        f"of {m['head_dim']}, {m['param_dtype']} params, {m['cache_dtype']} KV cache",
        f"  engine        {e['slots']} slots, sequences of {e['max_seq_len']} tokens ({c['pages_per_sequence']} pages "
        f"of {e['page_size']}), attention {c['kernel']}, tensor={c['tensor']} (a replica per "
        f"{str(c['tensor']) + ' chips' if c['tensor'] > 1 else 'chip'}, {c['replicas_per_host']} per host)",
        "  per chip",
        f"    params            {_gib(c['params'])}  "
        + (f"(split {c['tensor']} ways by the mesh rules)" if c["tensor"] > 1 else "(whole)"),
        f"    usable HBM        {_gib(c['usable'])}  ({100 * plan['usable_fraction']:.0f}% of "
        f"{t['hbm_gib_per_chip']:g} GiB)",
        f"    left              {_gib(c['free'])}",
        f"    KV budget         {_gib(c['kv_budget'])}  (engine.kv_memory_fraction {e['kv_memory_fraction']:g} of "
        "what is left)",
        f"    KV page           {c['page_bytes'] / MIB:8.2f} MiB  ({e['page_size']} tokens, {kv_head_share})",
        f"    KV pages          {c['pages']:8,d}  (every slot at full length: {c['pages_wanted']:,})",
        f"    KV cache          {_gib(c['kv_cache'])}",
        f"  sequences     {c['sequences_per_replica']:,} of {e['max_seq_len']} tokens per replica, "
        f"{c['sequences_per_host']:,} per host, {c['sequences_per_slice']:,} on the slice",
    ]
    verdict = "FITS" if plan["fits"] else "DOES NOT FIT"
    smallest = plan["smallest_tensor"]
    hint = (
        f" (the smallest tensor degree that fits: {smallest})"
        if smallest and not plan["fits"]
        else ("" if plan["fits"] else " (no tensor degree within a host fits: shorter sequences, or a bigger chip)")
    )
    if plan.get("compiled"):
        from mathjax_train.plan.report import format_compiled

        lines += format_compiled(plan["compiled"], t["hbm_gib_per_chip"] * GIB)
        lines.append(
            "    (the analytic figure is the parameters and the KV cache; the compiled one adds the programs' "
            "temporaries and code)"
        )
        hint += " by the compiler's count"
    lines.append(f"  verdict       {verdict}{hint}")
    lines.append("  by tensor     T  params/chip  KV pages  seqs/replica  seqs/host  fits")
    for r in plan["by_tensor"]:
        lines.append(
            f"                {r['tensor']:<2} {r['params'] / GIB:8.2f} GiB  {r['pages']:8,d}  {r['sequences_per_replica']:12,d}"
            f"  {r['sequences_per_host']:9,d}  {'yes' if r['fits'] else 'no'}"
            + ("  <- smallest that fits" if r["tensor"] == smallest else "")
        )
    return "\n".join(lines)
