"""The free-page pool of the paged KV cache: allocation, reference counts for shared prompt pages."""

from __future__ import annotations

from mathjax_train.errors import InputError
from mathjax_train.model.kv_cache import TRASH_PAGE


class OutOfPages(RuntimeError):
    """The pool cannot give the pages asked for; the scheduler preempts a sequence and retries."""


class PagePool:
    """Pages 1..num_pages-1 (page 0 is the trash page padding tokens write to). A page shared by the
    samples of one prompt has one reference per holder and returns to the pool with the last."""

    def __init__(self, num_pages: int):
        if num_pages < 2:
            raise InputError(f"the KV cache needs at least 2 pages, got {num_pages}")
        self.num_pages = num_pages
        self._free = list(range(num_pages - 1, TRASH_PAGE, -1))
        self._refs = [0] * num_pages

    @property
    def free(self) -> int:
        return len(self._free)

    @property
    def usable(self) -> int:
        return self.num_pages - 1

    def allocate(self, n: int) -> list[int]:
        if n > len(self._free):
            raise OutOfPages(f"asked for {n} pages, {len(self._free)} free")
        pages = [self._free.pop() for _ in range(n)]
        for p in pages:
            self._refs[p] = 1
        return pages

    def share(self, pages: list[int]) -> None:
        for p in pages:
            if self._refs[p] < 1:
                raise RuntimeError(f"page {p} is not allocated")
            self._refs[p] += 1

    def release(self, pages: list[int]) -> None:
        for p in pages:
            if self._refs[p] < 1:
                raise RuntimeError(f"page {p} released more often than it was taken")
            self._refs[p] -= 1
            if self._refs[p] == 0:
                self._free.append(p)

    def refs(self, page: int) -> int:
        return self._refs[page]
