"""The README's and docs' commands cannot drift: CI runs the README's test command, and every `mathjax-train`
example in README.md, docs/*.md and benchmarks/RESULTS.md parses against the real CLI (configs exist and their
overrides apply); the smoke and demo commands run."""

import re
import shlex

import pytest

from mathjax_train.cli import build_parser
from mathjax_train.cli.config_flags import config_from_args
from mathjax_train.config import load_config
from train_helpers import REPO, read_metrics, run_train

README = (REPO / "README.md").read_text()
BLOCKS = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
DOCS = [*sorted((REPO / "docs").glob("*.md")), REPO / "benchmarks" / "RESULTS.md"]
DOC_BLOCKS = [b for d in DOCS for b in re.findall(r"```bash\n(.*?)```", d.read_text(), flags=re.S)]


def _commands(blocks=BLOCKS):
    text = "\n".join(blocks).replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.split("  #")[0].strip()
        words = shlex.split(line) if line else []
        while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
            words = words[1:]  # VAR=value prefixes
        if "mathjax-train" in words:
            out.append(words[words.index("mathjax-train") + 1 :])
    return out


def test_ci_runs_the_readme_test_command():
    setup_and_main, tests = BLOCKS[0].strip(), BLOCKS[1].strip()
    ci = [l for l in (REPO / ".ci" / "run").read_text().splitlines() if l and not l.startswith(("#", "set ", "cd "))]
    slow = tests.rsplit(" && ", 1)[1].replace('-m "not slow"', "-m slow")
    assert ci == [tests, slow] and f"`{slow}`" in README  # the README's command, then the slow set it names
    setup = tests.rsplit(" && ", 1)[0]
    assert setup_and_main == f"{setup} && .venv/bin/mathjax-train demo"


@pytest.mark.parametrize("argv", _commands(BLOCKS + DOC_BLOCKS), ids=lambda a: " ".join(a)[:60])
def test_readme_command_parses(argv):
    args = build_parser().parse_args(argv)
    config = getattr(args, "config", None)
    if config:
        assert (REPO / config).exists(), config
        args.config = str(REPO / config)
        if args.command == "train":
            load_config(args.config, args.overrides)
    if hasattr(args, "config_cls"):  # flags derived from a config dataclass: the config builds and validates
        config_from_args(args)


def test_there_are_many_examples():
    names = {a[0] for a in _commands()}
    assert {"train", "generate", "import-hf", "export-hf", "evaluate", "rft", "serve", "plan", "data"} <= names


def test_smoke_command_trains_and_loss_falls(tmp_path):
    assert ["train", "--config", "configs/smoke.yaml"] in _commands()
    run_train("configs/smoke.yaml", f"output_dir={tmp_path}")
    rows = read_metrics(tmp_path)
    assert rows[-1]["step"] == 150 and rows[-1]["loss"] < 0.9 * rows[0]["loss"]


# configs/pipeline_demo.yaml itself, shrunk: every stage runs, the summary and report are written
TINY_DEMO = (
    "stages.heldout.count=8",
    "stages.validation.count=8",
    "stages.seed.count=64",
    "stages.questions.count=8",
    "stages.sft.sizes=[32,64]",
    "stages.rft.max_new_tokens=24",
    "stages.retrain.train.steps=2",
    "stages.continued.train.steps=2",
    "stages.evaluate.sampled.num_samples=4",
    "stages.evaluate.sampled.max_new_tokens=24",
    *(f"stages.{s}.eval.generate.max_new_tokens=24" for s in ("evaluate_init", "sft", "evaluate", "evaluate_after")),
)


@pytest.mark.slow
def test_demo_pipeline_runs_end_to_end(tmp_path):
    """The main job's code path, shortened (the full run's figures are in the README)."""
    import json

    from mathjax_train.demo import run_demo

    result = run_demo(str(tmp_path), TINY_DEMO)
    assert result["accuracy_before"] == 0.0 and result["heldout_problems"] == 8
    assert result["hf_reload"]["greedy_identical"] == "4/4" and result["hf_reload"]["max_abs_logit_diff"] < 1e-4
    assert result["scaling_fit"]["sizes"] == [32, 64] and len(result["scaling_fit"]["accuracies"]) == 2
    assert set(result["pass_at_k"]) == {"1", "2", "4"} and result["rft"]["questions"] == 8
    assert result["rft"]["samples"] == 8 * 8  # k paths per question
    d = result["rft_minus_sft"]
    assert d["problems"] == 8 and d["interval"][0] <= d["difference"] <= d["interval"][1]
    questions = lambda name: {  # noqa: E731
        json.loads(line)["question"] for line in (tmp_path / name / "problems.jsonl").read_text().splitlines()
    }
    assert questions("validation") and not questions("validation") & questions("heldout")  # the GRPO demo's chooser
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert all(rec["status"] == "done" for rec in manifest["stages"].values()) and len(manifest["stages"]) == 15
    report = (tmp_path / "report.md").read_text()
    assert f"| SFT + RFT (retrained on seed + kept paths) | {100 * result['accuracy_rft']:.1f}%" in report
    assert f"same steps (control) | {100 * result['accuracy_continued_sft']:.1f}%" in report
    c = result["rft_minus_continued_sft"]
    assert c["gained"] - c["lost"] == round(c["difference"] * 8)  # paired over the same 8 problems
    fams = result["by_family"]  # the per-family diagnosis, over the same held-out problems and kept paths
    assert sum(f["heldout"] for f in fams.values()) == 8 and "## Per family" in report
    selected = [json.loads(line) for line in (tmp_path / "select" / "selected.jsonl").read_text().splitlines()]
    assert sum(f["kept"] for f in fams.values()) == sum(r["origin"] == "sampled" for r in selected)
    assert all(set(f["accuracy"]) <= {"sft", "retrain", "continued"} for f in fams.values())
    for png in ("accuracy_per_stage.png", "pass_at_k.png", "sft/scaling.png"):
        assert (tmp_path / png).stat().st_size > 1000, png
    assert json.loads((tmp_path / "demo_summary.json").read_text())["accuracy_sft"] == result["accuracy_sft"]
    again = run_demo(str(tmp_path), TINY_DEMO)  # every stage is done: nothing re-runs, the figures stay
    assert {k: again[k] for k in ("accuracy_sft", "accuracy_rft", "scaling_fit")} == {
        k: result[k] for k in ("accuracy_sft", "accuracy_rft", "scaling_fit")
    }
    assert json.loads((tmp_path / "manifest.json").read_text())["stages"] == manifest["stages"]  # none re-ran
