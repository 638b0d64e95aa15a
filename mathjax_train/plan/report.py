"""Put a plan together (topology, model size, FLOPs, memory, step time) and print it as a table.

Step time = FLOPs per token x token slots per step / (chips x peak FLOP/s x MFU). MFU counts model
FLOPs (PaLM's formula, train/flops.py) over every slot of the batch, padding included, so remat's
recomputation and padding both show up as a lower MFU, not as more FLOPs. With --compile, the compiled
programs' own figures (plan/compiled_plan.py) stand beside the analytic ones: per-chip bytes, the verdict by
the compiler's count, and a roofline bound on the step time from their cost analysis.
"""

from __future__ import annotations

from typing import Any

from mathjax_train.config import Config, ConfigError
from mathjax_train.parallel.topology import GIB, parse_topology
from mathjax_train.plan import compiled_plan
from mathjax_train.plan.memory import USABLE_HBM_FRACTION, analytic_memory, learner_config, plan_mesh, rl_extra_memory
from mathjax_train.train.flops import active_param_count, train_flops_per_token

DEFAULT_MFU = 0.4


def make_plan(
    cfg: Config,
    topology: str = "",
    *,
    mfu: float = DEFAULT_MFU,
    compile: bool = False,
    compile_layers: tuple[int, ...] | None = None,
    compiler: str = "auto",
    bound: bool = True,
    rl: bool = False,
) -> dict:
    """Everything `mathjax-train plan` reports, as a JSON-ready dict (bytes per device). `rl`: plan the
    `rl` job instead: the learner on rl minibatches, plus the sampler's KV cache and the reference.
    `compile`: also compile the job's programs for the slice (XLA:TPU with libtpu, else an XLA:CPU estimate of
    the train step; `compiler` tpu/cpu picks one); `compile_layers`: two depths to compile and extrapolate from
    instead of the full depth; `bound`: the roofline bound's cost probes (XLA:TPU only)."""
    rl_cfg = cfg
    if rl:
        cfg = learner_config(cfg)
    name = topology or cfg.mesh.topology
    if not name:
        raise ConfigError("plan: no topology; pass --topology (e.g. v5p-32) or set mesh.topology in the config")
    if not 0 < mfu <= 1:
        raise ConfigError(f"plan: --mfu must be in (0, 1], got {mfu}")
    topo = parse_topology(name)
    if not rl and cfg.train.batch_size % topo.hosts:
        raise ConfigError(
            f"train.batch_size ({cfg.train.batch_size}) must be a multiple of the {topo.hosts} hosts of {topo.name}"
        )
    model = cfg.model
    if not model.vocab_size:
        raise ConfigError("model.vocab_size: plan needs it set (unset, training takes it from the tokenizer)")
    mp = plan_mesh(cfg, topo.chips)  # rl's learner too spans every chip (rl/learner.py learner_devices)
    mem = analytic_memory(cfg, model, mp, learner=rl)
    extra = None
    if rl:
        from mathjax_train.infer.placement import resolve_tensor

        tensor = resolve_tensor(cfg.rl.engine.tensor, model, topo.chips // topo.hosts)  # one host's engine
        extra = rl_extra_memory(cfg, model, mp, mem, tensor, topo.hosts)
        mem["total"] = max(mem["total"] + extra["total"], extra["reshard_peak"])  # the update's chip, or the reshard's
    usable = USABLE_HBM_FRACTION * topo.hbm_bytes
    compiled = None
    if compile:
        if rl:
            from mathjax_train.infer.paged_kernels import paged_kernel
            from mathjax_train.model.target import Target

            assert extra is not None
            eng = rl_cfg.rl.engine
            target = Target("tpu", topo.device_kind)
            kernel = paged_kernel(eng.attention, model, eng.page_size, extra["engine_tensor"], target)
            compiled = (
                compiled_plan.rl(rl_cfg, topo, kernel, bound, compile_layers)
                if compiled_plan.resolve_compiler(compiler) == "tpu"
                else compiled_plan.train(cfg, topo, compile_layers, "cpu")
            )
        else:
            compiled = compiled_plan.train(cfg, topo, compile_layers, compiler, bound)
    fits_analytic = mem["total"] <= usable
    fits_compiled = None if compiled is None else not compiled["refused"] and compiled["total"] <= usable
    if compiled is not None:
        compiled["usable"] = usable
        compiled["analytic_total"] = mem["total"]

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
            "experts": None
            if not model.num_experts
            else {
                "num_experts": model.num_experts,
                "top_k": model.num_experts_per_tok,
                "active_parameters": active_param_count(model, mem["param_count"]),
                "expert_shards": mp.shards("expert"),
                "expert_param_bytes_per_device": mem["expert_params"],
            },
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
        # the compiler's count decides where it is the TPU's own; an XLA:CPU estimate only adds a doubt
        "fits": fits_compiled
        if compiled is not None and not compiled["estimate"]
        else fits_analytic and fits_compiled is not False,
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


def _pct(x: float, ref: float) -> str:
    return f"{100 * (x - ref) / ref:+.0f}%" if ref else "n/a"


def format_compiled(c: dict, hbm: float, table: bool = True) -> list[str]:
    """A compiled plan (bytes per chip): the compiler and how it compiled, the per-program table (`table`),
    the chip's total against the usable HBM, and the roofline bound of each program."""
    lines = [
        f"  compiled      {c['compiler']}, {c['method']}; {c['compile_seconds']:.0f} s of compiling "
        f"({c['wall_seconds']:.0f} s with the cost probes and start-up)"
    ]
    if table:
        lines.append("    per chip, GiB    arguments  outputs  aliased  temporaries   code    total")
        for name, p in c["programs"].items():
            if p["refused"]:
                lines.append(f"    {name:<16} refused: needs {p['required'] / GIB:.2f} GiB ({p['message']})")
                continue
            lines.append(
                f"    {name:<16} {p['argument'] / GIB:9.2f} {p['output'] / GIB:8.2f} {p['alias'] / GIB:8.2f} "
                f"{p['temp'] / GIB:12.2f} {p['code'] / GIB:6.2f} {p['total'] / GIB:8.2f}"
            )
        if c.get("live"):
            live = c["live"]
            lines.append(
                "    alive throughout: learner state {:.2f}, reference {:.2f}, engine params (the reshard's output) "
                "{:.2f}, KV cache {:.2f}, decoding copy {:.2f} GiB".format(
                    *(live[k] / GIB for k in ("state", "reference", "engine_params", "kv_cache", "decode_copy"))
                )
            )
            lines.append(
                "    chip while each runs: "
                + ", ".join(f"{n} {v / GIB:.2f}" for n, v in c.get("peaks", {}).items())
                + " GiB (with every program's code)"
            )
        lines.append(
            f"    {'chip total':<16} {c['total'] / GIB:.2f} GiB of {c['usable'] / GIB:.2f} usable ({hbm / GIB:g} GiB "
            f"HBM); analytic {c['analytic_total'] / GIB:.2f} GiB ({_pct(c['analytic_total'], c['total'])})"
        )
    elif c["refused"]:
        p = c["programs"][c["refused"][0]]
        lines.append(f"    refused by the compiler: needs {p['required'] / GIB:.2f} GiB ({p['message']})")
    for name, r in c.get("roofline", {}).items():
        counted = (
            "XLA's count"
            if r["xla_flops"] >= r["model_flops"]
            else f"the model's; XLA counts {r['xla_flops'] / 1e12:,.2f}"
        )
        lines.append(
            f"  bound         {name}: at least {_seconds(r['seconds'])} a call, {r['limited_by']}-bound: "
            f"{r['flops'] / 1e12:,.2f} TFLOP ({counted}) at peak {_seconds(r['compute_seconds'])}, "
            f"{r['bytes'] / GIB:,.1f} GiB of HBM traffic {_seconds(r['memory_seconds'])}; a bound, not a measurement"
        )
    return lines


def _seconds(x: float) -> str:
    return f"{x:.3g} s" if x >= 0.01 else f"{x * 1e3:.3g} ms"


def format_plan(plan: dict, source: str = "") -> str:
    t, mem, b, st, m = plan["topology"], plan["memory_per_device"], plan["batch"], plan["step_time"], plan["model"]
    a = mem["analytic"]
    lines = [
        f"plan{' for ' + source if source else ''}",
        f"  topology      {t['name']}: {t['chips']} chips on {t['hosts']} hosts, {t['hbm_gib_per_chip']:g} GiB HBM and "
        f"{t['peak_tflops_per_chip']:g} bf16 TFLOP/s per chip",
        "  mesh          " + " x ".join(f"{k}={v}" for k, v in plan["mesh"].items() if k != "expert" or v > 1),
        f"  model         {m['architecture']}, {m['parameters']:,} parameters, {m['layers']} layers, "
        f"{m['dtype']} compute / {m['param_dtype']} params, remat {m['remat_policy']}, "
        f"attention {m['attention_kernel']}",
        *(
            [
                f"  experts       {m['experts']['num_experts']} per layer, top-{m['experts']['top_k']}: "
                f"{m['experts']['active_parameters']:,} active parameters per token; expert weights split "
                f"{m['experts']['expert_shards']} ways by the expert axis, "
                f"{m['experts']['expert_param_bytes_per_device'] / 2**30:.2f} GiB per device"
            ]
            if m.get("experts")
            else []
        ),
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
    ]
    c = mem["compiled"]
    one_step = c is not None and list(c["programs"]) == ["train_step"]
    step = c["programs"]["train_step"] if one_step else None
    lines.append("  memory per chip         analytic" + ("      compiled" if step and not step["refused"] else ""))
    shown = step if step and not step["refused"] else None
    rows = [
        ("params", a["params"], None),
        *([("frozen base", a["frozen_base"], None)] if m.get("lora") else []),
        ("optimizer state", a["optimizer_state"], None),
        (
            "  = state",
            a["params"] + a["frozen_base"] + a["optimizer_state"],
            shown and (shown["argument"], "arguments: state + batch"),
        ),
        ("gradients", a["gradients"], None),
        ("activations", a["activations"], None),
        ("  = temporaries", a["gradients"] + a["activations"], shown and (shown["temp"], "temporaries")),
    ]
    if shown:
        rows += [
            ("outputs", None, (shown["output"], f"{shown['alias'] / GIB:.2f} GiB of them aliased to arguments")),
            ("generated code", None, (shown["code"], "")),
        ]
    if mem.get("rl"):
        r = mem["rl"]
        rows += [
            ("reference model", r["reference"], None),
            ("engine params", r["engine_params"], None),
            *([("decoding copy", r["decode_copy"], None)] if r["decode_copy"] else []),
            ("engine KV cache", r["kv_cache"], None),
        ]
        t = r["engine_tensor"]
        lines.insert(
            -1,
            f"  rl            learner on all {plan['topology']['chips']} chips (mesh above); an engine per host on "
            f"{t} chip(s): {r['kv_slots']} slots, {r['kv_pages']} KV pages, each chip holding 1/{t} of every "
            f"page's kv heads; reference {'kept' if r['reference'] else 'off (rl.kl_coef = 0)'}; "
            + (
                f"learner -> engine reshard peak {r['reshard_peak'] / GIB:.2f} GiB per chip "
                f"({r['reshard_temp'] / GIB:.2f} of it the largest array, whole)"
                if r["reshard_peak"]
                else "the engine reads the learner's parameters in place"
            ),
        )
    rows.append(("total", a["total"], shown and (shown["total"], f"analytic {_pct(a['total'], shown['total'])}")))
    for label, value, comp in rows:
        left = _gib(value) if value is not None else " " * 12
        lines.append(f"    {label:<18} {left}" + (f"  {_gib(comp[0])}  {comp[1]}".rstrip() if comp else ""))
    lines.append(
        f"    {'usable HBM':<18} {_gib(mem['usable'])}  ({100 * mem['usable_fraction']:.0f}% of "
        f"{mem['hbm'] / 2**30:g} GiB)"
    )
    if c:
        lines += format_compiled(c, mem["hbm"], table=not one_step)
    verdict = "FITS" if plan["fits"] else "DOES NOT FIT"
    by = ""
    if c is not None:
        by = " by the compiler's count" if not c["estimate"] else " (analytic, and the XLA:CPU estimate)"
    elif mem["compiled"] is None:
        by = " (analytic; --compile asks the compiler)"
    lines.append(
        f"  verdict       {verdict}{by}"
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
