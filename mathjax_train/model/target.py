"""The chip a program is being compiled for, which need not be the host's: `plan --compile` traces programs for a
TPU slice on a CPU machine. Kernels ask `current()` (not `jax.default_backend()`) whether to emit the Mosaic kernel
or run the Pallas interpreter, and which chip generation to tune block sizes for.

Programs set it while they are traced (`compiling_for(devices)` around the traced body); outside one, it is this
process's first device, so eager calls and programs traced without a target behave as before.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import jax


@dataclass(frozen=True)
class Target:
    platform: str  # "tpu", "gpu" or "cpu", as jax.Device.platform names it
    device_kind: str  # jax.Device.device_kind: "TPU v5 lite", "TPU v5", "TPU v6 lite", "cpu", ...

    @property
    def tpu_version(self) -> int:
        """The TPU generation (4, 5, 6, 7), or -1 off TPU."""
        if self.platform != "tpu":
            return -1
        m = re.search(r"(\d+)", self.device_kind)
        return int(m.group(1)) if m else -1

    @property
    def interpret_pallas(self) -> bool:
        """Pallas TPU kernels compile with Mosaic on a TPU target and run in the interpreter elsewhere."""
        return self.platform != "tpu"


_current: contextvars.ContextVar[Target | None] = contextvars.ContextVar("mathjax_compile_target", default=None)


def of_device(device: Any) -> Target:
    return Target(device.platform, device.device_kind)


def current() -> Target:
    """The target of the program being traced, else this process's first device."""
    target = _current.get()
    return target if target is not None else of_device(jax.devices()[0])


@contextlib.contextmanager
def compiling_for(devices: Iterable[Any]) -> Iterator[Target]:
    """Within the block, kernels see the platform of `devices` (the program's devices; one kind per program)."""
    first = next(iter(devices), None)
    if first is None:
        raise ValueError("compiling_for: no devices")
    target = of_device(first)
    token = _current.set(target)
    try:
        yield target
    finally:
        _current.reset(token)


def traced_for(devices: Iterable[Any], fn: Callable) -> Callable:
    """`fn` whose body (run when jit traces it) sees `devices` as the compile target."""
    devices = tuple(devices)

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with compiling_for(devices):
            return fn(*args, **kwargs)

    return wrapped
