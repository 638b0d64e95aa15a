"""Several worked solutions of one problem, each by another method (another order, intermediate quantity
or technique). A template returns `Methods` where it knows more than one; the generator shows one per
problem, and the step checker (procedural/steps.py) accepts a path that follows any of them."""

from __future__ import annotations


class Methods(tuple):
    """The worked solutions of one problem, in a fixed order (the generator picks one by the problem's seed)."""

    def __new__(cls, *solutions):
        if not solutions:
            raise ValueError("Methods needs at least one solution")
        return super().__new__(cls, solutions)


def all_methods(solution) -> list:
    """A template's solution (one, or `Methods`) as the list of its methods."""
    return list(solution) if isinstance(solution, Methods) else [solution]
