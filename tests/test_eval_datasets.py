"""Evaluation datasets: JSONL problems (data/problems.read_jsonl) with strict errors, few-shot prompts, real benchmark counts."""

import json
from pathlib import Path

import pytest

from mathjax_train.config import ConfigError, EvalConfig
from mathjax_train.data import problems
from mathjax_train.data.jsonl_source import JsonlFormatError
from mathjax_train.eval import datasets
from mathjax_train.eval.harness import build_prompts
from real_data import DATA, require_data


def _write(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_reads_every_accepted_field(tmp_path):
    f = _write(
        tmp_path / "p.jsonl",
        [
            {"question": "1+1?", "answer": "2", "level": "Level 3", "type": "Algebra", "unique_id": "a/1"},
            {"problem": "2+2?", "answer": 4, "level": 2, "subject": "Geometry", "id": 7, "solution": "2+2=4"},
            {"question": "roots?", "answer": ["3, -3", "\\pm 3"]},
            {"question": "gsm?", "answer": "She has 3*4 = <<3*4=12>>12.\n#### 1,200"},
        ],
    )
    p = problems.read_jsonl(f)
    assert [x.id for x in p] == ["a/1", "7", "p.jsonl:3", "p.jsonl:4"]
    assert (p[0].level, p[0].subject, p[0].answer) == (3, "Algebra", "2")
    assert (p[1].question, p[1].answer, p[1].level, p[1].subject, p[1].solution) == (
        "2+2?",
        "4",
        2,
        "Geometry",
        "2+2=4",
    )
    assert p[2].answer == ["3, -3", "\\pm 3"] and p[2].level is None and p[2].subject is None
    assert p[3].answer == "1200" and p[3].solution == "She has 3*4 = <<3*4=12>>12.\n#### 1,200"
    # an exemplar shows a GSM8K solution without calculator annotations, ending in the cleaned answer
    assert datasets.exemplar_solution(p[3]) == "She has 3*4 = 12.\n#### 1200"
    assert datasets.exemplar_solution(p[1]) == "2+2=4"


@pytest.mark.parametrize(
    "row,field,problem",
    [
        ({"answer": "2"}, "question", "missing required field"),
        ({"question": "q"}, "answer", "missing required field"),
        ({"question": 5, "answer": "2"}, "question", "expected str"),
        ({"question": "  ", "answer": "2"}, "question", "non-empty"),
        ({"question": "q", "answer": True}, "answer", "bool"),
        ({"question": "q", "answer": []}, "answer", "list of strings"),
        ({"question": "q", "answer": ""}, "answer", "non-empty"),
        ({"question": "q", "answer": "2", "level": "hard"}, "level", "unrecognised level"),
        ({"question": "q", "answer": "2", "type": 3}, "type", "expected str"),
        ({"question": "q", "answer": "2", "id": [1]}, "id", "expected str or int"),
        ({"question": "q", "answer": "2", "id": "x1"}, "id", "duplicate id 'x1' (first on line 1)"),
    ],
)
def test_bad_rows_name_path_line_and_field(tmp_path, row, field, problem):
    f = _write(tmp_path / "bad.jsonl", [{"question": "ok", "answer": "1", "id": "x1"}, row])
    with pytest.raises(JsonlFormatError) as e:
        problems.read_jsonl(f)
    assert (e.value.path, e.value.line, e.value.field) == (str(f), 2, field)
    assert f"bad.jsonl:2: field {field!r}" in str(e.value) and problem in str(e.value)


def test_broken_json_and_unknown_dataset(tmp_path):
    f = _write(tmp_path / "broken.jsonl", [{"question": "ok", "answer": "1"}, '{"question": "q", "answer": '])
    with pytest.raises(JsonlFormatError, match=r"broken.jsonl:2: invalid JSON"):
        problems.read_jsonl(f)
    with pytest.raises(FileNotFoundError, match="gsm9k"):
        datasets.load_problems("gsm9k")
    with pytest.raises(ValueError, match="math500 is a test set only"):
        datasets.dataset_path("math500", "train", tmp_path)
    with pytest.raises(FileNotFoundError, match="gsm8k/test.jsonl"):
        datasets.load_problems("gsm8k", "test", tmp_path)  # the manual dir lacks the file: says which
    with pytest.raises(JsonlFormatError, match=r"ex.jsonl:1: field 'solution'"):  # exemplars need solutions
        datasets.load_exemplars("x.jsonl", str(_write(tmp_path / "ex.jsonl", [{"question": "q", "answer": "1"}])))


def test_few_shot_prompts_and_exemplar_overlap_is_skipped_and_counted(tmp_path):
    ex = _write(
        tmp_path / "ex.jsonl",
        [{"question": f"E{i}?", "answer": str(i), "solution": f"It is {i}. The answer is {i}."} for i in range(3)],
    )
    probs = problems.read_jsonl(
        _write(tmp_path / "p.jsonl", [{"question": "E1?", "answer": "1"}, {"question": "New?", "answer": "5"}])
    )
    cfg = EvalConfig(
        checkpoint=str(tmp_path), dataset="p.jsonl", template="question_answer", shots=3, exemplars=str(ex)
    )
    prompts, shots, kept, skipped = build_prompts(cfg, probs)
    assert [p.question for p in kept] == ["New?"] and skipped == {"exemplar_overlap": 1}
    assert sorted(s.id for s in shots) == ["ex.jsonl:1", "ex.jsonl:2", "ex.jsonl:3"]
    assert prompts[0].endswith("\n\nQuestion: New?\nAnswer:")
    assert prompts[0].count("Question:") == 4 and "Answer: It is 0. The answer is 0." in prompts[0]
    zero = build_prompts(EvalConfig(checkpoint=str(tmp_path), dataset="p.jsonl", template="alpaca_rft"), probs)[0]
    assert zero[1].startswith("Below is an instruction") and zero[1].endswith("### Instruction:\nNew?\n\n### Response:")
    with pytest.raises(ValueError, match="needs --exemplars"):
        build_prompts(EvalConfig(checkpoint=str(tmp_path), dataset="p.jsonl", shots=1), probs)


@pytest.mark.parametrize(
    "kw,field",
    [
        ({"tools": "java"}, "eval.tools"),
        ({"shots": -1}, "eval.shots"),
        ({"template": "alpaca"}, "eval.template"),
        ({"answer_fallback": "first"}, "eval.answer_fallback"),
    ],
)
def test_eval_config_validation_names_the_field(kw, field):
    with pytest.raises(ConfigError, match=field):
        EvalConfig(**kw).validate()


@pytest.mark.realdata
def test_real_benchmarks_load_with_expected_counts():
    require_data()
    gsm = datasets.load_problems("gsm8k", "test", DATA)
    math = datasets.load_problems("math", "test", DATA)
    m500 = datasets.load_problems("math500", "test", DATA)
    assert (len(gsm), len(math), len(m500)) == (1319, 5000, 500)
    assert gsm[0].answer == "18" and gsm[0].level is None and gsm[0].id == "gsm8k/test/0"
    assert {p.level for p in math} == {1, 2, 3, 4, 5}
    assert (
        {p.subject for p in math}
        == {p.subject for p in m500}
        == {
            "Algebra",
            "Counting & Probability",
            "Geometry",
            "Intermediate Algebra",
            "Number Theory",
            "Prealgebra",
            "Precalculus",
        }
    )
    assert {p.id for p in m500} <= {p.id for p in math}
    assert all(isinstance(p.answer, str) and p.answer for p in math)
    skipped = {}
    train = datasets.load_exemplars("math500", "", DATA, skipped)  # exemplars come from MATH *train*
    assert all(p.id.startswith("train/") for p in train)
    assert len(train) == 7498 and skipped == {"empty_answer": 2}  # two train solutions box nothing
    assert not {p.question for p in train[:200]} & {p.question for p in math}
    assert len(datasets.load_exemplars("gsm8k", "", DATA)) == 7473
