"""The README's main job: train a small decoder from scratch on procedural math, on CPU, and show it.

Steps: train a byte-level BPE tokenizer on procedural text; write held-out procedural problems;
save the untrained model (step 0) and evaluate its greedy accuracy; train on the procedural
mixture (configs/demo.yaml); evaluate again; export to Hugging Face format and reload it with
`transformers`, checking that its logits and greedy tokens match ours. Everything lands under
OUTPUT_DIR and a summary is printed as JSON. Re-running resumes the training where it stopped.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from etils import epath

from mathjax_train.config import EvalConfig, GenerateConfig, load_config

DEMO_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"


def _log(msg: str) -> None:
    print(f"[demo] {msg}", file=sys.stderr, flush=True)


def write_heldout(path: epath.Path, n: int, levels, seed: int, templates=None) -> int:
    """`n` held-out procedural problems (disjoint from train by construction) as eval JSONL."""
    from mathjax_train.data import procedural
    from mathjax_train.data.jsonl_source import write_jsonl

    rows = ({"id": r["id"], "question": r["question"], "answer": r["answer"], "level": r["level"],
             "subject": r["source"].split("/", 1)[1]}
            for r in procedural.iterate(seed=seed, split="heldout", stop=n, levels=levels, templates=templates))
    return write_jsonl(path, rows)


def _evaluate(train_dir: epath.Path, heldout: epath.Path, out: epath.Path, cfg) -> dict:
    from mathjax_train.eval.harness import evaluate

    ecfg = EvalConfig(checkpoint=str(train_dir), dataset=str(heldout), template=cfg.data.template,
                      output_dir=str(out), answer_fallback="none",
                      generate=GenerateConfig(max_new_tokens=cfg.generate.max_new_tokens, batch_size=16))
    result = evaluate(ecfg, progress=False)
    return result.report


def check_hf_reload(train_dir: epath.Path, hf_dir: epath.Path, prompts: list[str], new_tokens: int = 24) -> dict:
    """Export, reload with transformers, compare logits (fp32) and greedy tokens with ours."""
    import numpy as np
    import torch
    import transformers

    from mathjax_train.convert.export_hf import export_hf
    from mathjax_train.config import EngineConfig
    from mathjax_train.infer import SamplingParams
    from mathjax_train.infer.engine import Engine
    from mathjax_train.infer.loading import load_for_inference
    from mathjax_train.model import Decoder

    export_hf(train_dir, hf_dir, dtype="float32")
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
        a = c.token_ids
        with torch.no_grad():
            b = hf.generate(torch.tensor([p]), max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                            do_sample=False, pad_token_id=tok.pad_token_id)[0, len(p):].tolist()
        same += a == b
    return {"hf_dir": str(hf_dir), "max_abs_logit_diff": max_diff, "greedy_identical": f"{same}/{len(ids)}"}


def run_demo(output_dir: str = "runs/demo", overrides: tuple[str, ...] = (), heldout_n: int = 200) -> dict:
    from mathjax_train.data.tokenizer_training import build_tokenizer
    from mathjax_train.train.trainer import train

    out = epath.Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok_dir, train_dir, heldout = out / "tokenizer", out / "train", out / "heldout.jsonl"
    cfg = load_config(str(DEMO_CONFIG), [f"output_dir={train_dir}", f"data.tokenizer={tok_dir}", *overrides])
    t0 = time.time()
    if not (tok_dir / "tokenizer.json").exists():
        info = build_tokenizer(tok_dir, vocab_size=cfg.model.vocab_size, template=cfg.data.template,
                               ending=cfg.data.ending, levels=tuple(cfg.data.procedural_levels))
        _log(f"tokenizer: {info['vocab_size']} tokens from {info['corpus_texts']} texts -> {tok_dir}")
    write_heldout(heldout, heldout_n, cfg.data.procedural_levels, seed=cfg.data.seed,
                  templates=cfg.data.procedural_templates or None)

    _log("saving the untrained model (step 0) and evaluating it")
    train(cfg, max_steps_this_run=0, log=_log)
    before = _evaluate(train_dir, heldout, out / "eval_before", cfg)
    _log(f"accuracy before training: {before['accuracy']:.3f}")

    _log(f"training {cfg.train.steps} steps of {cfg.train.batch_size} x {cfg.train.seq_len} tokens")
    t_train = time.time()
    summary = train(cfg, log=_log)
    train_s = time.time() - t_train
    rows = [json.loads(line) for line in (train_dir / "metrics.jsonl").read_text().splitlines()]

    after = _evaluate(train_dir, heldout, out / "eval_after", cfg)
    _log(f"accuracy after training: {after['accuracy']:.3f}")

    prompts = [json.loads(line)["question"] for line in heldout.read_text().splitlines()[:4]]
    from mathjax_train.data.templates import get_template

    template = get_template(cfg.data.template)
    hf = check_hf_reload(train_dir, out / "hf", [template.format_prompt(p) for p in prompts])
    result = {
        "heldout_problems": heldout_n, "accuracy_before": before["accuracy"], "accuracy_after": after["accuracy"],
        "per_subject_after": {k: v["accuracy"] for k, v in after.get("by_subject", {}).items()},
        "train_steps": summary["step"], "train_seconds_this_run": round(train_s, 1),
        "first_loss": rows[0]["loss"], "final_loss": rows[-1]["loss"],
        "tokens_per_second": round(sum(r["tokens_per_second"] for r in rows[-5:]) / min(len(rows), 5), 1),
        "hf_reload": hf, "total_seconds": round(time.time() - t0, 1), "output_dir": str(out)}
    (out / "demo_summary.json").write_text(json.dumps(result, indent=2))
    return result
