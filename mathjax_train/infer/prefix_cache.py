"""Prefilled pages kept after their rows end and found again by content (automatic prefix caching).

Few-shot evaluation sends the same long context before every question, RL sends each prompt once per
step, a chat client resends the conversation so far: their prompts share leading pages. A full page's
keys and values depend only on the tokens up to its end (and the model's parameters), so a trie keyed
by each page's tokens, one level per page, finds the longest run of cached full pages a new prompt
starts with. Keys are the tokens themselves, not hashes, so a hit is never a collision.

The cache holds one pool reference on each page it keeps (infer/pages.py counts references), so a
page outlives the rows that computed it. Pages that only the cache holds are given back when the pool
runs short, least recently used first, deepest first (a run's tail before its head). The engine
clears the cache when the model's parameters change.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from mathjax_train.infer.pages import PagePool


@dataclass(eq=False)
class _Node:
    page: int
    parent: "_Node | None"
    key: tuple[int, ...]
    children: dict[tuple[int, ...], "_Node"] = field(default_factory=dict)


class PrefixCache:
    def __init__(self, pool: PagePool, page_size: int):
        self.pool, self.page_size = pool, page_size
        self._root: dict[tuple[int, ...], _Node] = {}
        self._lru: OrderedDict[_Node, None] = OrderedDict()  # oldest first

    @property
    def held(self) -> int:
        """Pages the cache holds a reference on."""
        return len(self._lru)

    def cached_only(self) -> int:
        """Pages no row holds, kept by the cache alone (what `evict` can give back)."""
        return sum(self.pool.refs(node.page) == 1 for node in self._lru)

    def _page_keys(self, tokens, upto: int):
        ps = self.page_size
        return [tuple(tokens[i * ps : (i + 1) * ps]) for i in range(upto // ps)]

    def _walk(self, tokens, upto: int) -> list[_Node]:
        """The cached nodes of the longest run of full pages within tokens[:upto]."""
        path: list[_Node] = []
        level = self._root
        for key in self._page_keys(tokens, upto):
            node = level.get(key)
            if node is None:
                break
            path.append(node)
            level = node.children
        return path

    def _touch(self, path: list[_Node]) -> None:
        for node in reversed(path):  # the head ends most recent, so a run is evicted from its tail
            self._lru.move_to_end(node)

    def lookup(self, tokens, upto: int) -> list[int]:
        """Pages holding the longest cached run of full pages of tokens[:upto], each shared with the caller
        (who releases them like its own pages)."""
        path = self._walk(tokens, upto)
        self._touch(path)
        pages = [n.page for n in path]
        self.pool.share(pages)
        return pages

    def insert(self, tokens, pages: list[int], upto: int) -> None:
        """Keep the full pages of tokens[:upto] (whose keys and values are in `pages`), if not yet cached."""
        path: list[_Node] = []
        level, parent = self._root, None
        for i, key in enumerate(self._page_keys(tokens, upto)):
            node = level.get(key)
            if node is None:
                node = _Node(pages[i], parent, key)
                level[key] = node
                self.pool.share([node.page])
                self._lru[node] = None
            path.append(node)
            level, parent = node.children, node
        self._touch(path)

    def evict(self, n: int) -> int:
        """Give back up to n pages that only the cache holds, least recently used first; returns how many."""
        freed = 0
        for node in list(self._lru):
            if freed >= n:
                break
            if node in self._lru and self.pool.refs(node.page) == 1:
                freed += self._drop(node)
        return freed

    def clear(self) -> None:
        for node in list(self._root.values()):
            self._drop(node)

    def _drop(self, node: _Node) -> int:
        """Forget a node and everything cached after it (unreachable without it); returns the pages freed."""
        freed = 0
        for child in list(node.children.values()):
            freed += self._drop(child)
        level = node.parent.children if node.parent is not None else self._root
        del level[node.key]
        del self._lru[node]
        freed += self.pool.refs(node.page) == 1
        self.pool.release([node.page])
        return freed
