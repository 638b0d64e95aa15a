"""The input-error family: bad input from the user (a config, a flag, a file, a data row) raises an
`InputError` whose message names the file, line or field; the CLI prints it as one line and exits 2.
Anything else is a bug and keeps its traceback."""

from __future__ import annotations

import os
from typing import Any, Mapping


class InputError(ValueError):
    """Bad input from the user: a config, a flag, a file, a data row. The message names the file, line or
    field; the CLI prints it as one line. Anything else is a bug and keeps its traceback."""


class ConfigError(InputError):
    """A config file or override is wrong; the message names the source and the field."""


class JsonlFormatError(InputError):
    """A malformed JSONL record; ``path``, ``line`` (1-based) and ``field`` say where."""

    def __init__(self, path: str | os.PathLike, line: int, problem: str, field: str | None = None):
        self.path, self.line, self.field, self.problem = str(path), line, field, problem
        where = f"{self.path}:{line}"
        super().__init__(f"{where}: field {field!r}: {problem}" if field else f"{where}: {problem}")


class TemplateError(InputError):
    """Unknown template/ending name, or a chat template that cannot be used."""


class SettingsMismatchError(ConfigError):
    """An output (a run, a cache, a checkpointed state) was made with other settings than this run's;
    `diff` maps every differing key to (recorded, now)."""

    def __init__(
        self,
        where: str,
        subject: str,
        diff: Mapping[str, tuple[Any, Any]],
        remedy: str,
        *,
        prefix: str = "",
        sides: tuple[str, str] = ("recorded", "now"),
    ):
        self.where, self.diff = where, dict(diff)
        changes = "; ".join(f"{prefix}{k}: {a!r} -> {b!r}" for k, (a, b) in self.diff.items())
        super().__init__(f"{where}: {subject} ({sides[0]} -> {sides[1]}: {changes}); {remedy}")


class PreflightError(InputError):
    """The hosts disagree, or the device/process layout cannot run this config."""
