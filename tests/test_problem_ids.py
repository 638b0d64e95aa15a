"""One problem id across commands (data/problems.py): `evaluate`'s rows, `rft`'s provenance,
`augment`'s seeds and `decontaminate`'s reports name the same problem by the same id, so their
outputs join on it; the loaders themselves; an evaluate run written under the old ids is refused."""

import json

import pytest

from data_fixtures import write_jsonl
from forced_model import EOS, make_forced_checkpoint
from mathjax_train.cli import main
from mathjax_train.config import EvalConfig, GenerateConfig, InputError
from mathjax_train.data import problems
from mathjax_train.data.jsonl_source import JsonlFormatError
from mathjax_train.data.sft_records import gsm8k_records
from mathjax_train.eval import datasets, harness
from mathjax_train.synth.augment import load_seeds
from mathjax_train.synth.decontaminate import load_test_questions
from mathjax_train.synth.questions import load_questions

# The forced teacher writes this after "New problem:", so every augmented question copies the last problem.
NEW_QUESTION = " Tom has 36 apples and buys 36 more. How many apples does he have now?"
NEW_SOLUTION = " Tom has 36 + 36 = 72 apples. The answer is \\boxed{72}."
ROWS = [  # GSM8K-shaped: question, and an answer ending in `#### x`
    {"question": "Ann has 3 bags of 4 pens. How many pens does she have?", "answer": "3*4=<<3*4=12>>12\n#### 12"},
    {
        "question": "A train goes 60 miles in 2 hours. What is its speed in miles per hour?",
        "answer": "60/2=<<60/2=30>>30 miles per hour.\n#### 30",
    },
    {"question": NEW_QUESTION.strip(), "answer": "36 + 36 = <<36+36=72>>72\n#### 72"},
]
SAMPLING = ["--temperature", "0.7", "--max-new-tokens", "6", "--no-progress"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """One checkpoint for every command: it writes NEW_QUESTION / NEW_SOLUTION after the augment
    prompts' cues, anything (a uniform sample) elsewhere."""
    transitions = {"New problem:": NEW_QUESTION, NEW_QUESTION: EOS, "Solution:": NEW_SOLUTION, NEW_SOLUTION: EOS}
    return make_forced_checkpoint(
        tmp_path_factory.mktemp("forced"), transitions, added=["New problem:", "Solution:", NEW_QUESTION, NEW_SOLUTION]
    )


def _json_out(capsys, argv) -> dict:
    capsys.readouterr()
    assert main(argv) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def _lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_outputs_of_every_command_join_on_problem_id(ckpt, tmp_path, capsys):
    data = write_jsonl(tmp_path / "probs.jsonl", ROWS)
    ids = ["probs.jsonl:1", "probs.jsonl:2", "probs.jsonl:3"]  # a file without ids: <file name>:<line>

    _json_out(
        capsys,
        [
            "evaluate",
            "--checkpoint",
            str(ckpt),
            "--dataset",
            str(data),
            "--num-samples",
            "1",
            "--output-dir",
            str(tmp_path / "eval"),
            *SAMPLING,
        ],
    )
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    evaluated = {r["id"]: r["question"] for r in report["samples"]}
    assert list(evaluated) == ids and evaluated == {i: r["question"] for i, r in zip(ids, ROWS)}

    rft_out = tmp_path / "rft.jsonl"
    _json_out(
        capsys,
        ["rft", "--checkpoint", str(ckpt), "--dataset", str(data), "--k", "2", "--output", str(rft_out), *SAMPLING],
    )
    rft_rows = _lines(rft_out)
    originals = [r for r in rft_rows if r["origin"] == "original"]
    assert [r["question_id"] for r in originals] == [r["id"] for r in originals] == ids
    # the GSM8K-shaped answer gives rft its gold and reference solution
    assert [(r["answer"], r["solution"]) for r in originals] == [
        (r["answer"].rsplit("#### ", 1)[1], r["answer"]) for r in ROWS
    ]
    for r in rft_rows:
        assert evaluated[r["question_id"]] == r["question"]

    # rft's rows copy the questions: decontaminating them against the file names each row's own problem
    deco = _json_out(
        capsys,
        [
            "decontaminate",
            str(rft_out),
            "--output",
            str(tmp_path / "clean.jsonl"),
            "--benchmarks",
            str(data),
            "--report",
            str(tmp_path / "deco.json"),
        ],
    )
    assert deco["rows_kept"] == 0 and deco["rows_contaminated"] == len(rft_rows)
    entries = json.loads((tmp_path / "deco.json").read_text())["contaminated"]
    assert [(e["question_id"], e["test_ids"]) for e in entries] == [
        (r["question_id"], [r["question_id"]]) for r in rft_rows
    ]

    # augment from the first two problems of the same file: each new question copies the third, so
    # decontamination (against the file) drops it, naming the seed and the problem it copies by their ids
    aug_out = tmp_path / "aug.jsonl"
    _json_out(
        capsys,
        [
            "augment",
            "--seeds",
            str(data),
            "--max-seeds",
            "2",
            "--teacher-checkpoint",
            str(ckpt),
            "--prompt-format",
            "plain",
            "--methods",
            "change_numbers",
            "--n",
            "2",
            "--max-tokens",
            "8",
            "--question-max-tokens",
            "8",
            "--benchmarks",
            str(data),
            "--output",
            str(aug_out),
        ],
    )
    aug = json.loads((tmp_path / "aug.jsonl.report.json").read_text())
    hits = [(e["seed_id"], e["test_ids"]) for e in aug["contamination"]["contaminated"]]
    assert hits == [(ids[0], [ids[2]])]  # the second seed's copy is dropped earlier, as a duplicate question
    assert aug_out.read_text() == ""


def test_named_dataset_ids_join_and_old_evaluate_runs_are_refused(ckpt, tmp_path, capsys):
    data_dir = tmp_path / "manual"
    write_jsonl(data_dir / "gsm8k" / "test.jsonl", ROWS)
    write_jsonl(data_dir / "gsm8k" / "train.jsonl", ROWS[::-1])
    train_ids = ["gsm8k/train/0", "gsm8k/train/1", "gsm8k/train/2"]
    # training records, rft questions and augment seeds: the same ids for the train split
    assert [r["id"] for r in gsm8k_records(str(data_dir), "train")] == train_ids
    assert [q.id for q in load_questions("gsm8k", data_dir=str(data_dir))] == train_ids
    assert [s.id for s in load_seeds("gsm8k", data_dir)] == train_ids
    # evaluate's problems and decontaminate's test questions: the same ids for the test split
    test_ids = ["gsm8k/test/0", "gsm8k/test/1", "gsm8k/test/2"]
    assert [p.id for p in datasets.load_problems("gsm8k", "test", data_dir)] == test_ids
    assert [t.id for t in load_test_questions(["gsm8k"], data_dir)] == test_ids

    # a run directory written before this id scheme: its run.json has no `problem_ids` setting (and
    # its rows are named `test.jsonl:<line>`); resuming it is refused before any sampling
    out = tmp_path / "eval"
    cfg = EvalConfig(
        checkpoint=str(ckpt),
        dataset="gsm8k",
        data_dir=str(data_dir),
        output_dir=str(out),
        generate=GenerateConfig(num_samples=1, max_new_tokens=6),
    )
    old = harness.run_settings(cfg, datasets.dataset_path("gsm8k", "test", str(data_dir)), [], None)
    del old["problem_ids"]
    out.mkdir()
    (out / "run.json").write_text(json.dumps({"settings": old}))
    write_jsonl(out / "samples.jsonl", [{"id": f"test.jsonl:{i + 1}"} for i in range(len(ROWS))])
    with pytest.raises(
        InputError,
        match=r"run.json: the output directory .* holds results made with other settings "
        r"\(recorded -> now: problem_ids: None -> '[^)]*'\); use another",
    ):
        harness.evaluate(cfg, progress=False)
    assert not (out / "report.json").exists()


def test_loaders_are_strict_and_share_the_gsm8k_answer_parser(tmp_path):
    assert problems.gsm8k_final_answer("a\n#### 1,234") == "1234"
    assert problems.gsm8k_final_answer("#### -3.5 ") == "-3.5"
    assert problems.gsm8k_final_answer("no answer") is None
    f = write_jsonl(tmp_path / "g.jsonl", ROWS[:1])
    named = list(problems.read_gsm8k(f, "test"))
    generic = problems.read_jsonl(f)
    assert [(p.id, p.answer, p.solution, p.index) for p in named] == [("gsm8k/test/0", "12", ROWS[0]["answer"], 0)]
    assert [(p.id, p.answer, p.solution) for p in generic] == [("g.jsonl:1", "12", ROWS[0]["answer"])]
    bad = write_jsonl(tmp_path / "bad.jsonl", [ROWS[0], {"question": "q", "answer": "no final line"}])
    with pytest.raises(JsonlFormatError, match=r"bad.jsonl:2: field 'answer'.*#### <answer>"):
        list(problems.read_gsm8k(bad, "test"))
    # rft needs a worked solution and one gold string; augment seeds may lack an answer
    nosol = write_jsonl(tmp_path / "nosol.jsonl", [{"question": "q", "answer": "4"}])
    with pytest.raises(JsonlFormatError, match=r"nosol.jsonl:1: field 'solution'"):
        load_questions(str(nosol))
    lists = write_jsonl(tmp_path / "lists.jsonl", [{"question": "q", "solution": "s", "answer": ["3", "-3"]}])
    with pytest.raises(JsonlFormatError, match=r"lists.jsonl:1: field 'answer'.*string or number"):
        load_questions(str(lists))
    seeds = load_seeds(
        str(
            write_jsonl(
                tmp_path / "s.jsonl",
                [{"question": "q"}, {"question": "r", "answer": ""}, {"id": 9, "question": "t", "answer": 4}],
            )
        )
    )
    assert [(s.id, s.answer, s.source) for s in seeds] == [
        ("s.jsonl:1", None, "s.jsonl"),
        ("s.jsonl:2", None, "s.jsonl"),
        ("9", "4", "s.jsonl"),
    ]
