"""A request's inbox: the engine thread puts events, the request's coroutine on the event loop takes them.

One wake-up of the event loop per batch of events (not one per event), so a step that produces
tokens for hundreds of rows costs the event loop one callback per request.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque


class EventBox:
    def __init__(self, loop: asyncio.AbstractEventLoop):
        self._loop = loop
        self._items: deque = deque()
        self._lock = threading.Lock()
        self._ready = asyncio.Event()
        self._scheduled = False

    def put(self, item) -> None:
        """Any thread. Raises RuntimeError when the event loop is closed."""
        with self._lock:
            self._items.append(item)
            if self._scheduled:
                return
            self._scheduled = True
        self._loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        with self._lock:
            self._scheduled = False
        self._ready.set()

    async def take(self) -> list:
        """Every event waiting (at least one), in order; on the event loop."""
        while True:
            with self._lock:
                if self._items:
                    items = list(self._items)
                    self._items.clear()
                    self._ready.clear()
                    return items
            await self._ready.wait()
            self._ready.clear()
