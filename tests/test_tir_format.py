"""Tool-integrated reasoning format: parsing, rendering, and the generate/execute loop."""

import re

from mathjax_train.tools.interpreter import ExecutionResult, Session
from mathjax_train.tools.tir import STOP, STOP_STRINGS, format_output, last_code_block, pending_code, run_tool_loop


def test_last_code_block_and_pending_code():
    text = "a\n```python\nx = 1\n```\n```output\n\n```\nb\n```python\ny = x + 1\nprint(y)\n```\n"
    assert last_code_block(text) == "y = x + 1\nprint(y)\n"
    assert pending_code(text) == "y = x + 1\nprint(y)\n"
    done = text + "```output\n2\n```\nThe answer is 2."
    assert last_code_block(done) == "y = x + 1\nprint(y)\n"
    assert pending_code(done) is None
    assert last_code_block("no code here ```output\n1\n```") is None
    assert pending_code("```python\nunclosed = 1\n") is None


def test_format_output_renders_output_then_error():
    ok = ExecutionResult(True, "42\n", None, False)
    assert format_output(ok) == "```output\n42\n```\n"
    bad = ExecutionResult(False, "partial\n", "ZeroDivisionError: division by zero", False)
    assert format_output(bad) == "```output\npartial\nZeroDivisionError: division by zero\n```\n"
    silent = ExecutionResult(False, "", "TimeoutError: execution exceeded the 5 s wall-clock limit", True)
    assert format_output(silent).startswith("```output\nTimeoutError")
    long = ExecutionResult(True, "\n".join(map(str, range(5000))), None, False)
    rendered = format_output(long, max_chars=200)
    assert "characters omitted" in rendered and len(rendered) < 300
    assert rendered.startswith("```output\n0\n1\n") and rendered.rstrip().endswith("4999\n```")


class ScriptedModel:
    """A fake `generate_fn`: replays forced continuations, each may depend on the text so far."""

    def __init__(self, steps):
        self.steps, self.seen = list(steps), []

    def __call__(self, text, stop):
        assert stop == STOP_STRINGS
        self.seen.append(text)
        step = self.steps.pop(0)
        return step(text) if callable(step) else step


def _last_output(text):
    return re.findall(r"```output\n(.*?)\n```", text, re.DOTALL)[-1]


def test_tool_loop_executes_blocks_in_one_session():
    model = ScriptedModel(
        [
            "We need 2^100 mod 97.\n```python\nbase = 2 ** 100\nr = base % 97\nprint(r)\n```\n",
            # the second block uses a variable from the first: only works in a session
            "Check with pow:\n```python\nassert pow(2, 100, 97) == r\nr * 2\n```\n" + STOP,
            # the "model" reads the real output back, as a real model would
            lambda text: f"So the answer is \\boxed{{{_last_output(text)}}}.",
        ]
    )
    res = run_tool_loop(model, "Q: 2^100 mod 97?\n", max_calls=4)
    expected = 2**100 % 97
    assert [c.result.output for c in res.calls] == [f"{expected}\n", f"{expected * 2}\n"]
    assert all(c.result.ok for c in res.calls)
    assert res.transcript.startswith("Q: 2^100 mod 97?\n")
    assert res.completion == res.transcript[len("Q: 2^100 mod 97?\n") :]
    assert f"```output\n{expected}\n```\n" in res.transcript
    assert res.transcript.endswith(f"\\boxed{{{expected * 2}}}.")
    assert STOP + STOP not in res.transcript and res.transcript.count("```output") == 2
    assert not res.hit_max_calls
    # each generation after a call saw the executed output
    assert model.seen[1].endswith(f"```output\n{expected}\n```\n")


def test_tool_loop_reports_errors_and_respects_max_calls():
    block = "```python\nundefined_thing + 1\n```\n"
    model = ScriptedModel(["try\n" + block, "again\n" + block, "once more\n" + block])
    with Session(timeout_s=3) as session:
        res = run_tool_loop(model, "P\n", max_calls=2, executor=session)
        assert session.run("1 + 1").output == "2\n"  # caller's session still usable
    assert len(res.calls) == 2 and res.hit_max_calls
    assert all(c.result.error == "NameError: name 'undefined_thing' is not defined" for c in res.calls)
    assert res.transcript.count("```output\nNameError") == 2
    assert res.transcript.endswith("once more\n" + block)  # third block left unexecuted


def test_tool_loop_with_plain_callable_and_final_answer_first():
    calls = []

    def executor(code):
        calls.append(code)
        return ExecutionResult(True, "7\n", None, False)

    res = run_tool_loop(ScriptedModel(["The answer is 3."]), "P\n", executor=executor)
    assert res.calls == [] and calls == [] and res.completion == "The answer is 3."
