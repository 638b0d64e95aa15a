"""configs/demo.yaml's data section works with the tokenizer `data build-tokenizer` writes, and the
held-out problems `data procedural` writes load in the evaluation reader."""

import json
from pathlib import Path

from mathjax_train.cli import main
from mathjax_train.config import TokenizerStageConfig, load_config
from mathjax_train.data.batches import check_batch
from mathjax_train.data.seqio_vocab import TokenizerVocabulary
from mathjax_train.data.sources import make_train_iterator
from mathjax_train.data.tokenizer_training import build_tokenizer

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"


def test_demo_config_draws_batches_with_the_demo_tokenizer(tmp_path):
    tok = tmp_path / "tok"
    build_tokenizer(tok, TokenizerStageConfig(vocab_size=512, examples=300))
    cfg = load_config(str(DEMO), [f"data.tokenizer={tok}"])
    vocab = TokenizerVocabulary(tok)
    assert vocab.vocab_size <= cfg.model.vocab_size
    assert (cfg.model.bos_token_id, cfg.model.eos_token_id, cfg.model.pad_token_id) == (
        vocab.bos_id,
        [vocab.eos_id],
        vocab.tokenizer.pad_id,
    )
    it = make_train_iterator(cfg, rows=4)
    for _ in range(3):
        b = next(it)
        check_batch(b, 4, cfg.train.seq_len)
        assert b["tokens"].max() < vocab.vocab_size
    assert it.stats()["dropped"] == 0


def test_procedural_command_writes_heldout_problems(tmp_path, capsys):
    out = tmp_path / "held.jsonl"
    assert main(["data", "procedural", str(out), "--count", "30", "--levels", "1", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["problems"] == 30
    from mathjax_train.data.procedural.generator import in_split
    from mathjax_train.eval.datasets import load_problems

    problems = load_problems(str(out))
    assert len(problems) == 30 and all(p.level in (1, 2) and in_split(p.question, "heldout") for p in problems)
    assert main(["data", "procedural", str(out), "--levels", "9"]) == 2
    assert "levels" in capsys.readouterr().err


def test_procedural_exclude_draws_a_set_disjoint_from_another(tmp_path, capsys):
    """A validation set from the held-out split that shares no question with the test set: the
    excluded questions are replaced by later draws, so the count still holds."""
    test, val, plain = tmp_path / "test.jsonl", tmp_path / "val.jsonl", tmp_path / "plain.jsonl"
    common = ["--levels", "1", "--templates", "math_style/gcd_lcm", "gsm_style/sharing"]
    assert main(["data", "procedural", str(test), "--count", "300", *common]) == 0
    assert main(["data", "procedural", str(plain), "--count", "200", "--seed", "1", *common]) == 0
    assert main(["data", "procedural", str(val), "--count", "200", "--seed", "1", "--exclude", str(test), *common]) == 0
    capsys.readouterr()
    questions = lambda p: [json.loads(line)["question"] for line in p.read_text().splitlines()]  # noqa: E731
    held = set(questions(test))
    assert set(questions(plain)) & held  # without exclude the two seeds share questions (a small space)
    kept = questions(val)
    assert len(kept) == 200 and not set(kept) & held
    assert set(kept) >= set(questions(plain)) - held  # the same stream, the overlap skipped
    # level-1 quadratic_roots has a few dozen held-out questions at most: 2,000 draws hold them all
    small = ["--levels", "1", "--templates", "math_style/quadratic_roots"]
    every = tmp_path / "every.jsonl"
    assert main(["data", "procedural", str(every), "--count", "2000", *small]) == 0
    assert len(set(questions(every))) < 100
    none_left = tmp_path / "none_left.jsonl"
    assert (
        main(["data", "procedural", str(none_left), "--count", "5", "--seed", "1", "--exclude", str(every), *small])
        == 2
    )
    assert "draws in a row are all in it" in capsys.readouterr().err and not none_left.exists()
