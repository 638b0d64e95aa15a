"""`evaluate` end to end on a tiny random checkpoint: the report's numbers recomputed by hand from
its own graded samples; resume after an interruption; settings guard; bad input through the CLI."""

import json
from collections import Counter
from fractions import Fraction
from math import comb

import pytest

from hf_fixtures import import_random_model
from mathjax_train.cli import main
from mathjax_train.config import EvalConfig, GenerateConfig
from mathjax_train.eval import harness
from mathjax_train.eval.completions import Completion
from mathjax_train.grading import extract_answer, is_equivalent

N_SAMPLES = 4
QUESTIONS = [f"What is {a} + {b}? Give the answer." for a, b in [(1, 2), (3, 4), (10, 5), (7, 7), (2, 9), (6, 1)]]


def _write_data(path, golds):
    rows = [
        {"question": q, "answer": g, "level": 1 + i % 3, "type": ["Algebra", "Geometry"][i % 2], "id": f"q{i}"}
        for i, (q, g) in enumerate(zip(QUESTIONS, golds))
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _cfg(ckpt, data, out, **kw):
    gen = dict(num_samples=N_SAMPLES, temperature=1.0, max_new_tokens=16, batch_size=8, seed=3)
    gen.update(kw.pop("gen", {}))
    return EvalConfig(
        checkpoint=str(ckpt),
        dataset=str(data),
        output_dir=str(out),
        answer_fallback="last_number",
        generate=GenerateConfig(**gen),
        **kw,
    )


def _value(answer):
    return Fraction(answer.replace(",", ""))  # the last-number fallback gives plain numbers


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A probe run finds what the random model answers; golds are then set to each row's most
    frequent answer (row 4: its least frequent, row 5: one it never gives), so the real run has
    rows where the majority is right, wrong, and where no sample is right."""
    d = tmp_path_factory.mktemp("evaluate")
    import_random_model(d, seed=0)
    probe = harness.evaluate(_cfg(d / "ckpt", _write_data(d / "probe.jsonl", ["0"] * 6), d / "probe"), progress=False)
    golds = []
    for i, row in enumerate(probe.report["samples"]):
        found = Counter(_value(a) for a in row["answers"] if a is not None).most_common()
        golds.append("123456" if not found or i == 5 else str(found[-1 if i == 4 else 0][0]))
    data = _write_data(d / "data.jsonl", golds)
    return {"dir": d, "ckpt": d / "ckpt", "data": data, "probe": probe.report}


def test_evaluate_report_matches_hand_computation(run, capsys):
    out = run["dir"] / "full"
    argv = [
        "evaluate",
        "--checkpoint",
        str(run["ckpt"]),
        "--dataset",
        str(run["data"]),
        "--num-samples",
        "4",
        "--temperature",
        "1.0",
        "--max-new-tokens",
        "16",
        "--seed",
        "3",
        "--output-dir",
        str(out),
        "--answer-fallback",
        "last_number",
        "--no-progress",
    ]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    rep = json.loads((out / "report.json").read_text())
    rows = rep["samples"]
    assert [r["id"] for r in rows] == [f"q{i}" for i in range(6)] and rep["num_problems"] == 6
    n, ks = N_SAMPLES, [1, 2, 4]
    assert rep["ks"] == ks
    for row, probe_row in zip(rows, run["probe"]["samples"]):
        assert len(row["completions"]) == n
        assert row["completions"] == probe_row["completions"]  # per-problem seeds: same samples as the probe
        assert row["answers"] == [extract_answer(t, fallback="last_number") for t in row["completions"]]
        assert row["correct"] == [a is not None and is_equivalent(row["gold"], a) for a in row["answers"]]
    cs = [sum(r["correct"]) for r in rows]
    assert any(0 < c < n for c in cs) and 0 in cs, cs  # the numbers below are not all 0 or all 1
    assert 0 < rep["maj@k"]["4"] < rep["pass@k"]["4"], rep  # maj@k and pass@k differ

    def pass_k(c, k):  # the Codex estimator written out
        return 1 - comb(n - c, k) / comb(n, k)

    def maj_k(row, k):  # count votes by value among the first k; ties go to the value seen first
        votes = [_value(a) for a in row["answers"][:k] if a is not None]
        if not votes:
            return 0.0
        counts = Counter(votes)
        top = max(counts.values())
        winner = next(v for v in votes if counts[v] == top)
        return float(winner == _value(row["gold"]))

    def table(sel):
        return {
            "accuracy": sum(r["correct"][0] for r in sel) / len(sel),
            "pass@k": {str(k): sum(pass_k(sum(r["correct"]), k) for r in sel) / len(sel) for k in ks},
            "maj@k": {str(k): sum(maj_k(r, k) for r in sel) / len(sel) for k in ks},
        }

    def close(got, want):
        assert got["accuracy"] == pytest.approx(want["accuracy"])
        for name in ("pass@k", "maj@k"):
            assert got[name] == pytest.approx(want[name]), name

    close(rep, table(rows))
    for level in (1, 2, 3):
        close(rep["by_level"][f"Level {level}"], table([r for r in rows if r["level"] == level]))
    for subject in ("Algebra", "Geometry"):
        close(rep["by_subject"][subject], table([r for r in rows if r["subject"] == subject]))
    assert rep["no_answer_extracted"] == sum(a is None for r in rows for a in r["answers"])
    assert summary["accuracy"] == rep["accuracy"] and summary["pass@k"] == rep["pass@k"]
    assert summary["generated"] == 6 and summary["resumed"] == 0
    md = (out / "summary.md").read_text()
    assert "| pass@k |" in md and "| maj@k |" in md and "| Level 2 | 2 |" in md and "| Geometry | 3 |" in md
    png = out / "accuracy_vs_k.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    assert matplotlib.image.imread(str(png)).shape[:2] == (350, 500)
    run["full"] = rep


def _without_run_info(rep):
    return {k: v for k, v in rep.items() if k != "run"}


def test_interrupted_run_resumes_without_regenerating(run):
    full = run.get("full")
    if full is None:
        pytest.skip("needs test_evaluate_report_matches_hand_computation first")
    out = run["dir"] / "resume"
    cfg = _cfg(run["ckpt"], run["data"], out, gen={"batch_size": 4})  # one problem per batch

    class Stop(Exception):
        pass

    written = []

    def stop_after_two(row):
        written.append(row["id"])
        if len(written) == 2:
            raise Stop

    with pytest.raises(Stop):
        harness.evaluate(cfg, on_row=stop_after_two, progress=False)
    samples = out / "samples.jsonl"
    first_two = samples.read_bytes()
    assert len(first_two.splitlines()) == 2
    with samples.open("ab") as f:
        f.write(b'{"id": "q2", "index": 2, "compl')  # a row cut off mid-write

    asked = []

    def counting_source(c, prompts):
        complete = harness.default_source(c, prompts)

        def counted(batch, seeds):
            asked.extend(seeds)
            return complete(batch, seeds)

        return counted

    res = harness.evaluate(cfg, make_source=counting_source, progress=False)
    assert (res.generated, res.resumed) == (4, 2)
    assert len(asked) == 4 * N_SAMPLES  # only the unfinished problems were decoded
    assert res.report["run"]["partial_lines_discarded"] == 1
    assert samples.read_bytes().startswith(first_two) and len(samples.read_bytes().splitlines()) == 6
    assert _without_run_info(res.report) == _without_run_info(full)

    def no_source(c, prompts):
        raise AssertionError("a finished run must not decode again")

    again = harness.evaluate(cfg, make_source=no_source, progress=False)
    assert (again.generated, again.resumed) == (0, 6)
    assert _without_run_info(again.report) == _without_run_info(full)


def test_other_settings_in_the_same_output_dir_are_refused(run):
    out = run["dir"] / "guard"

    def fixed_source(c, prompts):  # the guard is about settings, not decoding
        return lambda batch, seeds: [Completion([7] * 5, "The answer is 3.", "eos") for _ in batch]

    first = harness.evaluate(_cfg(run["ckpt"], run["data"], out, limit=2), make_source=fixed_source, progress=False)
    golds = [json.loads(line)["answer"] for line in run["data"].read_text().splitlines()[:2]]
    assert first.report["accuracy"] == sum(g == "3" for g in golds) / 2
    with pytest.raises(
        ValueError,
        match=r"run.json: .*other settings \(recorded -> now: temperature: 1.0 -> 0.5\); use another --output-dir",
    ):
        harness.evaluate(
            _cfg(run["ckpt"], run["data"], out, limit=2, gen={"temperature": 0.5}),
            make_source=fixed_source,
            progress=False,
        )


def test_cli_bad_input_names_file_line_and_field(run, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "q", "answer": "1"}) + "\n" + json.dumps({"problem": "p"}) + "\n")
    code = main(
        ["evaluate", "--checkpoint", str(run["ckpt"]), "--dataset", str(bad), "--output-dir", str(tmp_path / "o")]
    )
    err = capsys.readouterr().err
    assert code == 2 and f"mathjax-train evaluate: error: {bad}:2: field 'answer': missing required field" in err
    code = main(["evaluate", "--checkpoint", str(run["ckpt"]), "--dataset", "gsm9k", "--no-progress"])
    assert code == 2 and "neither one of ['gsm8k', 'math', 'math500'] nor an existing file" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: unknown template
        main(["evaluate", "--checkpoint", "x", "--dataset", "gsm8k", "--template", "alpaca"])
