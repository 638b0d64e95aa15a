"""Command-line flags derived from config dataclasses (cli/config_flags.py): defaults come from the
dataclass alone; `--config FILE` < flags < key=value; choices, bools, lists and required fields."""

import dataclasses
import typing

import pytest

from mathjax_train.cli import build_parser
from mathjax_train.cli.config_flags import config_from_args
from mathjax_train.cli import main
from mathjax_train.config import (
    AugmentJobConfig,
    ConfigError,
    DecontaminateConfig,
    EvalConfig,
    GenerateJobConfig,
    ProblemsStageConfig,
    RftConfig,
    ServeConfig,
    TokenizerStageConfig,
)

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
    (
        "augment",
        AugmentJobConfig,
        ["--seeds", "gsm8k", "--output", "o.jsonl", "--teacher-checkpoint", "ck"],
        {"seeds": "gsm8k", "output": "o.jsonl", "teacher_checkpoint": "ck"},
    ),
    ("serve", ServeConfig, ["ck"], {"checkpoint": "ck"}),
    ("data build-tokenizer", TokenizerStageConfig, ["tok"], {}),
    ("data procedural", ProblemsStageConfig, ["p.jsonl"], {}),
]
AUGMENT = ["augment", "--seeds", "gsm8k", "--output", "o.jsonl"]


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
    assert _build([*command.split(), *argv]) == dataclasses.replace(cls(), **given)


@pytest.mark.parametrize("command,cls,argv,given", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_every_field_has_a_flag(command, cls, argv, given):
    sub = build_parser()
    for word in command.split():  # down to the (sub)command's own parser
        sub = next(a for a in sub._actions if a.choices and word in a.choices).choices[word]
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


def test_augment_flags_file_and_overrides(tmp_path):
    f = tmp_path / "aug.yaml"
    f.write_text("teacher_url: http://h:8000/v1\nteacher_model: m\nmethods: [harder]\nn: 6\ntop_p: 0.9\nseed: 3\n")
    cfg = _build([*AUGMENT, "--config", str(f), "--methods", "rephrase", "change_numbers", "--n", "8", "seed=5"])
    assert (cfg.teacher_url, cfg.teacher_model, cfg.top_p) == ("http://h:8000/v1", "m", 0.9)
    assert (cfg.methods, cfg.n, cfg.seed) == (["rephrase", "change_numbers"], 8, 5)
    assert cfg.max_tokens == AugmentJobConfig().max_tokens
    cfg = _build([*AUGMENT, "--teacher-checkpoint", "c", "--methods", "harder", "--methods", "rephrase"])
    assert cfg.methods == ["harder", "rephrase"]


def test_augment_config_is_built_from_the_job_and_shares_its_defaults():
    from mathjax_train.synth.augment import METHOD_PROMPTS, METHODS, AugmentConfig
    from mathjax_train.synth.teacher import Sampling

    assert AugmentConfig.from_job(AugmentJobConfig()) == AugmentConfig()
    assert set(METHOD_PROMPTS) == set(METHODS) == set(AugmentJobConfig().methods)
    job = _build(
        [
            *AUGMENT,
            "--teacher-checkpoint",
            "c",
            "--seed",
            "5",
            "--temperature",
            "0.8",
            "--question-max-tokens",
            "9",
            "--last-number-fallback",
            "--benchmarks",
            "gsm8k,t.jsonl",
        ]
    )
    cfg = AugmentConfig.from_job(job)
    assert cfg.question_sampling == Sampling(temperature=0.7, top_p=0.95, max_tokens=9, seed=5)
    assert cfg.solution_sampling == Sampling(temperature=0.8, top_p=0.95, max_tokens=768, seed=6)
    assert cfg.answer_fallback == "last_number" and cfg.benchmarks == ("gsm8k", "t.jsonl")


def test_augment_needs_exactly_one_teacher(capsys):
    url = ["--teacher-url", "http://h/v1", "--teacher-model", "m"]
    with pytest.raises(ConfigError, match=r"augment: --teacher-checkpoint and --teacher-url are both set"):
        _build([*AUGMENT, "--teacher-checkpoint", "c", *url])
    with pytest.raises(ConfigError, match=r"augment: give exactly one of --teacher-checkpoint CKPT or --teacher-url"):
        _build(AUGMENT)
    with pytest.raises(ConfigError, match=r"augment: --teacher-url needs --teacher-model NAME"):
        _build([*AUGMENT, "--teacher-url", "http://h/v1"])
    assert main([*AUGMENT, "--teacher-checkpoint", "c", *url]) == 2  # before any seed is read
    assert "--teacher-checkpoint and --teacher-url are both set" in capsys.readouterr().err
    with pytest.raises(ConfigError, match=r"augment: --seeds is required"):
        _build(["augment", "--output", "o", "--teacher-checkpoint", "c"])


def test_augment_choices_and_ranges_are_checked(tmp_path, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args([*AUGMENT, "--teacher-checkpoint", "c", "--methods", "rephrase", "translate"])
    assert "invalid choice: 'translate'" in capsys.readouterr().err
    f = tmp_path / "a.yaml"
    f.write_text("teacher_checkpoint: c\nmethods: [rephrase, translate]\n")
    with pytest.raises(ConfigError, match=rf"{f}: augment.methods\[1\]: 'translate' is not one of 'rephrase'"):
        _build([*AUGMENT, "--config", str(f)])
    with pytest.raises(ConfigError, match=r"augment.concurrency: must be >= 1, got 0"):
        _build([*AUGMENT, "--teacher-url", "u", "--teacher-model", "m", "--concurrency", "0"])
    with pytest.raises(ConfigError, match=r"augment.methods\[0\]: 'x' is not one of"):  # built in code
        AugmentJobConfig(seeds="s", output="o", teacher_checkpoint="c", methods=["x"]).validate()  # type: ignore[list-item]


def test_serve_flags_file_overrides_and_the_old_max_batch_name(tmp_path, capsys):
    f = tmp_path / "serve.yaml"
    f.write_text("checkpoint: from_file\nport: 9000\nengine: {page_size: 32, decode_steps: 4}\n")
    cfg = _build(["serve", "--config", str(f), "--num-slots", "8", "--no-warmup", "--quiet", "engine.decode_steps=2"])
    assert (cfg.checkpoint, cfg.port, cfg.warmup, cfg.quiet) == ("from_file", 9000, False, True)
    assert (cfg.engine.num_slots, cfg.engine.page_size, cfg.engine.decode_steps) == (8, 32, 2)
    assert cfg.engine.prefill_budget == ServeConfig().engine.prefill_budget
    assert _build(["serve", "ck", "--max-batch", "4"]).engine.num_slots == 4
    assert _build(["serve", "runs/lr=2e-5", "port=1"]).checkpoint == "runs/lr=2e-5"  # a path, not an override
    with pytest.raises(ConfigError, match=r"serve: CHECKPOINT is required"):
        _build(["serve", "--port", "0"])
    with pytest.raises(ConfigError, match=r"serve.engine.page_size must be >= 1, got 0"):
        _build(["serve", "ck", "--page-size", "0"])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "ck", "--dtype", "int8"])
    assert "invalid choice: 'int8'" in capsys.readouterr().err
