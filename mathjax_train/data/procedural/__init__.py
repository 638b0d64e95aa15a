"""Procedural, verifiable math problems: the project's embedded default training data.

``iterate(seed=..., split="train")`` yields unlimited GSM8K-style word problems (calculator
annotations, ``#### x``) and MATH-style algebra (``\\boxed{}``); ``verify_example`` re-checks one.
"""

from mathjax_train.data.procedural.generator import (
    FAMILIES,
    LEVELS,
    SPLITS,
    TEMPLATES,
    GenerationError,
    generate,
    in_split,
    iterate,
    select_templates,
    write_problems,
)


def verify_example(example: dict) -> None:
    """Re-derive an example's answer independently (arith evaluator / sympy); raises on mismatch."""
    from mathjax_train.data.procedural.verify import verify_example as _verify  # sympy is heavy

    _verify(example)


__all__ = [
    "FAMILIES",
    "LEVELS",
    "SPLITS",
    "TEMPLATES",
    "GenerationError",
    "generate",
    "in_split",
    "iterate",
    "select_templates",
    "verify_example",
    "write_problems",
]
