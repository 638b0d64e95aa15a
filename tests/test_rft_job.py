"""The rft job end to end on tiny checkpoints: rows, provenance, pooling, resume, shards + merge, tools."""

import json

import pytest

from forced_model import EOS, make_forced_checkpoint, write_jsonl
from hf_fixtures import import_random_model
from mathjax_train.cli import main
from mathjax_train.data.jsonl_source import JsonlFormatError, read_sft_jsonl
from mathjax_train.data.procedural import iterate
from mathjax_train.grading.calculator import first_bad_annotation
from mathjax_train.synth.questions import load_questions
from mathjax_train.synth.rft_output import read_rows
from real_data import DATA as REAL_DATA, require_data

COMMON = ["--k", "3", "--temperature", "0.7", "--max-new-tokens", "12", "--batch-size", "6", "--no-progress"]


@pytest.fixture(scope="module")
def random_ckpt(tmp_path_factory):
    d = tmp_path_factory.mktemp("rft_random")
    return import_random_model(d, seed=1)[1]


def run(capsys, *args) -> dict:
    capsys.readouterr()
    assert main(["rft", *args]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_procedural_rft_resume_shards_and_merge(random_ckpt, tmp_path, capsys):
    out = tmp_path / "rft.jsonl"
    args = ["--checkpoint", str(random_ckpt), "--dataset", "procedural", "--limit", "5", *COMMON]
    stats = run(capsys, *args, "--output", str(out))
    problems = list(iterate(seed=0, split="train", stop=5))
    assert stats["processed"] == 5 and stats["samples"] == 15 and stats["sampled_tokens"] > 0
    assert sum(stats["rejected"].values()) + stats["kept_samples"] == 15
    assert stats["output_stats"]["questions"] == 5
    rows = lines(out)
    # the reference solution is always kept, first, with the question's own fields
    originals = [r for r in rows if r["origin"] == "original"]
    assert [(r["question"], r["solution"], r["answer"], r["source"]) for r in originals] == [
        (p["question"], p["solution"], p["answer"], p["source"]) for p in problems
    ]
    assert [r["question_index"] for r in rows if r["path_index"] == 0] == [0, 1, 2, 3, 4]
    sft = list(read_sft_jsonl(out))
    assert len(sft) == len(rows) and all(r["k"] == 3 and r["tools"] == "none" for r in sft)

    # an interrupted run: the last question's rows are torn; a re-run redoes only that question
    full = out.read_bytes()
    out.write_bytes(full[:-40])
    again = run(capsys, *args, "--output", str(out))
    assert (again["already_done"], again["processed"]) == (4, 1)
    assert out.read_bytes() == full
    assert run(capsys, *args, "--output", str(out))["processed"] == 0

    # two hosts, each its shard, then merge: the same rows as the single run (seeds ignore sharding)
    sharded = tmp_path / "sharded.jsonl"
    for i in (0, 1):
        s = run(capsys, *args, "--output", str(sharded), "--shard-index", str(i), "--num-shards", "2")
        assert s["questions_in_shard"] == (3 if i == 0 else 2)
        assert (tmp_path / f"sharded.jsonl.shard-{i}-of-2.done").exists()
    capsys.readouterr()
    assert main(["rft-merge", "--output", str(sharded), "--num-shards", "2"]) == 0
    assert lines(sharded) == rows

    # resuming with other settings is refused, naming what changed
    assert main(["rft", *args, "--output", str(out), "--temperature", "0.9"]) == 2
    assert "temperature: 0.7 -> 0.9" in capsys.readouterr().err


def test_merge_needs_every_shard_and_output_errors_name_the_line(tmp_path, capsys):
    assert main(["rft-merge", "--output", str(tmp_path / "x.jsonl"), "--num-shards", "2"]) == 2
    assert "x.jsonl.shard-0-of-2" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question_id": "a", "question_index": 0, "path_index": 0, "paths_total": 1}\n{oops\n')
    with pytest.raises(JsonlFormatError, match="bad.jsonl:2"):
        read_rows(bad)


ORIGINAL_SAME = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nShe sold 48+24 = <<48+24=72>>72 clips.\n#### 72"
ORIGINAL_OTHER = "Each box has 12, and there are 6 boxes: 6*12 = <<6*12=72>>72.\n#### 72"
SOL_A = "Half of 48 is <<48/2=24>>24.\nAltogether <<48+24=72>>72.\n#### 72"
SOL_B = "April and May: 48 + 48/2 = <<48+48/2=72>>72.\n#### 72"
CODE = "```python\nprint(48 + 48 // 2)\n```\n"
OUT, ANS = "```output\n72\n```\n", "The answer is \\boxed{72}."


@pytest.fixture(scope="module")
def forced_pair(tmp_path_factory):
    """Two checkpoints that answer every question (prompt ending in ':') with a fixed solution."""
    a = make_forced_checkpoint(tmp_path_factory.mktemp("a"), {":": SOL_A, SOL_A: EOS}, [SOL_A])
    b = make_forced_checkpoint(tmp_path_factory.mktemp("b"), {":": SOL_B, SOL_B: EOS}, [SOL_B])
    return a, b


def questions(tmp_path):
    return write_jsonl(
        tmp_path / "q.jsonl",
        [
            {"id": "same", "question": "Clips in April and May?", "solution": ORIGINAL_SAME, "answer": "72"},
            {"id": "other", "question": "Boxes of twelve?", "solution": ORIGINAL_OTHER, "answer": 72, "level": 2},
            {"id": "ten", "question": "Ten?", "solution": "#### 10", "answer": "10", "source": "mine"},
        ],
    )


def test_pooled_checkpoints_keep_verified_distinct_paths_with_provenance(forced_pair, tmp_path, capsys):
    a, b = forced_pair
    out = tmp_path / "pooled.jsonl"
    stats = run(
        capsys,
        "--checkpoint",
        str(a),
        "--checkpoint",
        str(b),
        "--dataset",
        str(questions(tmp_path)),
        "--template",
        "question_answer",
        "--output",
        str(out),
        *COMMON,
    )
    got = [(r["question_id"], r["origin"], r["solution"], r["checkpoint"], r["sample_index"]) for r in lines(out)]
    assert got == [
        ("same", "original", ORIGINAL_SAME, None, None),  # checkpoint a's path repeats the original's equations
        ("same", "sampled", SOL_B, str(b), 0),
        ("other", "original", ORIGINAL_OTHER, None, None),
        ("other", "sampled", SOL_A, str(a), 0),
        ("other", "sampled", SOL_B, str(b), 0),
        ("ten", "original", "#### 10", None, None),
    ]
    assert stats["rejected"] == {
        "empty": 0,
        "no_answer": 0,
        "wrong_answer": 6,
        "bad_annotation": 0,
        "bad_arithmetic": 0,
        "duplicate": 9,
    }
    assert stats["output_stats"]["sampled_paths_histogram"] == {"0": 1, "1": 1, "2": 1}
    rows = list(read_sft_jsonl(out))
    assert rows[1]["source"] == "rft/jsonl" and rows[5]["source"] == "mine" and rows[3]["level"] == 2
    assert rows[1]["temperature"] == 0.7 and isinstance(rows[1]["seed"], int) and rows[1]["answer"] == "72"


def test_unseen_references_neither_dedup_nor_train(forced_pair, tmp_path, capsys):
    """--no-dedup-with-reference keeps a path that repeats the reference's equations; pooling with
    include_references=False then writes the sampled paths only, numbered from 0."""
    from mathjax_train.synth.rft_pool import pool_files

    a, _ = forced_pair
    out = tmp_path / "unseen.jsonl"
    run(
        capsys,
        "--checkpoint",
        str(a),
        "--dataset",
        str(questions(tmp_path)),
        "--template",
        "question_answer",
        "--output",
        str(out),
        "--no-dedup-with-reference",
        *COMMON,
    )
    got = [(r["question_id"], r["origin"], r["solution"]) for r in lines(out)]
    assert ("same", "sampled", SOL_A) in got and ("other", "sampled", SOL_A) in got
    pooled = tmp_path / "pooled.jsonl"
    stats = pool_files([str(out)], str(pooled), include_references=False)
    rows = lines(pooled)
    assert [(r["question_id"], r["solution"], r["path_index"], r["paths_total"]) for r in rows] == [
        ("same", SOL_A, 0, 1),
        ("other", SOL_A, 0, 1),
    ]
    assert stats["questions"] == 2 and read_rows(pooled)[1] is False  # a valid rft file, nothing cut
    pool_files([str(out)], str(tmp_path / "refs.jsonl"))  # with references: they are written and seed dedup
    assert [(r["question_id"], r["origin"]) for r in lines(tmp_path / "refs.jsonl")] == [
        ("same", "original"),
        ("other", "original"),
        ("other", "sampled"),
        ("ten", "original"),
    ]


def test_rft_with_tools_keeps_executed_code_paths(tmp_path_factory, tmp_path, capsys):
    stop = "```output"
    ckpt = make_forced_checkpoint(
        tmp_path_factory.mktemp("tools"), {":": CODE, CODE: stop, OUT: ANS, ANS: EOS}, [CODE, stop, OUT, ANS]
    )
    out = tmp_path / "tools.jsonl"
    stats = run(
        capsys,
        "--checkpoint",
        str(ckpt),
        "--dataset",
        str(questions(tmp_path)),
        "--template",
        "question_answer",
        "--tools",
        "python",
        "--output",
        str(out),
        *COMMON,
    )
    sampled = [r for r in lines(out) if r["origin"] == "sampled"]
    assert [(r["question_id"], r["solution"], r["tool_calls"]) for r in sampled] == [
        ("same", CODE + OUT + ANS, 1),
        ("other", CODE + OUT + ANS, 1),
    ]
    assert stats["rejected"]["wrong_answer"] == 3 and stats["rejected"]["duplicate"] == 4


@pytest.mark.realdata
def test_real_train_questions_and_annotations():
    require_data()
    gsm = load_questions("gsm8k", "train", data_dir=str(REAL_DATA))
    assert len(gsm) == 7473 and gsm[0].answer == "72" and gsm[0].solution.endswith("#### 72")
    # every reference solution's calculator annotations pass the checker RFT applies to samples
    bad = [(q.id, first_bad_annotation(q.solution)) for q in gsm if first_bad_annotation(q.solution)]
    assert bad == []
    math = load_questions("math", "train", data_dir=str(REAL_DATA))
    assert len(math) == 7500 and sum(not q.answer for q in math) == 2  # counted as skipped by rft
    with pytest.raises(ValueError, match="train split only"):
        load_questions("gsm8k", "test", data_dir=str(REAL_DATA))


@pytest.mark.slow
def test_rft_output_trains_through_the_synthetic_mixture(random_ckpt, tmp_path, capsys):
    """tiny checkpoint -> rft on procedural problems -> JSONL -> `synthetic` mixture -> 2 train steps."""
    from mathjax_train.train.trainer import train
    from train_helpers import read_metrics, tiny_config

    out = tmp_path / "rft.jsonl"
    run(
        capsys,
        "--checkpoint",
        str(random_ckpt),
        "--dataset",
        "procedural",
        "--limit",
        "6",
        *COMMON,
        "--output",
        str(out),
    )
    cfg = tiny_config(
        tmp_path / "train",
        f"init_from={random_ckpt}",
        "data.mixture=synthetic",
        f"data.jsonl=[{out}]",
        "train.steps=2",
        "train.seq_len=512",
        "train.batch_size=8",
        "train.log_every_steps=1",
        "checkpoint.every_steps=2",
        "model.scan_layers=true",
    )
    summary = train(cfg, log=lambda s: None)
    assert summary["status"] == "finished" and summary["step"] == 2
    rows = read_metrics(tmp_path / "train")
    assert [r["step"] for r in rows] == [1, 2] and all(r["target_tokens"] > 0 for r in rows)
    state = summary["data_state"]
    assert state["kind"] == "sft_mixture" and state["counts"]["synthetic"] > 0
    # the trained step directory is a model checkpoint that generate can load
    assert (
        main(
            [
                "generate",
                "--checkpoint",
                str(tmp_path / "train"),
                "--prompts",
                str(_prompts(tmp_path)),
                "--output",
                str(tmp_path / "gen.jsonl"),
                "--max-new-tokens",
                "4",
            ]
        )
        == 0
    )


def _prompts(tmp_path):
    p = tmp_path / "prompts.jsonl"
    p.write_text(json.dumps({"prompt": "Question: 2 + 2 =\nAnswer:"}) + "\n")
    return p
