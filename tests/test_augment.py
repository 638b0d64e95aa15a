"""Augmentation end to end against `mathjax-train serve` on localhost.

A random tiny model rarely agrees with itself, so two teachers are used: a forced checkpoint
(tests/forced_model.py) whose greedy and sampled output is fixed by construction (it writes one
question after "New problem:" and one solution after "Solution:"), so agreement is certain and
rows are kept; and a random tiny checkpoint, whose real outputs must all be accounted for by the
filters. The self-consistency vote itself is tested on hand-written completions.
"""

import json
import sys
from pathlib import Path

import pytest

from forced_model import EOS, make_forced_checkpoint, write_jsonl
from hf_fixtures import import_random_model
from serve_helpers import start_serve_process
from mathjax_train.cli import main
from mathjax_train.data.jsonl_source import JsonlFormatError, read_sft_jsonl
from mathjax_train.synth.augment import (
    DROP_REASONS,
    METHOD_PROMPTS,
    SOLVE_PROMPT,
    AugmentConfig,
    augment,
    difficulty,
    load_seeds,
    majority_vote,
    parse_question,
)
from mathjax_train.synth.teacher import CheckpointTeacher, HttpTeacher, Sampling, TeacherError

QUESTION = " Tom has 36 apples and buys 36 more. How many apples does he have now?"
SOLUTION = " Tom has 36 + 36 = 72 apples. The answer is \\boxed{72}."
REPO = Path(__file__).resolve().parents[1]


def make_data_dir(root: Path, gsm_test: list[str]) -> Path:
    """A manual data directory: GSM8K train seeds and small GSM8K / MATH test sets."""
    write = lambda rel, rows: write_jsonl((root / rel).parent.mkdir(parents=True, exist_ok=True) or root / rel, rows)  # noqa: E731
    write(
        "gsm8k/train.jsonl",
        [
            {
                "question": "Ann has 20 apples and buys 52 more. How many apples does she have?",
                "answer": "20+52=72\n#### 72",
            },
            {"question": "A box holds 3 rows of 3 pens. How many pens?", "answer": "3*3=9\n#### 9"},
        ],
    )
    write("gsm8k/test.jsonl", [{"question": q, "answer": "#### 1"} for q in gsm_test])
    write(
        "math/test.jsonl",
        [
            {
                "problem": "Compute $\\dbinom{8}{4}$.",
                "solution": "$\\boxed{70}$",
                "answer": "70",
                "level": "Level 1",
                "type": "Counting",
                "subject": "counting",
                "unique_id": "test/counting/1.json",
            }
        ],
    )
    return root


@pytest.fixture(scope="module")
def forced_ckpt(tmp_path_factory):
    d = tmp_path_factory.mktemp("forced")
    transitions = {"New problem:": QUESTION, QUESTION: EOS, "Solution:": SOLUTION, SOLUTION: EOS}
    return make_forced_checkpoint(d, transitions, added=["New problem:", "Solution:", QUESTION, SOLUTION])


@pytest.fixture(scope="module")
def local_teacher(forced_ckpt):
    return CheckpointTeacher(str(forced_ckpt), prompt_format="plain", batch_size=4)


@pytest.fixture(scope="module")
def forced_server(forced_ckpt):
    """`mathjax-train serve` in a subprocess; yields its base URL."""
    cmd = [sys.executable, "-m", "mathjax_train.cli", "serve", str(forced_ckpt), "--port", "0", "--quiet"]
    proc, url = start_serve_process(cmd + ["--max-batch", "4"], cwd=REPO)
    yield url
    proc.terminate()
    assert proc.wait(timeout=60) == 0


def run_augment(url, data_dir, out, *extra):
    return main(
        [
            "augment",
            "--seeds",
            "gsm8k",
            "--teacher-url",
            url,
            "--teacher-model",
            "ckpt",
            "--teacher-api",
            "completions",
            "--api-key-env",
            "",
            "--n",
            "3",
            "--temperature",
            "0.8",
            "--max-tokens",
            "8",
            "--question-max-tokens",
            "8",
            "--output",
            str(out),
            "--data-dir",
            str(data_dir),
            *extra,
        ]
    )


def test_augment_against_serve_keeps_agreeing_rows_with_provenance(forced_server, forced_ckpt, tmp_path):
    data_dir = make_data_dir(tmp_path / "data", ["Janet has 16 ducks. How many legs do they have?"])
    out = tmp_path / "aug.jsonl"
    assert run_augment(forced_server, data_dir, out, "--methods", "rephrase", "change_numbers", "--seed", "5") == 0

    rows = list(read_sft_jsonl(out))
    assert len(rows) == 1  # every candidate got the same question: the later three are duplicates
    row = rows[0]
    assert row["question"] == QUESTION.strip() and row["solution"] == SOLUTION and row["answer"] == "72"
    assert (row["seed_id"], row["seed_source"], row["method"]) == ("gsm8k/train/0", "gsm8k", "rephrase")
    assert row["teacher"] == {"kind": "openai_http", "base_url": forced_server, "model": "ckpt", "api": "completions"}
    assert row["solution_sampling"] == {"temperature": 0.8, "top_p": 0.95, "max_tokens": 8, "seed": 6, "n": 3}
    assert row["question_sampling"] == {"temperature": 0.7, "top_p": 0.95, "max_tokens": 8, "seed": 5}
    assert (row["agreement"], row["votes"], row["samples"], row["difficulty"]) == (1.0, 3, 3, "easy")
    assert row["level"] == 1  # easy -> level 1, so data.min_level can pick the hard subset
    assert row["source"] == "augment/rephrase" and row["id"] == "gsm8k/train/0#rephrase"

    report = json.loads((tmp_path / "aug.jsonl.report.json").read_text())
    assert (report["seeds"], report["candidates"], report["kept"]) == (2, 4, 1)
    assert report["dropped"]["duplicate_question"] == 3
    assert report["kept"] + sum(report["dropped"].values()) == report["candidates"]
    assert report["contamination"]["rows_checked"] == 1 and report["contamination"]["rows_contaminated"] == 0

    # The file feeds the trainer through the JSONL-backed SeqIO task.
    from mathjax_train.config import load_config
    from mathjax_train.data.batches import check_batch
    from mathjax_train.data.sources import make_train_iterator
    from mathjax_train.data.vocab import load_tokenizer

    cfg = load_config(
        None,
        [
            f"data.tokenizer={forced_ckpt / 'tokenizer'}",
            f"data.jsonl=[{out}]",
            "data.mixture=synthetic",
            "train.seq_len=512",
            "train.batch_size=2",
        ],
    )
    batch = next(iter(make_train_iterator(cfg, rows=2)))
    check_batch(batch, 2, 512)
    targets = batch["targets"][0][batch["loss_weights"][0] > 0]
    assert "#### 72" in load_tokenizer(forced_ckpt / "tokenizer").decode(targets.tolist())


def test_rephrase_must_keep_the_seed_answer(forced_server, tmp_path):
    data_dir = make_data_dir(tmp_path / "data", ["Unrelated test question about ducks and legs."])
    seeds = write_jsonl(tmp_path / "seeds.jsonl", [{"id": "s1", "question": "What is 4 + 5?", "answer": "9"}])
    out = tmp_path / "aug.jsonl"
    assert run_augment(forced_server, data_dir, out, "--methods", "rephrase", "--seeds", str(seeds)) == 0
    report = json.loads((tmp_path / "aug.jsonl.report.json").read_text())
    assert report["kept"] == 0 and report["dropped"]["answer_differs_from_seed"] == 1
    assert out.read_text() == ""


def test_contaminated_rows_never_reach_the_file(local_teacher, tmp_path):
    planted = "Tom has 12 apples and buys 12 more.  How many apples does he have now"  # numbers, spaces, '?'
    data_dir = make_data_dir(tmp_path / "data", ["Janet has 16 ducks.", planted])
    teacher = local_teacher
    cfg = AugmentConfig(
        methods=("change_numbers",),
        n=2,
        question_sampling=Sampling(0.7, 1.0, 8, 0),
        solution_sampling=Sampling(0.7, 1.0, 8, 1),
    )
    out = tmp_path / "aug.jsonl"
    report = augment(load_seeds("gsm8k", data_dir), teacher, cfg, out, data_dir=data_dir)
    assert report.kept == 0 and report.dropped["contaminated"] == 1 and report.dropped["duplicate_question"] == 1
    assert out.read_text() == ""
    hit = report.contamination["contaminated"][0]
    assert hit["test_ids"] == ["gsm8k/test/1"] and hit["hits"][0]["method"] == "exact_masked"
    assert hit["seed_id"] == "gsm8k/train/0"


def test_checkpoint_and_http_teachers_agree(forced_server, local_teacher):
    requests = [METHOD_PROMPTS["harder"].format(question="What is 2 + 2?"), SOLVE_PROMPT.format(question="Q")]
    s = Sampling(temperature=0.9, top_p=1.0, max_tokens=8, seed=3)
    local = local_teacher.ask(requests, 2, s)
    remote = HttpTeacher(forced_server, "ckpt", api_key_env=None, api="completions").ask(requests, 2, s)
    assert local == remote == [[QUESTION] * 2, [SOLUTION] * 2]


@pytest.fixture(scope="module")
def random_server(tmp_path_factory):
    from mathjax_train.infer.loading import load_for_inference
    from mathjax_train.config import EngineConfig
    from mathjax_train.serve.app import ServeApp
    from mathjax_train.serve.server import start_server

    d = tmp_path_factory.mktemp("random")
    import_random_model(d, seed=5)
    server = start_server(ServeApp(load_for_inference(d / "ckpt"), "rand", EngineConfig(num_slots=8)), "127.0.0.1", 0)
    yield server
    server.close()


def test_real_random_teacher_outputs_are_all_accounted_for(random_server, tmp_path):
    data_dir = make_data_dir(tmp_path / "data", ["Janet has 16 ducks."])
    seeds = [s for s in load_seeds("gsm8k", data_dir)]
    teacher = HttpTeacher(random_server.url, "rand", api_key_env=None, api="chat")
    cfg = AugmentConfig(
        n=4,
        answer_fallback="last_number",
        question_sampling=Sampling(1.0, 1.0, 24, 0),
        solution_sampling=Sampling(1.0, 1.0, 24, 1),
    )
    out = tmp_path / "aug.jsonl"
    report = augment(seeds, teacher, cfg, out, data_dir=data_dir)
    assert report.candidates == 6 and report.teacher_calls >= 6
    assert set(report.dropped) <= set(DROP_REASONS)
    assert report.kept + sum(report.dropped.values()) == report.candidates
    rows = list(read_sft_jsonl(out))
    assert len(rows) == report.kept
    for row in rows:  # whatever survived really had a clear majority
        assert row["agreement"] >= cfg.min_agreement and row["votes"] >= 2


def test_http_teacher_errors_name_the_endpoint(random_server):
    with pytest.raises(TeacherError, match="does not exist"):
        HttpTeacher(random_server.url, "no-such-model", api_key_env=None, max_retries=0).ask(["x"], 1, Sampling())
    with pytest.raises(TeacherError, match="127.0.0.1:9"):
        HttpTeacher("http://127.0.0.1:9/v1", "m", api_key_env=None, max_retries=0).ask(["x"], 1, Sampling())


# ---- the vote and the parsers, on hand-written text ------------------------------------------------


def test_majority_vote_clusters_equivalent_answers():
    v = majority_vote(["so \\boxed{0.5}", "thus \\boxed{\\frac{1}{2}}", "The answer is 1/2", "\\boxed{3}"])
    assert v.answers == ["0.5", "\\frac{1}{2}", "1/2", "3"]
    assert v.top == [0, 1, 2] and v.answer == "0.5" and v.share == 0.75 and not v.tie


def test_majority_vote_ties_and_missing_answers():
    tie = majority_vote(["\\boxed{2}", "\\boxed{3}", "no idea", "\\boxed{2.0}", "\\boxed{3}"])
    assert tie.tie and len(tie.top) == 2 and tie.share == 0.4
    none = majority_vote(["I give up", "hmm 42"])
    assert none.clusters == [] and none.answer is None and none.share == 0.0
    assert majority_vote(["hmm 42", "so 42"], fallback="last_number").share == 1.0


def test_difficulty_labels_follow_agreement_and_method():
    assert [difficulty(s, "rephrase") for s in (1.0, 0.75, 0.5)] == ["easy", "medium", "hard"]
    assert [difficulty(s, "harder") for s in (1.0, 0.75, 0.5)] == ["medium", "hard", "hard"]


def test_parse_question_takes_the_new_problem_and_stops_before_a_solution():
    assert parse_question(" A farmer has 3 cows.\n\nSolution: 3") == "A farmer has 3 cows."
    assert parse_question("Sure!\nNew problem: **Bob has 4 pens.**\n### Answer\n4") == "Bob has 4 pens."
    assert parse_question("Solution: only a solution") == ""


def test_bad_seed_files_name_the_line(tmp_path):
    bad = tmp_path / "seeds.jsonl"
    bad.write_text('{"question": "ok"}\n{"answer": "5"}\n')
    with pytest.raises(JsonlFormatError, match=r"seeds.jsonl:2: field 'question'"):
        load_seeds(str(bad))
    with pytest.raises(FileNotFoundError, match="neither gsm8k, math nor an existing"):
        load_seeds(str(tmp_path / "missing.jsonl"))
    with pytest.raises(ValueError, match="unknown"):
        AugmentConfig(methods=("translate",)).validate()
