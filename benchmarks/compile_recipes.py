"""Compile every TPU recipe with XLA:TPU (libtpu, no TPU needed) and write the table of docs/tpu.md.

    python benchmarks/compile_recipes.py [--only NAME ...] [--json OUT.json] [--docs docs/tpu.md]
    python benchmarks/compile_recipes.py --from-json A.json B.json   # the table from rows of earlier runs

Each compile is mostly one thread: two runs with disjoint `--only` lists side by side on a 2-core
machine take half the time; `--from-json` then writes the table from their rows, in the recipes' order.

Each row is `mathjax-train plan --config RECIPE --compile --json` (RL recipes: `plan --rl`; the sampling rows:
`plan --sampling --compile` for each model on its slice with the pipelines' sampling lengths): per-chip GiB by
the compiler and by the analytic planner, their difference, the verdict, the roofline bound on a step beside the
planner's 40%-MFU estimate, and the compile seconds. The table between the `compile-table` markers of the docs
page is replaced; the command, date, machine and versions go above it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
GIB = 2**30
BEGIN, END = "<!-- compile-table:begin -->", "<!-- compile-table:end -->"
# the engine's sampling rows: (model recipe, slice, max_seq_len, settings): the RFT pipelines sample 512 new tokens.
# XLA:TPU compiles a program for v5e and v6e only over every chip of the slice it is given (limited ICI routing), so
# their engine (a replica per host) is compiled for one host's slice, its 4 chips, tensor-parallel over them
SAMPLING = (
    ("llama2_7b_sft_v5p-32.yaml", "v5p-32", 1024, ()),
    ("llama2_7b_sft_v5e-64.yaml", "v5e-4", 1024, ("--tensor", "4")),
    ("mistral_7b_sft_v5p-32.yaml", "v5p-32", 1024, ()),
    ("qwen2_7b_sft_2k_v5p-32.yaml", "v5p-32", 2048, ()),
    ("llama2_7b_sft_v6e-16.yaml", "v6e-4", 1024, ("--tensor", "4")),
)


def recipes() -> list[tuple[str, list[str]]]:
    """(label, plan arguments) for every recipe that names a topology, then the RL and sampling rows."""
    from mathjax_train.config import load_config
    from mathjax_train.pipeline.spec import is_pipeline_file

    rows = []
    for path in sorted((REPO / "configs").glob("*.yaml")):
        if is_pipeline_file(str(path)):
            continue
        cfg = load_config(str(path))
        if not cfg.mesh.topology:
            continue
        args = ["--config", str(path)] + (["--rl"] if path.name.startswith("grpo_") else [])
        rows.append((path.name + (" (rl)" if "--rl" in args else ""), args))
    for name, topo, length, settings in SAMPLING:
        args = [
            "--config",
            str(REPO / "configs" / name),
            "--sampling",
            "--topology",
            topo,
            "--max-seq-len",
            str(length),
        ]
        label = f"{name.split('_sft')[0]} engine on {topo}, {length} tokens" + "".join(f" {s}" for s in settings)
        rows.append((label + " (sampling)", args + list(settings)))
    return rows


def plan(args: list[str]) -> tuple[dict, float]:
    t = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "mathjax_train.cli", "plan", *args, "--compile", "--json"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    if proc.returncode not in (0, 1) or not proc.stdout.strip():  # 1 = does not fit, still a plan
        # a compile XLA:TPU stops for another reason than HBM (a kernel's VMEM, ...): its last error line is the row
        lines = proc.stderr.splitlines()
        errors = [line.split("Error: ", 1)[1] for line in lines if "Error: " in line]
        errors += [part for line in lines for part in line.split(". ") if "exceeded" in part]  # XLA's size and limit
        return {"error": " ".join(errors[-2:])[:300] or "plan failed"}, time.perf_counter() - t
    return json.loads(proc.stdout), time.perf_counter() - t


def row(label: str, p: dict, wall: float) -> dict:
    if "error" in p:
        return {"recipe": label, "error": p["error"], "wall_seconds": round(wall, 1)}
    sampling = "per_chip" in p
    c = p["compiled"] if sampling else p["memory_per_device"]["compiled"]
    if c is None:  # plan compiles only what fits its analytic count
        raise SystemExit(f"{label}: not compiled: the analytic plan says it does not fit ({p['topology']['name']})")
    topo = p["topology"]["name"]
    if sampling:
        analytic = p["per_chip"]["params"] + p["per_chip"]["kv_cache"]
        estimate = None
        bound = c["roofline"].get("decode")
    else:
        analytic = p["memory_per_device"]["analytic"]["total"]
        estimate = p["step_time"]["seconds_per_step"]
        name = "update" if "update" in c["programs"] else "train_step"
        bound = c["roofline"].get(name)
    out = {} if "live" not in c else {"live": c["live"], "peaks": c["peaks"], "method": c["method"]}  # rl's
    return {
        **out,
        "recipe": label,
        "topology": topo,
        "compiled_gib": c["total"] / GIB,
        "analytic_gib": analytic / GIB,
        "usable_gib": c["usable"] / GIB,
        "fits": p["fits"],
        "refused": c["refused"],
        "bound_seconds": bound["seconds"] if bound else None,
        "limited_by": bound["limited_by"] if bound else None,
        "mfu_estimate_seconds": estimate,
        "compile_seconds": c["compile_seconds"],
        "wall_seconds": round(wall, 1),
    }


def table(rows: list[dict]) -> str:
    head = (
        "| recipe | slice | compiled GiB/chip | analytic GiB/chip | analytic vs compiled | fits (usable GiB) "
        "| bound on a step | 40% MFU estimate | compile s |\n|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['recipe']} | | **does not compile**: {r['error']} | | | | | | |")
            continue
        diff = 100 * (r["analytic_gib"] - r["compiled_gib"]) / r["compiled_gib"]
        bound = f"{r['bound_seconds']:.3g} s ({r['limited_by']})" if r["bound_seconds"] is not None else "-"
        est = f"{r['mfu_estimate_seconds']:.3g} s" if r["mfu_estimate_seconds"] is not None else "-"
        fits = ("yes" if r["fits"] else "**no**") + f" ({r['usable_gib']:.1f})"
        lines.append(
            f"| {r['recipe']} | {r['topology']} | {r['compiled_gib']:.2f} | {r['analytic_gib']:.2f} | {diff:+.0f}% "
            f"| {fits} | {bound} | {est} | {r['compile_seconds']:.0f} |"
        )
    return head + "\n".join(lines) + "\n"


def provenance(command: str) -> str:
    import jax

    from importlib.metadata import version

    from machine import cpu_model

    cpu = cpu_model()

    return (
        f"Measured {datetime.date.today().isoformat()} on {cpu} ({os.cpu_count()} cores), no TPU; "
        f"jax {jax.__version__}, libtpu {version('libtpu')}. Command: `{command}`.\n\n"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*", default=None, help="recipe labels (substrings) to compile")
    ap.add_argument("--json", default=None, help="also write the rows here")
    ap.add_argument("--docs", default=str(REPO / "docs" / "tpu.md"), help="page whose compile table is replaced")
    ap.add_argument("--from-json", nargs="+", default=None, help="write the table from these runs' rows")
    args = ap.parse_args()
    command = "python benchmarks/compile_recipes.py"
    if args.from_json:
        rows = ordered([r for f in args.from_json for r in json.loads(Path(f).read_text())])
        command = (
            "python benchmarks/compile_recipes.py --only ... --json PART.json` (disjoint parts side by side), then `"
        )
        command += "python benchmarks/compile_recipes.py --from-json PART.json ..."
    else:
        rows = []
        for label, plan_args in recipes():
            if args.only and not any(s in label for s in args.only):
                continue
            p, wall = plan(plan_args)
            rows.append(row(label, p, wall))
            print(json.dumps(rows[-1]), flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    if args.only is None:
        docs = Path(args.docs)
        text = docs.read_text()
        start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
        docs.write_text(text[:start] + "\n" + provenance(command) + table(rows) + text[end:])
        print(f"wrote {docs}")


def ordered(rows: list[dict]) -> list[dict]:
    """`rows` in the recipes' order, each recipe once (a row is named by its label and slice); a recipe with no
    row, or with two, is an error: the table must list every recipe once."""
    want = []
    for label, args in recipes():
        topo = args[args.index("--topology") + 1] if "--topology" in args else None
        want.append((label, topo))
    out = []
    for label, topo in want:
        found = [r for r in rows if r["recipe"] == label and (topo is None or r.get("topology", topo) == topo)]
        if len(found) != 1:
            raise SystemExit(f"{len(found)} rows for {label} ({topo or 'its slice'}) in the --from-json files")
        out.append(found[0])
    return out


if __name__ == "__main__":
    main()
