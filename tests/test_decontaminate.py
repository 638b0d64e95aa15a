"""Decontamination: test questions planted in a synthetic file (exact and lightly edited) are all
caught and reported by test id; clean rows pass through unchanged; real-data checks at the end."""

import json

import pytest

from mathjax_train.cli import main
from mathjax_train.data.problems import Problem
from mathjax_train.synth.decontaminate import Decontaminator, load_test_questions, words
from real_data import DATA, require_data

GSM_TEST = [
    "Janet's ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes muffins for her "
    "friends every day with four. She sells the remainder at the farmers' market daily for $2 per fresh duck egg. "
    "How much in dollars does she make every day at the farmers' market?",
    "A robe takes 2 bolts of blue fiber and half that much white fiber. How many bolts in total does it take?",
    "Josh decides to try flipping a house. He buys a house for $80,000 and then puts in $50,000 in repairs. "
    "This increased the value of the house by 150%. How much profit did he make?",
]
ASY = '[asy] draw((0,0)--(10,0)--(10,10)--(0,10)--cycle); label("$A$",(0,0),SW); [/asy]'
MATH_TEST = [
    ("test/algebra/7.json", "If $x^2+3x=10$ and $x>0$, what is the value of $x$?"),
    ("test/geometry/3.json", f"The square below has side length 10. What is its area? {ASY}"),
]

PLANTED = [  # (row, expected test id, expected method)
    ({"question": GSM_TEST[0]}, "gsm8k/test/0", "exact"),
    (
        {
            "question": "  janet’s ducks lay 16 eggs per day; she eats THREE for breakfast every morning, and bakes "
            "muffins for her friends every day with four. she sells the remainder at the farmers market "
            "daily for $2 per fresh duck egg - how much in dollars does she make every day at the "
            "farmers market"
        },
        "gsm8k/test/0",
        "exact",
    ),
    (
        {
            "question": "A robe takes 7 bolts of blue fiber and half that much white fiber.\nHow many bolts in total "
            "does it take??"
        },
        "gsm8k/test/1",
        "exact_masked",
    ),
    (
        {
            "question": "Josh decides to try flipping a house. He buys a house for $90,000 and then puts in $20,000 "
            "in repairs. This increased the value of the house by 100%. How much money did he make? "
            "Give your answer in dollars."
        },
        "gsm8k/test/2",
        "ngram_masked",
    ),
    (
        {
            "question": "Mia wants to flip a home. Josh decides to try flipping a house. He buys a house for $80,000 "
            "and then puts in $50,000 in repairs. What did it cost?"
        },
        "gsm8k/test/2",
        "ngram",
    ),
    ({"question": "If $x^2 + 3x = 10$ and $x > 0$, what is the value of $x$?"}, "test/algebra/7.json", "exact"),
    ({"question": "If $x^2+5x=24$ and $x>0$, what is the value of $x$?"}, "test/algebra/7.json", "exact_masked"),
]
CLEAN = [
    {"question": "Tom's hens lay 12 eggs per day. How many eggs do they lay in a week?", "answer": "84"},
    {"question": "A shirt takes 2 yards of cloth. How many yards do 5 shirts take?", "answer": "10"},
    # shares the Asymptote block (number runs) with a test problem, but asks something else
    {"question": f"The triangle inside the figure is cut out. Which fraction of the figure remains? {ASY}"},
    {"question": "He buys a house for $80,000 in cash."},  # a shared phrase shorter than 13 words
]


@pytest.fixture
def data_dir(tmp_path):
    d = tmp_path / "data"
    (d / "gsm8k").mkdir(parents=True)
    (d / "math").mkdir()
    (d / "gsm8k" / "test.jsonl").write_text(
        "".join(json.dumps({"question": q, "answer": "#### 1"}) + "\n" for q in GSM_TEST)
    )
    (d / "math" / "test.jsonl").write_text(
        "".join(
            json.dumps(
                {
                    "problem": p,
                    "solution": "",
                    "answer": "1",
                    "level": 1,
                    "type": "Algebra",
                    "subject": "algebra",
                    "unique_id": uid,
                }
            )
            + "\n"
            for uid, p in MATH_TEST
        )
    )
    return d


def test_planted_test_questions_are_caught_and_reported_by_id(data_dir, tmp_path, capsys):
    rows = []
    for i in range(len(PLANTED)):
        rows += [dict(CLEAN[i % len(CLEAN)], n=i), dict(PLANTED[i][0], n=100 + i)]
    src = tmp_path / "synthetic.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out, rep = tmp_path / "clean.jsonl", tmp_path / "report.json"
    assert (
        main(["decontaminate", str(src), "--output", str(out), "--report", str(rep), "--data-dir", str(data_dir)]) == 0
    )

    kept = [json.loads(line) for line in out.read_text().splitlines()]
    assert kept == [r for r in rows if r["n"] < 100]  # every clean row, unchanged and in order
    report = json.loads(rep.read_text())
    assert (report["rows_checked"], report["rows_contaminated"]) == (len(rows), len(PLANTED))
    assert report["test_questions"] == len(GSM_TEST) + len(MATH_TEST)
    for i, (entry, (_, test_id, method)) in enumerate(zip(report["contaminated"], PLANTED)):
        line = 2 * i + 2  # planted rows sit on the even lines
        assert entry["row"] == f"{src}:{line}"
        assert entry["test_ids"] == [test_id], entry
        assert entry["hits"][0] == {
            "test_id": test_id,
            "method": method,
            **({"shared_ngrams": entry["hits"][0]["shared_ngrams"]} if method.startswith("ngram") else {}),
        }
    assert report["by_benchmark"] == {"gsm8k": 5, "math": 2}
    summary = json.loads(capsys.readouterr().out)
    assert summary["rows_kept"] == len(rows) - len(PLANTED)


def test_normalization_and_masking():
    assert words("  Janet’s  DUCKS, lay\t16 eggs!") == ["janet", "s", "ducks", "lay", "16", "eggs"]
    assert words("costs $1,250.50 or 3/4", mask_numbers=True) == ["costs", "0", "or", "0", "0"]


def test_ngram_size_is_configurable():
    d = Decontaminator([Problem("t/1", "one two three four five six seven eight nine ten", None, source="gsm8k")], n=5)
    assert [h.test_id for h in d.check("zero one two three four five")] == ["t/1"]
    assert d.check("one two three four") == []  # shorter than one n-gram, not equal: clean
    with pytest.raises(ValueError, match="n-gram size"):
        Decontaminator([], n=0)


def test_boilerplate_shared_by_many_test_questions_identifies_none():
    tail = " Express your answer as a common fraction in lowest terms and simplify every radical you use here."
    tests = [
        Problem(f"t/{i}", f"Question number {w} asks about {w} things.{tail}", None, source="math")
        for i, w in enumerate(["red", "green", "blue"])
    ]
    row = f"A brand new question about triangles and their angles.{tail}"
    assert Decontaminator(tests).check(row) == []  # that sentence is in 3 > max_df test questions
    assert len(Decontaminator(tests, max_df=None).check(row)) == 3
    assert [h.test_id for h in Decontaminator(tests).check(tests[1].question)] == ["t/1"]


def test_bad_input_names_the_file_and_line(data_dir, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "fine"}\n{"question": 5}\n')
    assert main(["decontaminate", str(bad), "--output", str(tmp_path / "o.jsonl"), "--data-dir", str(data_dir)]) == 2
    assert f"{bad}:2: field 'question'" in capsys.readouterr().err
    assert not (tmp_path / "o.jsonl").exists()  # nothing half-written
    assert (
        main(
            ["decontaminate", str(bad), "--output", str(tmp_path / "o.jsonl"), "--data-dir", str(tmp_path / "nowhere")]
        )
        == 2
    )
    assert "gsm8k/test.jsonl" in capsys.readouterr().err
    assert main(["decontaminate", str(bad), "--output", str(bad), "--data-dir", str(data_dir)]) == 2
    assert "must differ" in capsys.readouterr().err


@pytest.mark.realdata
def test_real_test_sets_and_metamath_backward_rewrites():
    require_data()
    tests = load_test_questions(("gsm8k", "math"), DATA)
    assert len(tests) == 1319 + 5000
    deco = Decontaminator(tests)
    # Every test question is caught, under its own id.
    for t in tests[::7]:
        assert t.id in [h.test_id for h in deco.check(t.question)]
    # MetaMath's GSM8K "backward" set: each test question with a number replaced by x and a sentence
    # appended. Measured: 1232 of 1270 (97.0%) are caught with the right test id at 13-grams.
    id_of = {t.question: t.id for t in tests}
    rows = [json.loads(line) for line in (DATA / "extra" / "metamath_gsm8k_backward.jsonl").open()]
    right = sum(id_of[r["original_question"]] in [h.test_id for h in deco.check(r["question"])] for r in rows)
    assert right / len(rows) >= 0.96
    # GSM8K train vs test: measured 8 of 7473 flagged, each a sibling of a test question with
    # other names and numbers (e.g. "A train travels 270 miles in 3 hours..." / "A plane travels...").
    train = [json.loads(line)["question"] for line in (DATA / "gsm8k" / "train.jsonl").open()]
    assert sum(bool(deco.check(q)) for q in train) <= 15
