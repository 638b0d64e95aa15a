"""`mathjax-train data stats` / `data build-tokenizer` through the real CLI entry point."""

import json
import shutil

import pytest

from data_fixtures import GSM_TEST, GSM_TRAIN, MATH500, MATH_TRAIN, setup_data
from hf_fixtures import write_tokenizer
from mathjax_train.cli import main
from real_data import require_data


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    return setup_data(tmp_path_factory.mktemp("data"))


def _stats(capsys, *args):
    code = main(["data", "stats", *args])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 else None), err


def _common(paths):
    return [f"data.tokenizer={paths['tok']}", f"data.data_dir={paths['manual']}", f"data.jsonl=[{paths['synth']}]"]


def test_stats_counts_each_split(paths, capsys):
    for mixture, split, want in (
        ("gsm8k_sft", "train", {"gsm8k_sft": len(GSM_TRAIN)}),
        ("gsm8k_sft", "test", {"gsm8k_sft": len(GSM_TEST)}),
        ("math_sft", "math500", {"math_sft": len(MATH500)}),
        ("gsm8k_math", "train", {"gsm8k_sft": len(GSM_TRAIN), "math_sft": len(MATH_TRAIN)}),
        ("gsm8k_math_synthetic", "train", {"gsm8k_sft": len(GSM_TRAIN), "math_sft": len(MATH_TRAIN), "synthetic": 40}),
    ):
        code, s, err = _stats(capsys, "--mixture", mixture, "--split", split, *_common(paths))
        assert code == 0, err
        assert {t: v["examples"] for t, v in s["tasks"].items()} == want
        assert s["examples"] == sum(want.values()) == s["packed_examples"] + s["dropped"]
        assert s["tokens"] == sum(v["tokens"] for v in s["tasks"].values())
        assert 0 < s["packing_efficiency"] <= 1 and s["target_tokens"] < s["tokens"]
        assert (s["mixture"], s["split"], s["seq_len"]) == (mixture, split, 512)
    # the MATH row whose solution boxes nothing is kept as written, and counted
    code, s, _ = _stats(capsys, "--mixture", "math_sft", *_common(paths))
    assert s["no_answer"] == 1 and s["tasks"]["math_sft"]["no_answer"] == 1


def test_stats_overflow_and_procedural_cap(paths, capsys):
    code, s, _ = _stats(
        capsys, "--mixture", "synthetic", "--rows", "2", *_common(paths), "train.seq_len=180", "data.overflow=drop"
    )
    assert code == 0 and s["dropped"] > 0 and s["truncated"] == 0 and s["rows"] == 2
    code, _, err = _stats(capsys, "--mixture", "procedural_mix", *_common(paths))
    assert code == 2 and "--max-examples" in err
    code, s, _ = _stats(
        capsys, "--mixture", "procedural_mix", "--max-examples", "60", "--split", "heldout", *_common(paths)
    )
    assert code == 0 and s["examples"] == 60 and set(s["tasks"]) == {"procedural_gsm", "procedural_math"}


def test_stats_errors_are_clear(paths, capsys, tmp_path):
    code, _, err = _stats(capsys, "--mixture", "nope", *_common(paths))
    assert code == 2 and "data.mixture: 'nope' is not a mixture or task" in err
    code, _, err = _stats(capsys, "--mixture", "gsm8k_sft", f"data.data_dir={paths['manual']}")
    assert code == 2 and "data.tokenizer" in err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "solution": "s", "answer": "1"}\n{"question": "q", "answer": "1"}\n')
    code, _, err = _stats(capsys, "--mixture", "synthetic", f"data.tokenizer={paths['tok']}", f"data.jsonl=[{bad}]")
    assert code == 2 and f"{bad}:2: field 'solution': missing required field" in err
    code, _, err = _stats(capsys, "--mixture", "gsm8k_sft", *_common(paths), "data.bogus=1")
    assert code == 2 and "unknown key 'bogus'" in err


def test_model_vocab_comes_from_the_tokenizer_unless_configured(paths, capsys, tmp_path):
    """A tokenizer larger than the old default vocab (32000, SmolLM2 has 49152): data stats and a
    from-scratch model take its size; a model.vocab_size that is set and too small is an error."""
    from tokenizers import Tokenizer

    from mathjax_train.config import ConfigError, load_config
    from mathjax_train.train.trainer import resolve_model_config

    big = tmp_path / "big_tok"
    shutil.copytree(paths["tok"], big)
    tok = Tokenizer.from_file(str(big / "tokenizer.json"))
    tok.add_tokens([f"<extra_{i}>" for i in range(33000)])
    tok.save(str(big / "tokenizer.json"))
    size = tok.get_vocab_size()
    common = ["--mixture", "gsm8k_sft", f"data.tokenizer={big}", f"data.data_dir={paths['manual']}"]
    code, s, err = _stats(capsys, *common)
    assert code == 0 and s["tasks"]["gsm8k_sft"]["examples"] == len(GSM_TRAIN), err
    code, _, err = _stats(capsys, *common, "model.vocab_size=32000")
    assert code == 2 and f"model.vocab_size (32000) is smaller than the tokenizer's ({size}, {big})" in err

    cfg = load_config(None, ["data.mixture=gsm8k_sft", f"data.tokenizer={big}"])
    assert cfg.model.vocab_size == 0 and resolve_model_config(cfg).vocab_size == size
    cfg = load_config(None, ["data.mixture=gsm8k_sft", f"data.tokenizer={big}", "model.vocab_size=40000"])
    assert resolve_model_config(cfg).vocab_size == 40000
    with pytest.raises(ConfigError, match="model.vocab_size: set it for data.mixture=toy_copy"):
        resolve_model_config(load_config(None, []))


def test_build_tokenizer_command(tmp_path, capsys):
    assert main(["data", "build-tokenizer", str(tmp_path / "tok"), "--vocab-size", "300", "--examples", "200"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["vocab_size"] == 300 and (tmp_path / "tok/tokenizer.json").exists()


@pytest.mark.realdata
def test_real_benchmark_counts(tmp_path, capsys):
    root = require_data()
    write_tokenizer(tmp_path / "tok")
    common = [f"data.tokenizer={tmp_path / 'tok'}", f"data.data_dir={root}"]
    got, no_answer = {}, {}
    for mixture, split in (
        ("gsm8k_sft", "train"),
        ("gsm8k_sft", "test"),
        ("math_sft", "train"),
        ("math_sft", "test"),
        ("math_sft", "math500"),
    ):
        code, s, err = _stats(capsys, "--mixture", mixture, "--split", split, *common)
        assert code == 0, err
        got[(mixture, split)] = s["tasks"][mixture]["examples"]
        no_answer[(mixture, split)] = s["no_answer"]
        assert s["examples"] == s["packed_examples"] + s["dropped"]
    assert got == {
        ("gsm8k_sft", "train"): 7473,
        ("gsm8k_sft", "test"): 1319,
        ("math_sft", "train"): 7500,
        ("math_sft", "test"): 5000,
        ("math_sft", "math500"): 500,
    }
    # only the two MATH train rows with an empty \boxed{} lack an answer line
    assert no_answer == {k: 2 if k == ("math_sft", "train") else 0 for k in got}
