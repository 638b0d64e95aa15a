"""Speculative decoding by prompt lookup: draft a row's next tokens from its own text, verify them in one call.

A small batch of greedy rows (a server's few clients) is bound by reading the weights once per decode step,
so checking a few guessed tokens in the same call costs little more than one step. The guess is what followed
the latest earlier occurrence of the row's last n tokens (longest n first): answers to math problems repeat
the question's numbers and phrases. The verify program (infer/programs.py) keeps the guessed tokens the model
would have chosen itself and adds the model's own next token, so the text is the greedy text. Only the
logits' arithmetic differs (a call over k + 1 tokens instead of one): a token whose top two logits tie within
float32 rounding may go the other way, as it may between any two batch shapes.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

MAX_NGRAM = 3  # longest suffix looked up (measured on the serve benchmark's GSM8K answers: 3..1 beat 4..2)


def draft(tokens: Sequence[int], k: int, max_ngram: int = MAX_NGRAM) -> list[int]:
    """Up to `k` tokens that followed the latest earlier occurrence of the last n tokens of `tokens`,
    trying n = max_ngram down to 1; [] when no suffix occurs earlier."""
    n_tokens = len(tokens)
    if k <= 0 or n_tokens < 2:
        return []
    seq = np.asarray(tokens, np.int64)
    for n in range(min(max_ngram, n_tokens - 1), 0, -1):
        tail = seq[n_tokens - n :]
        # windows starting at 0 .. n_tokens - n - 1 (the suffix itself excluded)
        hits = seq[: n_tokens - 1] == tail[0]
        for j in range(1, n):
            hits[: n_tokens - n] &= seq[j : n_tokens - n + j] == tail[j]
        hits = np.flatnonzero(hits[: n_tokens - n])
        if hits.size:
            s = int(hits[-1]) + n
            return [int(t) for t in seq[s : s + k]]
    return []


def draft_table(rows_tokens: Sequence[Sequence[int]], slots: int, k: int) -> tuple[np.ndarray, int]:
    """The drafts of each row as a (slots, k) int32 table, -1 where a row has fewer; and how many were drafted."""
    table = np.full((slots, k), -1, np.int32)
    drafted = 0
    for i, tokens in enumerate(rows_tokens):
        d = draft(tokens, k)
        table[i, : len(d)] = d
        drafted += len(d)
    return table, drafted
