"""When a row ends and what it ends with: stop strings, EOS and max_tokens after each decode chunk, and
finishing a row (its completion, its pages back or held, its callback).

Stop strings are matched on decoded text, so a row's tokens past the one that completes a stop string are
dropped (and never shown to `on_tokens`); only each chunk's tail is decoded to look for one.
"""

from __future__ import annotations

from mathjax_train.infer.kv_manager import KVManager
from mathjax_train.infer.params import Completion
from mathjax_train.infer.rows import EngineStats, SeqState


class RowStops:
    def __init__(self, tokenizer, eos_ids: list[int], kv: KVManager, stats: EngineStats):
        self.tokenizer, self.kv, self.stats = tokenizer, kv, stats
        self.eos = set(eos_ids)

    def text(self, ids: list[int]) -> str:
        return self.tokenizer.decode([t for t in ids if t not in self.eos])

    def after_tokens(self, row: SeqState, new: list[int]) -> None:
        """Row `row` got `new` tokens: cut at a stop string, pass them on, and finish it if it is done."""
        gen = row.generated
        if row.params.stop and self._stop_in_tail(gen, len(gen) - len(new), row.params.stop):
            text = self.text(gen)
            hits = [text.find(s) for s in row.params.stop if s in text]
            if hits:
                cut = min(hits)
                keep = self._tokens_reaching(gen, len(gen) - len(new), row.params.stop)
                dropped = len(gen) - keep
                if dropped:
                    del row.tokens[len(row.tokens) - dropped :]
                    del row.logprobs[keep:]
                    row.cached = len(row.tokens) - 1
                    new = new[: max(0, len(new) - dropped)]
                if row.on_tokens and new:
                    row.on_tokens(row, new)
                self.finish(row, "stop", text[:cut])
                return
        if row.on_tokens and new:
            row.on_tokens(row, new)
        if gen and gen[-1] in self.eos and not row.params.ignore_eos:
            self.finish(row, "eos")
        elif len(gen) >= row.params.max_tokens:
            self.finish(row, "length")

    def _stop_in_tail(self, gen: list[int], checked: int, stops: tuple[str, ...]) -> bool:
        """Whether a stop string may end in gen[checked:]: the first `checked` tokens hold none, so one that
        ends later starts at most len(stop) characters earlier, within 4 tokens a character (a character
        may take up to 4 byte-level tokens) plus a margin. Decoding that tail, not the whole round, keeps
        each chunk's check short."""
        back = 4 * max(map(len, stops)) + 8
        tail = self.text(gen[max(0, checked - back) :])
        return any(s in tail for s in stops)

    def _tokens_reaching(self, gen: list[int], checked: int, stops: tuple[str, ...]) -> int:
        """The fewest leading tokens whose text contains a stop string; the first `checked` tokens
        were checked after the previous chunk and contain none, so the search starts after them."""
        for k in range(checked + 1, len(gen) + 1):
            t = self.text(gen[:k])
            if any(s in t for s in stops):
                return k
        return len(gen)

    def finish(self, row: SeqState, reason: str, text: str | None = None) -> None:
        """End `row` with `reason` (its text decoded unless given); held rather than ended after a stop
        string when it was submitted with hold_on_stop."""
        gen = list(row.generated)
        row.completion = Completion(gen, self.text(gen) if text is None else text, reason, list(row.logprobs))
        self.kv.drop(row, hold=row.hold_on_stop and reason == "stop")
        self.stats.finished += 1
        if row.on_finish:
            row.on_finish(row, row.completion)

    def fail(self, row: SeqState, error: Exception) -> None:
        row.error = error
        self.finish(row, "error", "")
