"""TFDS builders for GSM8K / MATH built from small manual-dir files (and, if present, the real ones)."""

import pytest

from mathjax_train.data import manual_dir as md
from mathjax_train.data import tfds_builders as B
from mathjax_train.data.jsonl_source import JsonlFormatError
from data_fixtures import write_jsonl
from real_data import require_data

GSM_TRAIN = [
    {"question": "Ann has 3 bags of 4 apples. How many apples?", "answer": "3*4 = <<3*4=12>>12\n#### 12"},
    {"question": "A car costs $1,200 and a bike $300. Total?", "answer": "1200+300=<<1200+300=1500>>1,500\n#### 1,500"},
    {"question": "Half of 10?", "answer": "10/2=<<10/2=5>>5\n#### 5"},
]
GSM_TEST = [{"question": "2 + 2?", "answer": "2+2=<<2+2=4>>4\n#### 4"}]
MATH_ROW = {
    "problem": "Find $1+1$.",
    "solution": "$1+1=\\boxed{2}$.",
    "answer": "2",
    "level": "Level 1",
    "type": "Algebra",
    "subject": "algebra",
    "unique_id": "train/algebra/0.json",
}
MATH_TRAIN = [
    MATH_ROW,
    dict(MATH_ROW, level="Level ?", unique_id="train/algebra/1.json", answer=""),
    dict(
        MATH_ROW, level="Level 5", type="Number Theory", subject="number_theory", unique_id="train/number_theory/7.json"
    ),
]
MATH_TEST = [dict(MATH_ROW, unique_id="test/algebra/3.json", level="Level 2")]
MATH500 = [
    {
        "problem": "Find $2+2$.",
        "solution": "$\\boxed{4}$",
        "answer": "4",
        "subject": "Precalculus",
        "level": 3,
        "unique_id": "test/precalculus/807.json",
    }
]


@pytest.fixture(scope="module")
def manual(tmp_path_factory):
    root = tmp_path_factory.mktemp("manual")
    write_jsonl(root / "gsm8k/train.jsonl", GSM_TRAIN)
    write_jsonl(root / "gsm8k/test.jsonl", GSM_TEST)
    write_jsonl(root / "math/train.jsonl", MATH_TRAIN)
    write_jsonl(root / "math/test.jsonl", MATH_TEST)
    write_jsonl(root / "math/math500.jsonl", MATH500)
    return root


def _rows(builder, split, key):
    out = {}
    for ex in builder.as_dataset(split=split).as_numpy_iterator():
        out[ex[key].decode()] = {k: v.decode() if isinstance(v, bytes) else int(v) for k, v in ex.items()}
    return out


def test_gsm8k_builder_from_explicit_manual_dir(manual, tmp_path):
    b = B.prepare("gsm8k", tmp_path / "tfds", manual)
    assert {k: v.num_examples for k, v in b.info.splits.items()} == {"train": 3, "test": 1}
    train = _rows(b, "train", "id")
    assert set(train) == {"gsm8k/train/0", "gsm8k/train/1", "gsm8k/train/2"}
    assert train["gsm8k/train/1"]["final_answer"] == "1500"
    assert train["gsm8k/train/1"]["answer"] == GSM_TRAIN[1]["answer"]
    assert train["gsm8k/train/0"]["question"] == GSM_TRAIN[0]["question"]
    assert _rows(b, "test", "id")["gsm8k/test/0"]["final_answer"] == "4"


def test_math_builder_from_env_var_normalises_level_type_subject(manual, tmp_path, monkeypatch):
    monkeypatch.setenv(md.ENV_VAR, str(manual))
    b = B.prepare("hendrycks_math", tmp_path / "tfds")
    assert {k: v.num_examples for k, v in b.info.splits.items()} == {"train": 3, "test": 1, "math500": 1}
    train = _rows(b, "train", "unique_id")
    assert train["train/algebra/0.json"]["level"] == 1
    assert train["train/algebra/1.json"]["level"] == 0 and train["train/algebra/1.json"]["answer"] == ""
    nt = train["train/number_theory/7.json"]
    assert (nt["level"], nt["type"], nt["subject"]) == (5, "Number Theory", "number_theory")
    m500 = _rows(b, "math500", "unique_id")["test/precalculus/807.json"]
    assert (m500["level"], m500["type"], m500["subject"], m500["answer"]) == (3, "Precalculus", "precalculus", "4")
    assert set(m500) == {"problem", "solution", "answer", "level", "type", "subject", "unique_id"}


def test_missing_manual_files_raise_instructions(tmp_path, monkeypatch):
    monkeypatch.delenv(md.ENV_VAR, raising=False)
    write_jsonl(tmp_path / "m/gsm8k/train.jsonl", GSM_TRAIN)
    with pytest.raises(md.ManualDataError, match=r"gsm8k/test\.jsonl"):
        B.prepare("gsm8k", tmp_path / "tfds", tmp_path / "m")
    with pytest.raises(md.ManualDataError, match="MATHJAX_DATA_DIR"):
        B.prepare("gsm8k", tmp_path / "tfds")
    with pytest.raises(ValueError, match="valid"):
        B.prepare("svamp", tmp_path / "tfds", tmp_path / "m")


@pytest.mark.parametrize(
    "rows,line,field",
    [
        ([GSM_TRAIN[0], {"question": "q", "answer": "no final line"}], 2, "answer"),
        ([GSM_TRAIN[0], {"question": "q"}], 2, "answer"),
        ([{"question": "q", "answer": "#### 1", "extra": 1}], 1, "extra"),
    ],
)
def test_gsm8k_rows_are_checked_strictly(tmp_path, rows, line, field):
    write_jsonl(tmp_path / "g.jsonl", rows)
    with pytest.raises(JsonlFormatError) as e:
        list(B.gsm8k_examples(tmp_path / "g.jsonl", "train"))
    assert (e.value.line, e.value.field) == (line, field)


@pytest.mark.parametrize(
    "row,field",
    [
        (dict(MATH_ROW, level="hard"), "level"),
        ({k: v for k, v in MATH_ROW.items() if k not in ("type", "subject")}, "type"),
        ({k: v for k, v in MATH_ROW.items() if k != "solution"}, "solution"),
        (dict(MATH500[0], unique_id="807"), "unique_id"),
    ],
)
def test_math_rows_are_checked_strictly(tmp_path, row, field):
    write_jsonl(tmp_path / "m.jsonl", [MATH_ROW, row])
    with pytest.raises(JsonlFormatError) as e:
        list(B.math_examples(tmp_path / "m.jsonl", "train"))
    assert (e.value.line, e.value.field) == (2, field)


@pytest.mark.realdata
def test_real_benchmarks_build_with_official_counts(tmp_path):
    root = require_data()
    gsm = B.prepare("gsm8k", tmp_path, root)
    assert {k: v.num_examples for k, v in gsm.info.splits.items()} == {"train": 7473, "test": 1319}
    math = B.prepare("math", tmp_path, root)
    assert {k: v.num_examples for k, v in math.info.splits.items()} == {"train": 7500, "test": 5000, "math500": 500}
    levels = [int(ex["level"]) for ex in math.as_dataset(split="train").as_numpy_iterator()]
    assert levels.count(0) == 2 and set(levels) == {0, 1, 2, 3, 4, 5}
