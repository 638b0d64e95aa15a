"""Procedural generator: reproducibility, split disjointness, and independently verified answers."""

import itertools
import json

import pytest

from mathjax_train.data import procedural as P
from mathjax_train.data.procedural import verify
from mathjax_train.grading import calculator


# ---- the strict calculator check used for reference solutions ------------------------------------


def test_exact_annotations_catch_wrong_rounded_or_unwritten_results():
    assert calculator.check_exact_annotations("She pays 3*4 = <<3*4=12>>12 dollars, then <<12+1=13>>13.") == 2
    with pytest.raises(calculator.CalculatorError, match="not 13"):
        calculator.check_exact_annotations("3*4 = <<3*4=13>>13")
    with pytest.raises(calculator.CalculatorError, match="not followed"):
        calculator.check_exact_annotations("3*4 = <<3*4=12>>11")
    # the RFT check accepts a rounded result; reference solutions must be exact
    assert calculator.first_bad_annotation("<<10/3=3.33>>3.33") is None
    with pytest.raises(calculator.CalculatorError, match="not 3.33"):
        calculator.check_exact_annotations("<<10/3=3.33>>3.33")
    with pytest.raises(calculator.CalculatorError):
        calculator.check_exact_annotations("<<__import__('os')=1>>1")


# ---- generator ---------------------------------------------------------------------------------

FIELDS = {
    "id": str,
    "question": str,
    "solution": str,
    "answer": str,
    "level": int,
    "source": str,
    "check": str,
    "method": int,
}


def test_examples_have_fields_and_every_template_level_generates():
    for name in P.TEMPLATES:
        for level in P.LEVELS:
            ex = P.generate(level, seed=11, templates=[name], levels=[level])
            assert {k: type(v) for k, v in ex.items()} == FIELDS
            assert ex["source"] == f"procedural/{name}" and ex["level"] == level
            assert ex["question"].strip() and ex["solution"].strip() and ex["answer"].strip()


def test_same_seed_and_index_same_problem_regardless_of_history():
    stream = list(P.iterate(seed=7, stop=60))
    assert [e["id"] for e in stream] == [f"procedural/train/7/{i}" for i in range(60)]
    assert P.generate(41, seed=7) == stream[41]
    assert list(P.iterate(seed=7, start=50, stop=60)) == stream[50:]
    other = list(P.iterate(seed=8, stop=60))
    assert sum(a["question"] == b["question"] for a, b in zip(stream, other)) < 5


def test_shards_partition_the_global_stream():
    full = list(P.iterate(seed=3, stop=40))
    shards = [list(P.iterate(seed=3, stop=40, shard_index=s, num_shards=3)) for s in range(3)]
    merged = sorted(itertools.chain(*shards), key=lambda e: int(e["id"].rsplit("/", 1)[1]))
    assert merged == full


def test_stream_is_unbounded_and_mostly_distinct():
    qs = [e["question"] for e in itertools.islice(P.iterate(seed=1), 3000)]
    assert len(set(qs)) > 0.9 * len(qs)


def test_train_and_heldout_are_disjoint():
    train = {e["question"] for e in P.iterate(seed=0, split="train", stop=3000)}
    held = list(P.iterate(seed=0, split="heldout", stop=3000))
    assert all(e["id"].startswith("procedural/heldout/") for e in held)
    assert not train & {e["question"] for e in held}
    assert all(P.in_split(q, "train") and not P.in_split(q, "heldout") for q in train)


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="valid"):
        P.generate(0, templates=["gsm_style/poetry"])
    with pytest.raises(ValueError, match="unknown split"):
        P.generate(0, split="test")
    with pytest.raises(ValueError, match="levels"):
        P.generate(0, levels=[6])
    assert set(P.select_templates(["gsm_style"])) == {n for n in P.TEMPLATES if n.startswith("gsm_style/")}


def test_gsm_style_calculator_annotations_are_all_correct():
    exs = list(P.iterate(seed=21, templates=["gsm_style"], stop=2000))
    for ex in exs:
        notes = [body.split("=")[1] for body in calculator.annotations(ex["solution"])]
        assert len(notes) == ex["level"] + 1, ex
        assert calculator.check_exact_annotations(ex["solution"]) == len(notes)
        assert ex["solution"].endswith(f"\n#### {ex['answer']}")
        assert int(ex["answer"]) > 0 and calculator.parse_result(notes[-1])[0] == int(ex["answer"])
        for result in notes:  # GSM8K-style: whole numbers throughout
            assert calculator.parse_result(result)[0].denominator == 1


def test_math_style_answers_rederived_by_sympy():
    exs = list(P.iterate(seed=5, templates=["math_style"], stop=350))
    assert {e["source"] for e in exs} == {f"procedural/{n}" for n in P.TEMPLATES if n.startswith("math_style/")}
    for ex in exs:
        assert f"\\boxed{{{ex['answer']}}}" in ex["solution"]
        P.verify_example(ex)


def test_verifier_rejects_tampered_examples():
    gsm = P.generate(0, templates=["gsm_style/shopping"], levels=[3])
    bad = dict(gsm, solution=gsm["solution"].replace("<<", "<<1+", 1))
    with pytest.raises(verify.VerificationError):
        P.verify_example(bad)
    alg = P.generate(0, templates=["math_style/linear_equation"], levels=[2])
    wrong = str(int(verify.latex_to_sympy(alg["answer"])[0]) + 1)
    bad = dict(
        alg, answer=wrong, solution=alg["solution"].replace(f"\\boxed{{{alg['answer']}}}", f"\\boxed{{{wrong}}}")
    )
    with pytest.raises(verify.VerificationError, match="sympy derives"):
        P.verify_example(bad)
    quad = P.generate(2, templates=["math_style/quadratic_roots"], levels=[3])
    check = json.loads(quad["check"])
    assert check["target"] == "set" and "," in quad["answer"]


def test_latex_answer_parser_handles_our_forms():
    import sympy

    x = sympy.Symbol("x")
    assert verify.latex_to_sympy("-\\frac{7}{5}, 8") == [sympy.Rational(-7, 5), 8]
    assert verify.latex_to_sympy("x^{3} + 3x^2 - 18x - 40") == [x**3 + 3 * x**2 - 18 * x - 40]
    assert verify.latex_to_sympy("\\left(4, -2\\right)") == [4, -2]
