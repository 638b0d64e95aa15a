"""The README's main job: the papers' loop in miniature, on CPU, as one pipeline (configs/pipeline_demo.yaml).

A small decoder learns procedural math from scratch on a limited seed set; it is evaluated (first
answer, pass@k, maj@k), samples paths on new training questions, the verified distinct ones are
kept and the model retrained on seed + kept paths (RFT), evaluated again; SFT at four seed-set sizes
gives the log-linear data-scaling fit; the final model is exported to HF and reloaded with
`transformers`. Writes RUN_DIR/demo_summary.json and RUN_DIR/report.md (demo/report.py); re-running
resumes at the first unfinished stage (pipeline/runner.py).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from etils import epath

DEMO_PIPELINE = Path(__file__).resolve().parents[2] / "configs" / "pipeline_demo.yaml"
SUMMARY_FILE = "demo_summary.json"


def check_hf_reload(train_dir: str, hf_dir: str, prompts: list[str], new_tokens: int = 24) -> dict:
    """Reload an exported HF directory with transformers; compare logits (fp32) and greedy tokens with ours."""
    import numpy as np
    import torch
    import transformers

    from mathjax_train.config import EngineConfig
    from mathjax_train.infer import SamplingParams
    from mathjax_train.infer.engine import Engine
    from mathjax_train.infer.loading import load_for_inference
    from mathjax_train.model import Decoder

    hf = transformers.AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype=torch.float32).eval()
    tok = transformers.AutoTokenizer.from_pretrained(str(hf_dir))
    ours = load_for_inference(train_dir, dtype="float32")
    ids = [tok(p).input_ids for p in prompts]
    assert ids[0] == ours.tokenizer.encode(prompts[0]), "HF tokenizer and ours disagree"
    with torch.no_grad():
        ref = hf(torch.tensor([ids[0]])).logits.numpy()
    mine, _ = Decoder(ours.cfg).apply({"params": ours.params}, np.asarray([ids[0]], np.int32))
    max_diff = float(np.max(np.abs(np.asarray(mine) - ref)))
    engine = Engine(ours, EngineConfig(num_slots=len(ids)), max_seq_len=max(map(len, ids)) + new_tokens)
    greedy = engine.generate(ids, SamplingParams(max_tokens=new_tokens, ignore_eos=True), [[0]] * len(ids))
    same = 0
    for p, (c,) in zip(ids, greedy):
        with torch.no_grad():
            b = hf.generate(
                torch.tensor([p]),
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
                pad_token_id=tok.pad_token_id,
            )[0, len(p) :].tolist()
        same += c.token_ids == b
    return {"hf_dir": str(hf_dir), "max_abs_logit_diff": max_diff, "greedy_identical": f"{same}/{len(ids)}"}


def summarize(manifest: dict) -> dict:
    """The figures the issue asks for, from the manifest's stage metrics and the evaluation files.
    Models by their evaluate label (the stage that made them): sft, retrain (RFT), continued (the
    control, when the pipeline has it), init."""
    from mathjax_train.demo.diagnosis import by_family
    from mathjax_train.eval.metrics import binomial_interval, paired_by_problem
    from mathjax_train.eval.results import first_correct

    st = manifest["stages"]
    evaluated: dict[str, dict] = {}
    greedy: dict[str, dict[str, bool]] = {}
    for name in ("evaluate_init", "evaluate", "evaluate_after"):
        for label, m in st[name]["metrics"].items():
            evaluated[label] = m
            greedy[label] = first_correct(st[name]["outputs"][f"{label}.greedy"]["path"])

    def paired(a: str, b: str) -> dict:  # every model is graded on the same held-out problems
        return paired_by_problem(greedy[a], greedy[b])

    def interval(label: str) -> list[float]:
        m = evaluated[label]["greedy"]
        return binomial_interval(round(m["accuracy"] * m["problems"]), m["problems"])

    sft = evaluated["sft"]
    sample, select, scaling = st["rft"]["metrics"], st["select"]["metrics"], st["sft"]["metrics"]
    kept = select["sampled_paths_per_question"] or {"mean": 0.0}
    out = {
        "heldout_problems": sft["greedy"]["problems"],
        "accuracy_before": evaluated["init"]["greedy"]["accuracy"],
        "accuracy_sft": sft["greedy"]["accuracy"],
        "accuracy_rft": evaluated["retrain"]["greedy"]["accuracy"],
        "intervals": {"before": interval("init"), "sft": interval("sft"), "rft": interval("retrain")},
        "rft_minus_sft": paired("sft", "retrain"),
        "pass_at_k": sft["sampled"]["pass@k"],
        "maj_at_k": sft["sampled"]["maj@k"],
        "rft": {
            "questions": sample["questions_in_shard"],
            "samples": sample["samples"],
            "verified_distinct_kept": sample["kept_samples"],
            "kept_for_retraining": select["rows"],
            "questions_with_a_kept_path": select["questions"],
            "paths_kept_per_question": round(select["rows"] / sample["questions_in_shard"], 3),
            "paths_per_question_with_one": kept["mean"],
            "rejected": select["rejected"],
            "sampler_rejected": sample["rejected"],
        },
        "scaling_fit": {
            "sizes": scaling["sizes"],
            "accuracies": scaling["accuracy"],
            "slope": scaling["slope"],
            "r2": scaling["r2"],
            "gain_per_doubling": scaling["gain_per_doubling"],
        },
        "stage_seconds": {name: rec.get("seconds") for name, rec in st.items()},
    }
    if {"heldout", "rft", "select"} <= set(st):
        models: dict[str, dict[str, bool]] = {k: greedy[k] for k in ("sft", "retrain", "continued") if k in greedy}
        out["by_family"] = by_family(
            st["heldout"]["outputs"]["problems"]["path"],
            models,
            st["rft"]["outputs"]["samples"]["path"],
            st["select"]["outputs"]["output"]["path"],
        )
    if "continued" in evaluated:  # the control: SFT continued on the seed set alone for the retraining's steps
        out["accuracy_continued_sft"] = evaluated["continued"]["greedy"]["accuracy"]
        out["intervals"]["continued_sft"] = interval("continued")
        out["rft_minus_continued_sft"] = paired("continued", "retrain")
    return out


def run_and_read(config: str, output_dir: str, overrides: tuple[str, ...] = ()):
    """Run (or resume) pipeline `config` under `output_dir`; returns the pipeline and its manifest."""
    from mathjax_train.parallel import compile_cache
    from mathjax_train.pipeline import manifest as mf
    from mathjax_train.pipeline.runner import run_pipeline
    from mathjax_train.pipeline.spec import load_pipeline

    compile_cache.enable()  # the loop compiles the same training and sampling programs for each model it makes
    pipe = load_pipeline(config, [f"run_dir={output_dir}", *overrides])
    run_pipeline(pipe)
    return pipe, mf.read(pipe.run_dir)


def run_demo(output_dir: str = "runs/demo", overrides: tuple[str, ...] = (), config: str | None = None) -> dict:
    """Run (or resume) the demo pipeline under `output_dir`; returns and writes the summary and report."""
    from mathjax_train.demo.report import write_report

    t0 = time.time()
    pipe, manifest = run_and_read(str(config or DEMO_PIPELINE), output_dir, overrides)
    summary = summarize(manifest)

    from mathjax_train.data.templates import get_template

    export = pipe.stage("export")
    heldout = epath.Path(pipe.stage("heldout").outputs["problems"]).read_text().splitlines()[:4]
    template = get_template(pipe.stage("evaluate").cfg.eval.template)
    prompts = [template.format_prompt(json.loads(line)["question"]) for line in heldout]
    summary["hf_reload"] = check_hf_reload(export.cfg.checkpoint, export.outputs["hf_dir"], prompts)
    summary["seconds"] = round(time.time() - t0, 1)
    summary["run_dir"] = pipe.run_dir
    out = epath.Path(pipe.run_dir)
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
    summary["report"] = write_report(summary, manifest, pipe.run_dir)
    return summary
