"""The README's commands cannot drift: CI runs its test command, and every `mathjax-train` example parses
against the real CLI (configs exist and their overrides apply); the smoke and demo commands run."""
import re
import shlex

import pytest

from mathjax_train.cli import build_parser
from mathjax_train.config import load_config
from train_helpers import REPO, read_metrics, run_train

README = (REPO / "README.md").read_text()
BLOCKS = re.findall(r"```bash\n(.*?)```", README, flags=re.S)


def _commands():
    text = "\n".join(BLOCKS).replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.split("  #")[0].strip()
        words = shlex.split(line) if line else []
        while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
            words = words[1:]  # VAR=value prefixes
        if "mathjax-train" in words:
            out.append(words[words.index("mathjax-train") + 1:])
    return out


def test_ci_runs_the_readme_test_command():
    setup_and_main, tests = BLOCKS[0].strip(), BLOCKS[1].strip()
    ci = [l for l in (REPO / ".ci" / "run").read_text().splitlines() if l and not l.startswith(("#", "set ", "cd "))]
    assert ci == [tests]
    setup = tests.rsplit(" && ", 1)[0]
    assert setup_and_main == f"{setup} && .venv/bin/mathjax-train demo"


@pytest.mark.parametrize("argv", _commands(), ids=lambda a: " ".join(a)[:60])
def test_readme_command_parses(argv):
    args = build_parser().parse_args(argv)
    config = getattr(args, "config", None)
    if config:
        assert (REPO / config).exists(), config
        if args.command == "train":
            load_config(str(REPO / config), args.overrides)


def test_there_are_many_examples():
    names = {a[0] for a in _commands()}
    assert {"train", "generate", "import-hf", "export-hf", "evaluate", "rft", "serve", "plan", "data"} <= names


def test_smoke_command_trains_and_loss_falls(tmp_path):
    assert ["train", "--config", "configs/smoke.yaml"] in _commands()
    run_train("configs/smoke.yaml", f"output_dir={tmp_path}")
    rows = read_metrics(tmp_path)
    assert rows[-1]["step"] == 150 and rows[-1]["loss"] < 0.9 * rows[0]["loss"]


@pytest.mark.slow
def test_demo_pipeline_runs_end_to_end(tmp_path):
    """The main job's code path, shortened (the full run's figures are in the README)."""
    from mathjax_train.demo import run_demo

    result = run_demo(str(tmp_path), ("train.steps=6", "generate.max_new_tokens=16", "checkpoint.every_steps=3"),
                      heldout_n=6)
    assert result["train_steps"] == 6 and result["accuracy_before"] == 0.0
    assert result["hf_reload"]["greedy_identical"] == "4/4" and result["hf_reload"]["max_abs_logit_diff"] < 1e-4
    assert (tmp_path / "eval_after" / "report.json").exists() and (tmp_path / "hf" / "config.json").exists()
