"""Put a plan together (topology, model size, FLOPs, memory, step time) and print it as a table.

Step time = FLOPs per token x token slots per step / (chips x peak FLOP/s x MFU). MFU counts model
FLOPs (PaLM's formula, train/flops.py) over every slot of the batch, padding included, so remat's
recomputation and padding both show up as a lower MFU, not as more FLOPs.
"""

from __future__ import annotations

from typing import Any

from mathjax_train.config import Config, ConfigError
from mathjax_train.parallel.topology import GIB, parse_topology
from mathjax_train.plan.aot import DEFAULT_LAYERS, compiled_memory
from mathjax_train.plan.memory import USABLE_HBM_FRACTION, analytic_memory, learner_config, plan_mesh, rl_extra_memory
from mathjax_train.train.flops import train_flops_per_token

DEFAULT_MFU = 0.4


def make_plan(
    cfg: Config,
    topology: str = "",
    *,
    mfu: float = DEFAULT_MFU,
    compile: bool = False,
    compile_layers: tuple[int, ...] = DEFAULT_LAYERS,
    rl: bool = False,
) -> dict:
    """Everything `mathjax-train plan` reports, as a JSON-ready dict (bytes per device). `rl`: plan the
    `rl` job instead: the learner on rl minibatches, plus the sampler's KV cache and the reference."""
    if rl:
        cfg = learner_config(cfg)
    name = topology or cfg.mesh.topology
    if not name:
        raise ConfigError("plan: no topology; pass --topology (e.g. v5p-32) or set mesh.topology in the config")
    if not 0 < mfu <= 1:
        raise ConfigError(f"plan: --mfu must be in (0, 1], got {mfu}")
    topo = parse_topology(name)
    if cfg.train.batch_size % topo.hosts:
        raise ConfigError(
            f"train.batch_size ({cfg.train.batch_size}) must be a multiple of the {topo.hosts} hosts of {topo.name}"
        )
    model = cfg.model
    if not model.vocab_size:
        raise ConfigError("model.vocab_size: plan needs it set (unset, training takes it from the tokenizer)")
    mp = plan_mesh(cfg, topo.chips)
    mem = analytic_memory(cfg, model, mp)
    extra = rl_extra_memory(cfg, model, mem["params"]) if rl else None
    if extra:
        mem["total"] += extra["total"]
    usable = USABLE_HBM_FRACTION * topo.hbm_bytes
    compiled = compiled_memory(cfg, topo.chips, compile_layers) if compile else None
    fits_analytic = mem["total"] <= usable
    fits_compiled = None if compiled is None else compiled["at_depth"]["peak"] <= usable

    flops = train_flops_per_token(model, cfg.train.seq_len)
    slots = cfg.train.batch_size * cfg.train.seq_len
    step_s = flops * slots / (topo.chips * topo.peak_flops * mfu)
    out: dict[str, Any] = {
        "topology": topo.as_dict(),
        "mesh": mp.shape,
        "model": {
            "architecture": model.architecture,
            "parameters": mem["param_count"],
            "trainable_parameters": mem["trainable_count"],
            "lora": None
            if not cfg.lora.enabled
            else {"rank": cfg.lora.rank, "targets": cfg.lora.targets, "quantize_base": cfg.lora.quantize_base},
            "layers": model.num_layers,
            "hidden_size": model.hidden_size,
            "heads": model.num_heads,
            "kv_heads": model.num_kv_heads,
            "dtype": model.dtype,
            "param_dtype": model.param_dtype,
            "remat_policy": model.remat_policy,
            "attention_kernel": model.attention_kernel,
        },
        "batch": {
            "batch_size": cfg.train.batch_size,
            "seq_len": cfg.train.seq_len,
            "microbatches": cfg.train.microbatches,
            "rows_per_device_per_microbatch": mp.rows_per_device,
            "rows_per_host": cfg.train.batch_size // topo.hosts,
            "token_slots_per_step": slots,
            "loss_vocab_chunk": cfg.train.vocab_chunk(model.vocab_size),
        },
        "flops_per_token": flops,
        "memory_per_device": {
            "hbm": topo.hbm_bytes,
            "usable": usable,
            "usable_fraction": USABLE_HBM_FRACTION,
            "analytic": {
                k: mem[k] for k in ("params", "frozen_base", "optimizer_state", "gradients", "activations", "total")
            },
            "rl": extra,
            "activation_terms": mem["activation_terms"],
            "compiled": compiled,
            "fits_analytic": fits_analytic,
            "fits_compiled": fits_compiled,
        },
        "fits": fits_analytic and fits_compiled is not False,
        "step_time": {
            "mfu": mfu,
            "seconds_per_step": step_s,
            "tokens_per_second": slots / step_s,
            "steps": cfg.train.steps,
            "hours_for_steps": cfg.train.steps * step_s / 3600,
        },
    }
    if rl:  # a "step" above is one learner update; an rl step makes several and also samples (not counted)
        updates = cfg.train.steps * cfg.rl.updates_per_batch * cfg.rl.minibatches
        out["step_time"].update(steps=updates, hours_for_steps=updates * step_s / 3600, learner_only=True)
    return out


def _gib(x: float) -> str:
    return f"{x / GIB:8.2f} GiB"


def _duration(seconds: float) -> str:
    h, rem = divmod(int(round(seconds)), 3600)
    return f"{h}h{rem // 60:02d}m" if h else f"{rem // 60}m{rem % 60:02d}s"


def format_plan(plan: dict, source: str = "") -> str:
    t, mem, b, st, m = plan["topology"], plan["memory_per_device"], plan["batch"], plan["step_time"], plan["model"]
    a = mem["analytic"]
    lines = [
        f"plan{' for ' + source if source else ''}",
        f"  topology      {t['name']}: {t['chips']} chips on {t['hosts']} hosts, {t['hbm_gib_per_chip']:g} GiB HBM and "
        f"{t['peak_tflops_per_chip']:g} bf16 TFLOP/s per chip",
        "  mesh          " + " x ".join(f"{k}={v}" for k, v in plan["mesh"].items()),
        f"  model         {m['architecture']}, {m['parameters']:,} parameters, {m['layers']} layers, "
        f"{m['dtype']} compute / {m['param_dtype']} params, remat {m['remat_policy']}, "
        f"attention {m['attention_kernel']}",
        *(
            [
                f"  LoRA          rank {m['lora']['rank']} on {', '.join(m['lora']['targets'])}, "
                f"{m['trainable_parameters']:,} trainable parameters, frozen base "
                f"{'int8' if m['lora']['quantize_base'] == 'int8' else m['param_dtype']}"
            ]
            if m.get("lora")
            else []
        ),
        f"  batch         {b['batch_size']} x {b['seq_len']} tokens, {b['microbatches']} micro-batch(es), "
        f"{b['rows_per_device_per_microbatch']} rows per device per micro-batch, {b['rows_per_host']} rows per host",
        "  loss          "
        + (f"over vocabulary chunks of {b['loss_vocab_chunk']}" if b["loss_vocab_chunk"] else "full logits"),
        f"  FLOPs/token   {plan['flops_per_token'] / 1e9:.2f} GFLOP (6N + attention, training)",
        "  memory per device       analytic" + ("    compiled (XLA:CPU)" if mem["compiled"] else ""),
    ]
    c = mem["compiled"]["at_depth"] if mem["compiled"] else None
    rows = [
        ("params", a["params"], None),
        *([("frozen base", a["frozen_base"], None)] if m.get("lora") else []),
        ("optimizer state", a["optimizer_state"], None),
        (
            "  = state",
            a["params"] + a["frozen_base"] + a["optimizer_state"],
            c and (c["argument"], "arguments: state + batch"),
        ),
        ("gradients", a["gradients"], None),
        ("activations", a["activations"], None),
        ("  = temporaries", a["gradients"] + a["activations"], c and (c["temp"], "temporaries")),
    ]
    if mem.get("rl"):
        r = mem["rl"]
        rows += [("sampler KV cache", r["kv_cache"], None), ("reference model", r["reference"], None)]
        lines.insert(
            -1,
            f"  rl            sampler: {r['kv_slots']} slots, {r['kv_pages']} KV pages (on one device); "
            f"reference {'kept' if r['reference'] else 'off (rl.kl_coef = 0)'}",
        )
    rows.append(("total", a["total"], c and (c["peak"], "peak")))
    for label, value, comp in rows:
        lines.append(f"    {label:<18} {_gib(value)}" + (f"    {_gib(comp[0])}  ({comp[1]})" if comp else ""))
    lines.append(
        f"    {'usable HBM':<18} {_gib(mem['usable'])}  ({100 * mem['usable_fraction']:.0f}% of "
        f"{mem['hbm'] / 2**30:g} GiB)"
    )
    if mem["compiled"]:
        lines.append(
            f"    compiled: XLA:CPU on {mem['compiled']['devices']} fake devices, {mem['compiled']['method']} "
            f"({mem['compiled']['seconds']:.0f} s)"
        )
    verdict = "FITS" if plan["fits"] else "DOES NOT FIT"
    lines.append(
        f"  verdict       {verdict}"
        + (
            ""
            if plan["fits"]
            else " (raise train.microbatches, use model.remat_policy=full, or shard more: mesh.fsdp / mesh.tensor)"
        )
    )
    lines.append(
        f"  step time     {st['seconds_per_step']:.2f} s at {100 * st['mfu']:.0f}% MFU, "
        f"{st['tokens_per_second']:,.0f} tokens/s, {st['steps']} steps in {_duration(st['hours_for_steps'] * 3600)}"
        + (" (learner updates only; sampling is not counted)" if st.get("learner_only") else "")
    )
    return "\n".join(lines)
