"""Command-line flags derived from config dataclasses (cli/config_flags.py): defaults come from the
dataclass alone; `--config FILE` < flags < key=value; choices, bools, lists and required fields."""

import dataclasses
import typing

import pytest

from mathjax_train.cli import build_parser
from mathjax_train.cli.config_flags import config_from_args
from mathjax_train.config import ConfigError, DecontaminateConfig, EvalConfig, GenerateJobConfig, RftConfig

# command, its config class, the arguments its required fields need, those fields' values
COMMANDS = [
    ("evaluate", EvalConfig, ["--checkpoint", "ck"], {"checkpoint": "ck"}),
    ("rft", RftConfig, ["--checkpoint", "ck", "--output", "o.jsonl"], {"checkpoints": ["ck"], "output": "o.jsonl"}),
    (
        "generate",
        GenerateJobConfig,
        ["--checkpoint", "ck", "--prompts", "p.jsonl", "--output", "o.jsonl"],
        {"checkpoint": "ck", "prompts": "p.jsonl", "output": "o.jsonl"},
    ),
    ("decontaminate", DecontaminateConfig, ["rows.jsonl", "--output", "clean.jsonl"], {"input": "rows.jsonl"}),
]


def _build(argv):
    return config_from_args(build_parser().parse_args(argv))


def _leaves(cls, prefix=""):
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            yield from _leaves(tp, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}"


@pytest.mark.parametrize("command,cls,argv,given", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_defaults_are_the_dataclass_defaults(command, cls, argv, given):
    assert _build([command, *argv]) == dataclasses.replace(cls(), **given)


@pytest.mark.parametrize("command,cls,argv,given", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_every_field_has_a_flag(command, cls, argv, given):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    dests = {a.dest.removeprefix("cfg:") for a in sub._actions if a.dest.startswith("cfg:")}
    assert dests == set(_leaves(cls))


def test_file_then_flags_then_overrides(tmp_path):
    f = tmp_path / "eval.yaml"
    f.write_text("checkpoint: from_file\nlimit: 7\nshots: 2\ngenerate: {temperature: 0.5, num_samples: 4}\n")
    cfg = _build(["evaluate", "--config", str(f), "--limit", "9", "--num-samples", "8", "shots=3", "generate.top_k=5"])
    assert (cfg.checkpoint, cfg.limit, cfg.shots) == ("from_file", 9, 3)
    assert (cfg.generate.temperature, cfg.generate.num_samples, cfg.generate.top_k) == (0.5, 8, 5)
    assert cfg.generate.max_new_tokens == EvalConfig().generate.max_new_tokens


def test_bools_lists_and_commas():
    cfg = _build(
        [
            "rft",
            "--checkpoint",
            "a",
            "--checkpoint",
            "b,c",
            "--output",
            "o",
            "--no-dedup-with-reference",
            "--tool-timeout",
            "2.5",
        ]
    )
    assert cfg.checkpoints == ["a", "b,c"] and cfg.dedup_with_reference is False and cfg.tool_timeout_s == 2.5
    cfg = _build(
        [
            "decontaminate",
            "in.jsonl",
            "--output",
            "x",
            "--benchmarks",
            "gsm8k,math500",
            "--benchmarks",
            "mine.jsonl",
            "--fields",
            "question,solution",
        ]
    )
    assert cfg.benchmarks == ["gsm8k", "math500", "mine.jsonl"] and cfg.fields == ["question", "solution"]


def test_choices_are_checked_for_flags_files_and_overrides(tmp_path, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["evaluate", "--checkpoint", "c", "--template", "alpaca"])
    assert "invalid choice: 'alpaca'" in capsys.readouterr().err
    f = tmp_path / "e.yaml"
    f.write_text("checkpoint: c\ntools: bash\n")
    with pytest.raises(ConfigError, match=rf"{f}: evaluate.tools: 'bash' is not one of 'none', 'python'"):
        _build(["evaluate", "--config", str(f)])
    with pytest.raises(ConfigError, match=r"evaluate.answer_fallback: 'first' is not one of"):
        _build(["evaluate", "--checkpoint", "c", "answer_fallback=first"])
    with pytest.raises(ConfigError, match=r"rft.template: 'x' is not one of"):  # built in code, then validated
        RftConfig(checkpoints=["c"], output="o", template="x").validate()  # type: ignore[arg-type]


def test_required_fields_and_bad_files_are_named(tmp_path):
    with pytest.raises(ConfigError, match=r"evaluate: --checkpoint is required \(or `checkpoint:` in --config\)"):
        _build(["evaluate", "--dataset", "math"])
    with pytest.raises(ConfigError, match=r"generate: --prompts is required"):
        _build(["generate", "--checkpoint", "c", "--output", "o"])
    with pytest.raises(ConfigError, match=r"decontaminate: INPUT is required"):
        _build(["decontaminate", "--output", "x"])
    f = tmp_path / "r.yaml"
    f.write_text("checkpoints: [c]\noutput: o\nkk: 3\n")
    with pytest.raises(ConfigError, match=rf"{f}: rft: unknown key 'kk'; valid keys: checkpoints"):
        _build(["rft", "--config", str(f)])
    with pytest.raises(ConfigError, match=r"config file not found"):
        _build(["rft", "--config", str(tmp_path / "missing.yaml")])
