"""What XLA says about one compiled program, per chip: its memory (memory_analysis) and its cost
(cost_analysis), or, when the TPU compiler refuses it for want of HBM, the bytes its error names.

Per-chip bytes of a program: arguments + outputs - aliased (donated outputs reuse their argument's buffer)
+ temporaries + generated code. XLA's cost analysis counts a loop body once (a scan over layers, a decode
loop), so its FLOPs and bytes are not a step's; plan/roofline.py turns them into one.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass

MEMORY_KEYS = ("argument", "output", "alias", "temp", "code")
_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
# XLA:TPU's refusals, e.g. "the total memory required for HLO temporaries (96.88G) exceeds available HBM
# (15.75G)" and "Used 40.51G of 15.75G hbm. Exceeded hbm capacity by 24.76G."
_OOM_PATTERNS = (
    re.compile(
        r"required for [\w ]+? \((?P<need>[\d.]+)(?P<nu>[KMGT]?)\) exceeds available HBM \((?P<have>[\d.]+)(?P<hu>[KMGT]?)\)"
    ),
    re.compile(r"Used (?P<need>[\d.]+)(?P<nu>[KMGT]?) of (?P<have>[\d.]+)(?P<hu>[KMGT]?) hbm"),
)


@dataclass
class ProgramFigures:
    """One program on one chip. With `refused` the compiler ran out of HBM: `required` and `capacity` are the
    bytes its message names and the memory_analysis fields are 0."""

    name: str
    seconds: float
    argument: int = 0
    output: int = 0
    alias: int = 0
    temp: int = 0
    code: int = 0
    flops: float = 0.0
    bytes_accessed: float = 0.0
    refused: bool = False
    required: int = 0
    capacity: int = 0
    message: str = ""

    @property
    def total(self) -> int:
        """The program's bytes on a chip while it runs (for a refused one, what the compiler says it needs)."""
        if self.refused:
            return self.required
        return self.argument + self.output - self.alias + self.temp + self.code

    def as_dict(self) -> dict:
        return {**asdict(self), "total": self.total}


def _bytes(number: str, unit: str) -> int:
    return int(float(number) * _UNITS[unit])


def parse_refusal(message: str) -> tuple[int, int] | None:
    """(bytes required, bytes available) from XLA:TPU's out-of-memory error, or None if it is another error."""
    for pattern in _OOM_PATTERNS:
        m = pattern.search(message)
        if m:
            return _bytes(m["need"], m["nu"]), _bytes(m["have"], m["hu"])
    return None


def compile_figures(name: str, lowered) -> ProgramFigures:
    """Compile `lowered` (a jax.stages.Lowered) and read XLA's figures; an out-of-HBM refusal is a result,
    any other compile error is raised."""
    t = time.perf_counter()
    try:
        compiled = lowered.compile()
    except Exception as e:  # XLA raises JaxRuntimeError; its text says whether memory ran out
        refusal = parse_refusal(str(e))
        if refusal is None:
            raise
        return ProgramFigures(
            name,
            round(time.perf_counter() - t, 1),
            refused=True,
            required=refusal[0],
            capacity=refusal[1],
            message=str(e).strip().splitlines()[0][:400],
        )
    seconds = round(time.perf_counter() - t, 1)
    ma = compiled.memory_analysis()
    if ma is None:
        raise RuntimeError(f"XLA gives no memory analysis of the compiled {name} program")
    cost = compiled.cost_analysis() or {}
    if isinstance(cost, list):  # older JAX: one dict per partition
        cost = cost[0] if cost else {}
    return ProgramFigures(
        name,
        seconds,
        argument=int(ma.argument_size_in_bytes),
        output=int(ma.output_size_in_bytes),
        alias=int(ma.alias_size_in_bytes),
        temp=int(ma.temp_size_in_bytes),
        code=int(ma.generated_code_size_in_bytes),
        flops=float(cost.get("flops", 0.0)),
        bytes_accessed=float(cost.get("bytes accessed", 0.0)),
    )
