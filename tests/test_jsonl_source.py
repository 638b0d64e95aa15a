"""Strict JSONL reading (path:line:field errors, counted blanks), SFT reader, manual-dir lookup."""

import json

import pytest

from mathjax_train.data import jsonl_source as js
from mathjax_train.data import manual_dir as md


def _write(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_reads_records_and_counts_blank_lines(tmp_path):
    p = _write(tmp_path / "a.jsonl", ['{"q": "a", "n": 1}', "", "   ", '{"q": "b", "n": 2}'])
    stats = js.ReadStats()
    rows = list(js.read_jsonl(p, {"q": str, "n": int}, stats=stats))
    assert [r["q"] for r in rows] == ["a", "b"]
    assert (stats.records, stats.blank_lines) == (2, 2)
    assert [n for n, _ in js.read_jsonl_numbered(p)] == [1, 4]


def test_malformed_line_names_path_line_and_json_problem(tmp_path):
    p = _write(tmp_path / "bad.jsonl", ['{"q": "a"}', "", '{"q": "b",}'])
    with pytest.raises(js.JsonlFormatError) as e:
        list(js.read_jsonl(p))
    assert e.value.line == 3
    assert f"{p}:3" in str(e.value) and "invalid JSON" in str(e.value)


def test_missing_field_and_wrong_type_name_the_field(tmp_path):
    p = _write(tmp_path / "m.jsonl", ['{"question": "x", "answer": "1"}', '{"question": "y"}'])
    with pytest.raises(js.JsonlFormatError) as e:
        list(js.read_jsonl(p, ["question", "answer"]))
    assert (e.value.line, e.value.field) == (2, "answer")
    assert f"{p}:2" in str(e.value) and "'answer'" in str(e.value)
    p2 = _write(tmp_path / "t.jsonl", ['{"n": true}'])
    with pytest.raises(js.JsonlFormatError, match="expected int, got bool"):
        list(js.read_jsonl(p2, {"n": int}))


def test_non_object_and_bad_utf8_are_errors(tmp_path):
    p = _write(tmp_path / "l.jsonl", ["[1, 2]"])
    with pytest.raises(js.JsonlFormatError, match="expected a JSON object, got list"):
        list(js.read_jsonl(p))
    p2 = tmp_path / "u.jsonl"
    p2.write_bytes(b'{"a": "ok"}\n{"a": "\xff"}\n')
    with pytest.raises(js.JsonlFormatError, match=r"u\.jsonl:2: not valid UTF-8"):
        list(js.read_jsonl(p2))


def test_write_then_read_roundtrip(tmp_path):
    rows = [{"question": "Was ist 2+2?", "answer": "4"}, {"question": "π?", "answer": "3.14"}]
    assert js.write_jsonl(tmp_path / "sub" / "r.jsonl", rows) == 2
    assert list(js.read_jsonl(tmp_path / "sub" / "r.jsonl")) == rows


@pytest.mark.parametrize("value,expected", [(3, 3), ("3", 3), ("Level 3", 3), ("level 5", 5), ("Level ?", 0)])
def test_normalize_level(value, expected):
    assert js.normalize_level(value) == expected


@pytest.mark.parametrize("value", [True, 2.5, "hard", -1, None, "Level"])
def test_normalize_level_rejects(value):
    with pytest.raises(ValueError):
        js.normalize_level(value)


def test_sft_reader_normalises_and_passes_provenance(tmp_path):
    rows = [
        {"question": "q1", "solution": "s1", "answer": 12, "teacher": "m-7b", "temperature": 0.7},
        {"question": "q2", "solution": "s2", "answer": "\\frac{1}{2}", "source": "rft/gsm8k", "level": "Level 4"},
    ]
    p = _write(tmp_path / "sft.jsonl", [json.dumps(r) for r in rows])
    out = list(js.read_sft_jsonl(p))
    assert out[0]["answer"] == "12" and out[0]["source"] == "" and out[0]["level"] == 0
    assert out[0]["teacher"] == "m-7b" and out[0]["temperature"] == 0.7
    assert out[1]["level"] == 4 and out[1]["source"] == "rft/gsm8k"


@pytest.mark.parametrize(
    "row,field",
    [
        ({"question": " ", "solution": "s", "answer": "1"}, "question"),
        ({"question": "q", "solution": "s", "answer": ""}, "answer"),
        ({"question": "q", "solution": "s", "answer": [1]}, "answer"),
        ({"question": "q", "solution": "s", "answer": "1", "level": "hard"}, "level"),
        ({"question": "q", "solution": "s", "answer": "1", "source": 3}, "source"),
        ({"question": "q", "answer": "1"}, "solution"),
    ],
)
def test_sft_reader_rejects_bad_rows(tmp_path, row, field):
    p = _write(tmp_path / "bad.jsonl", ['{"question": "ok", "solution": "ok", "answer": "1"}', json.dumps(row)])
    with pytest.raises(js.JsonlFormatError) as e:
        list(js.read_sft_jsonl(p))
    assert (e.value.line, e.value.field) == (2, field)


def _layout(root, files):
    for rel in files:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("{}\n")


def test_manual_dir_argument_beats_env(tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    _layout(a, ["gsm8k/train.jsonl", "gsm8k/test.jsonl"])
    _layout(b, ["gsm8k/train.jsonl", "gsm8k/test.jsonl"])
    monkeypatch.setenv(md.ENV_VAR, str(b))
    assert md.dataset_files("gsm8k", a)["train"] == a / "gsm8k/train.jsonl"
    assert md.dataset_files("gsm8k")["test"] == b / "gsm8k/test.jsonl"


def test_manual_dir_missing_files_says_what_and_where(tmp_path, monkeypatch):
    monkeypatch.delenv(md.ENV_VAR, raising=False)
    _layout(tmp_path, ["math/train.jsonl"])
    with pytest.raises(md.ManualDataError) as e:
        md.dataset_files("math", tmp_path)
    msg = str(e.value)
    assert "math/test.jsonl" in msg and "math/math500.jsonl" in msg and "math/train.jsonl," not in msg
    assert str(tmp_path) in msg and "MATHJAX_DATA_DIR" in msg
    assert isinstance(e.value, FileNotFoundError)


def test_manual_dir_unset_and_unknown_names(monkeypatch):
    monkeypatch.delenv(md.ENV_VAR, raising=False)
    with pytest.raises(md.ManualDataError, match="MATHJAX_DATA_DIR"):
        md.resolve_root()
    with pytest.raises(ValueError, match="unknown dataset"):
        md.relative_paths("svamp")
    with pytest.raises(ValueError, match="unknown split"):
        md.relative_paths("gsm8k", ["validation"])
