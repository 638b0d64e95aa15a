"""Answer extraction and equivalence for math answers (pure Python + sympy; imports no JAX).

`extract_answer(text) -> str | None` and `is_equivalent(gold, pred) -> bool` are the contract;
`stats()` exposes the counters of fast-path decisions, worker calls, timeouts and errors.
"""

from .equivalence import is_equivalent
from .extract import extract_answer
from .timeouts import stats

__all__ = ["extract_answer", "is_equivalent", "stats"]
