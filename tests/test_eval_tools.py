"""`evaluate --tools python` on a forced checkpoint: the answer is only reachable by running the code
the model writes (see forced_model.py), so a right answer proves the tool loop ran inside evaluate."""

import json

import pytest

from forced_model import (
    ADDED,
    ANS1,
    CODE1,
    CODE2,
    OUT1,
    OUT2,
    Q1,
    Q2,
    Q3,
    SCRIPT,
    STOP_TOKEN,
    make_forced_checkpoint,
    write_jsonl,
)
from mathjax_train.cli import main


@pytest.fixture(scope="module")
def forced(tmp_path_factory):
    d = tmp_path_factory.mktemp("eval_tools")
    ckpt = make_forced_checkpoint(d, SCRIPT, ADDED)
    # the model's own chat template passes the question through unchanged, so the prompt ends in
    # the scripted question token
    cfg_file = ckpt / "tokenizer" / "tokenizer_config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg["chat_template"] = "{{ messages[-1]['content'] }}"
    cfg_file.write_text(json.dumps(cfg))
    data = write_jsonl(
        d / "q.jsonl",
        [
            {"question": "Compute 6 times 7, plus one. " + Q1, "answer": "43", "id": "code"},
            {"question": "Say seven. " + Q2, "answer": "7", "id": "plain"},
            {"question": "Use a missing name. " + Q3, "answer": "5", "id": "error"},
        ],
    )
    return d, ckpt, data


def _evaluate(d, ckpt, data, name, *extra):
    out = d / name
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(ckpt),
                "--dataset",
                str(data),
                "--template",
                "chat",
                "--max-new-tokens",
                "12",
                "--batch-size",
                "2",
                "--output-dir",
                str(out),
                "--no-progress",
                *extra,
            ]
        )
        == 0
    )
    return json.loads((out / "report.json").read_text())


def test_evaluate_with_python_tool_runs_the_code(forced):
    d, ckpt, data = forced
    rep = _evaluate(d, ckpt, data, "tools", "--tools", "python")
    rows = {r["id"]: r for r in rep["samples"]}
    assert rows["code"]["completions"] == [CODE1 + OUT1 + CODE2 + OUT2 + ANS1]
    assert rows["code"]["answers"] == ["43"] and rows["code"]["correct"] == [True]
    assert rows["code"]["tool_calls"] == [2]
    assert rows["plain"]["correct"] == [True] and rows["plain"]["tool_calls"] == [0]
    assert rows["error"]["answers"] == [None] and rows["error"]["tool_calls"] == [1]
    assert rep["accuracy"] == pytest.approx(2 / 3) and rep["settings"]["tools"] == "python"
    assert rep["no_answer_extracted"] == 1


def test_without_tools_the_code_question_is_not_solved(forced):
    d, ckpt, data = forced
    rep = _evaluate(d, ckpt, data, "plain", "--limit", "1")
    row = rep["samples"][0]
    assert row["completions"][0].startswith(CODE1 + STOP_TOKEN)  # nothing ran: no real output block
    assert OUT1 not in row["completions"][0] and row["correct"] == [False]
