"""Several worked methods per problem (procedural/methods.py) and the step check built on them (steps.py)."""

import json

import pytest

from mathjax_train.data import procedural as P
from mathjax_train.data.procedural.generator import worked_methods
from mathjax_train.data.procedural.steps import false_equalities, follows_a_method, off_method_numbers, step_checker
from mathjax_train.errors import InputError
from mathjax_train.synth.rft import WRONG_STEP, select

DEMO_FAMILIES = [
    "math_style/expand_product",
    "math_style/linear_equation",
    "math_style/quadratic_roots",
    "math_style/gcd_lcm",
    "gsm_style/sharing",
]


def test_every_method_of_every_template_and_level_verifies_and_methods_differ():
    for name in sorted(P.TEMPLATES):
        for level in P.LEVELS:
            for index in range(6):
                ex = P.generate(index, seed=3, templates=[name], levels=[level])
                methods = worked_methods(ex)
                assert ex["solution"] == methods[ex["method"]]
                assert len(set(methods)) == len(methods), (name, level)
                for m in methods:  # sympy / the calculator re-derive the answer from each method's text
                    P.verify_example(dict(ex, solution=m))
                    assert follows_a_method(m, methods), (name, level, m)  # the step check passes every method


def test_the_demo_families_show_each_method_on_some_problems():
    """The seed set shows one method per problem, and every method somewhere, so other paths exist to be found."""
    for name in DEMO_FAMILIES:
        shown = {(len(worked_methods(ex)), ex["method"]) for ex in P.iterate(templates=[name], levels=[1], stop=60)}
        most = max(n for n, _ in shown)
        assert most >= 2 and {m for n, m in shown if n == most} == set(range(most)), name


def test_a_path_passes_when_one_method_writes_all_its_step_numbers():
    methods = ["a 5 * 12 = 60\nb 60 / 5 = 12\n#### 12", "a 5 / 5 = 1\nb 1 * 12 = 12\n#### 12"]
    assert off_method_numbers("He buys 5 * 12 = 60.\nEach gets 60 / 5 = 12.\n#### 12", methods) == set()
    assert off_method_numbers("Each 5 / 5 = 1.\n1 * 12 = 12.\n#### 12", methods) == set()
    # right answer through wrong steps: 26 and 13 are written by no method
    assert off_method_numbers("She buys 2 * 12 = 26.\nEach gets 26 / 3 = 13.\n#### 12", methods) == {
        "2",
        "26",
        "3",
        "13",
    }
    # numbers from two methods mixed in one path follow neither
    assert off_method_numbers("5 * 12 = 60, 1 * 12 = 12\n#### 12", methods) == {"1"}
    assert off_method_numbers("#### 12", methods) == {"<no steps>"}  # an answer alone is not a worked path


def test_equalities_of_plain_numbers_must_hold():
    wrong = "Factor: $33 = 3^{5}$, $60 = 2^{2} \\cdot 3 \\cdot 5$.\nTake each common prime: $3$.\n#### 3"
    assert false_equalities(wrong) == ["33 = 3^{5}"]
    right = "Isolate $x$: $x = \\frac{17 - (3)}{7} = \\frac{14}{7} = 2$.\n#### 2"
    assert false_equalities(right) == []
    assert false_equalities(right.replace("{14}", "{15}")) == ["x = \\frac{17 - (3)}{7} = \\frac{15}{7} = 2"]
    # an equation in x is not an equality of numbers; an unbounded power is not evaluated (nor flagged)
    assert false_equalities("So $3x = 7$ and $2^{999999} = 1$.\n#### 2") == []
    # the numbers of a method, in a false equality, do not follow it
    methods = ["Factor: $33 = 3 \\cdot 11$, $60 = 2^{2} \\cdot 3 \\cdot 5$.\nLowest powers: $3$.\nThe answer is $3$."]
    assert follows_a_method(methods[0], methods)
    assert not follows_a_method("Factor: $33 = 3 \\cdot 11 \\cdot 5$.\nLowest powers: $3$.\n#### 3", methods)


def test_step_checker_regenerates_the_problem_and_refuses_a_record_it_did_not_write():
    ex = P.generate(7, seed=1, templates=["math_style/quadratic_roots"], levels=[1])
    ok = step_checker(ex)
    for m in worked_methods(ex):
        assert ok(m)
    body = worked_methods(ex)[0].splitlines()
    assert not ok("\n".join([body[0].replace("Factor", "Factor 9999"), *body[1:]]))
    with pytest.raises(InputError, match="not the one the generator writes"):
        step_checker(dict(ex, question=ex["question"] + " "))
    with pytest.raises(InputError, match="not a procedural problem"):
        step_checker({"id": "gsm8k/train/3", "source": "gsm8k", "level": 1, "question": "q"})


def test_select_turns_down_right_answers_reached_by_a_wrong_step():
    methods = ["6 = 2 * 3\nThe answer is $\\boxed{6}$.", "6 = 3 + 3\nThe answer is $\\boxed{6}$."]
    paths = ["6 = 2 * 3\n#### 6", "6 = 3 + 3\n#### 6", "6 = 4 + 2\n#### 6", "7\n#### 5"]
    sel = select("6", paths, steps_ok=lambda p: not off_method_numbers(p, methods))
    assert sel.kept_indices == [0, 1] and +sel.rejected == {WRONG_STEP: 1, "wrong_answer": 1}
    assert select("6", paths).kept_indices == [0, 1, 2]  # without the check the wrong step is kept


def test_pooling_with_check_steps_keeps_only_paths_that_follow_a_method(tmp_path):
    from mathjax_train.synth.rft_pool import pool_files

    ex = P.generate(2, seed=5, templates=["gsm_style/sharing"], levels=[1])
    good = [m.replace("He ", "She ") for m in worked_methods(ex)]
    # right arithmetic, right answer, but steps that compute another problem
    bad = "She buys 97 * 1 = 97 things.\nShe gives 97 - 90 = 7 away.\n#### " + ex["answer"]
    base = {
        "question": ex["question"],
        "answer": ex["answer"],
        "level": 1,
        "question_id": ex["id"],
        "question_index": 0,
        "checkpoint": None,
    }
    rows = [dict(base, id=ex["id"], solution=ex["solution"], source=ex["source"], origin="original")]
    rows += [
        dict(base, id=f"{ex['id']}#rft{n}", solution=s, source="rft/" + ex["source"], origin="sampled")
        for n, s in enumerate(good + [bad], start=1)
    ]
    rows = [dict(r, paths_total=len(rows), path_index=i) for i, r in enumerate(rows)]
    src = tmp_path / "samples.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    stats = pool_files([str(src)], str(tmp_path / "checked.jsonl"), include_references=False, check_steps=True)

    def solutions(name):
        return [json.loads(line)["solution"] for line in (tmp_path / name).read_text().splitlines()]

    kept = solutions("checked.jsonl")
    assert bad not in kept and len(kept) == len(set(good)) and stats["rejected"][WRONG_STEP] == 1
    pool_files([str(src)], str(tmp_path / "unchecked.jsonl"), include_references=False)
    assert bad in solutions("unchecked.jsonl")
