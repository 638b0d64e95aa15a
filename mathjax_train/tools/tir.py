"""Tool-integrated reasoning (TIR) text format, MARIO / ToRA style.

A solution interleaves prose, code blocks and the output of running them:

    Let me compute it.
    ```python
    x = 2 ** 10
    x
    ```
    ```output
    1024
    ```
    So the answer is \\boxed{1024}.

Generation is stopped at `STOP` (the opening of an output block, which the model learned to
write right after its code), the last code block is executed, and the real output block is
appended before generation resumes. Pure Python; executes through any `code -> ExecutionResult`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Protocol

__all__ = [
    "CODE_OPEN",
    "OUTPUT_OPEN",
    "FENCE",
    "STOP",
    "STOP_STRINGS",
    "last_code_block",
    "pending_code",
    "format_output",
    "ToolCall",
    "ToolLoopResult",
    "run_tool_loop",
]

CODE_OPEN = "```python\n"
OUTPUT_OPEN = "```output\n"
FENCE = "```"
STOP = "```output"  # generation stops here: the code block just closed, output comes from us
STOP_STRINGS = [STOP]
MAX_OUTPUT_CHARS = 2000  # what goes back into the context; the sandbox caps its own capture

_CODE_RE = re.compile(r"```python[ \t]*\n(.*?)```", re.DOTALL)


def last_code_block(text: str) -> str | None:
    """Code of the last complete ```python block in `text` (None if there is none)."""
    blocks = _CODE_RE.findall(text)
    return blocks[-1] if blocks else None


def pending_code(text: str) -> str | None:
    """Code of the last python block if it is closed and has no output block after it yet."""
    matches = list(_CODE_RE.finditer(text))
    if not matches:
        return None
    tail = text[matches[-1].end() :]
    if OUTPUT_OPEN.strip() in tail or tail.strip():
        return None
    return matches[-1].group(1)


class _Result(Protocol):
    @property
    def ok(self) -> bool: ...
    @property
    def output(self) -> str: ...
    @property
    def error(self) -> str | None: ...


def format_output(result: _Result, max_chars: int = MAX_OUTPUT_CHARS) -> str:
    """Render an ExecutionResult as the output block to append (printed output, then error)."""
    body = result.output.rstrip("\n")
    if len(body) > max_chars:
        cut = len(body) - max_chars
        body = body[: max_chars // 2] + f"\n...[{cut} characters omitted]...\n" + body[-max_chars // 2 :]
    if result.error:
        body = f"{body}\n{result.error}" if body else result.error
    return f"{OUTPUT_OPEN}{body}\n{FENCE}\n"


@dataclass
class ToolCall:
    code: str
    result: _Result


@dataclass
class ToolLoopResult:
    """`transcript` = prompt + everything generated and executed; `completion` = without prompt."""

    transcript: str
    completion: str
    calls: list[ToolCall] = field(default_factory=list)
    hit_max_calls: bool = False


def run_tool_loop(
    generate_fn: Callable[..., str], prompt: str, max_calls: int = 4, executor=None, timeout_s: float = 5.0
) -> ToolLoopResult:
    """Alternate generation and execution until the model stops asking for code.

    `generate_fn(text, stop=STOP_STRINGS) -> str` returns the continuation of `text` (a trailing
    stop string, if the backend keeps it, is removed here). `executor` is a `Session` or any
    callable `code -> ExecutionResult`; by default a fresh `Session` is opened so later blocks
    see the variables of earlier ones. After `max_calls` executions a further code block is left
    unexecuted and the loop ends (`hit_max_calls=True`).
    """
    own = executor is None
    if own:
        from .interpreter import Session  # lazy: formatting helpers need no sandbox

        executor = Session(timeout_s=timeout_s)
    run = executor.run if hasattr(executor, "run") else executor
    text, hit_max = prompt, False
    calls: list[ToolCall] = []
    try:
        while True:
            piece = generate_fn(text, stop=list(STOP_STRINGS))
            if not piece:
                break
            if piece.endswith(STOP):
                piece = piece[: -len(STOP)]
            text += piece
            code = pending_code(text)
            if code is None:
                break
            if len(calls) >= max_calls:
                hit_max = True
                break
            result = run(code)
            calls.append(ToolCall(code, result))
            if not text.endswith("\n"):
                text += "\n"
            text += format_output(result)
    finally:
        if own:
            executor.close()
    return ToolLoopResult(text, text[len(prompt) :], calls, hit_max)
