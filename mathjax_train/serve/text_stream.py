"""One streamed choice's text, sent in deltas that are safe to send (no half characters, no stop strings)."""

from __future__ import annotations

from typing import Callable, Sequence


class TextStream:
    """One choice's text as its tokens arrive, in deltas that are safe to send: text is held back
    while it ends in an incomplete UTF-8 character (U+FFFD) or in what may be the start of a stop
    string, and never runs past a stop string. `finish` sends the rest of the final text."""

    def __init__(self, decode: Callable[[list[int]], str], eos_ids: Sequence[int], stops: Sequence[str]):
        self.decode, self.eos, self.stops = decode, set(eos_ids), tuple(stops)
        self.ids: list[int] = []
        self.sent = ""
        self.mismatch = False  # the final text did not extend what was sent (a decoder that is not prefix-stable)

    def push(self, ids: Sequence[int]) -> str:
        self.ids += [t for t in ids if t not in self.eos]
        text = self.decode(self.ids)
        safe = len(text.rstrip("\ufffd"))
        for s in self.stops:
            at = text.find(s)
            if at >= 0:
                safe = min(safe, at)
        safe -= self._stop_prefix(text[:safe])
        if safe <= len(self.sent) or not text.startswith(self.sent):
            return ""
        piece, self.sent = text[len(self.sent) : safe], text[:safe]
        return piece

    def _stop_prefix(self, text: str) -> int:
        """Length of the longest tail of `text` that is a proper prefix of a stop string."""
        longest = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(text)), longest, -1):
                if text.endswith(s[:k]):
                    longest = k
                    break
        return longest

    def finish(self, final_text: str) -> str:
        if not final_text.startswith(self.sent):
            self.mismatch = True
        rest, self.sent = final_text[len(self.sent) :], final_text
        return rest
