"""Exact log-probabilities (rl.exact_logprobs): one row at a time through one compiled program of one shape.

The engine (to sample the next token) and the learner (to score sampled ones) both run `row_logprobs`: the
decoder's log-softmax over a single row padded to a fixed `length`. Every matmul row and every causal attention
sum of a position then sees the same operands in the same order on both sides, so a position's numbers do not
depend on batch-mates, slots, KV pages, prefill chunks or the tokens after it: the two sides agree bit for bit.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mathjax_train.config import ModelConfig
from mathjax_train.infer.sampling import row_keys, sample
from mathjax_train.model import Decoder

_PROGRAMS: dict[str, object] = {}  # one compiled program per model config, shared by engines and learner


def _program(cfg: ModelConfig):
    key = repr(cfg)
    if key not in _PROGRAMS:
        model = Decoder(cfg)

        def fn(params, tokens, length):
            positions = jnp.arange(tokens.shape[1], dtype=jnp.int32)[None]
            segments = (positions < length).astype(jnp.int32)
            logits, _ = model.apply({"params": params}, tokens, positions, segments)
            return jax.nn.log_softmax(logits[0].astype(jnp.float32), axis=-1)

        _PROGRAMS[key] = jax.jit(fn)
    return _PROGRAMS[key]


@jax.jit
def _draw(logp, seed, step, temperature, top_p, top_k):
    """The engine's sampler (infer/sampling.py) on one row of log-probabilities, keyed by seed and step."""
    keys = row_keys(seed[None], step[None])
    return sample(logp[None], keys, temperature[None], top_p[None], top_k[None])[0]


@jax.jit
def _gather(logp, targets):
    return jnp.take_along_axis(logp, targets[:, None], axis=-1)[:, 0]


class ExactRows:
    """`row_logprobs` for model `cfg` at rows padded to `length` tokens (the longest context scored)."""

    def __init__(self, cfg: ModelConfig, length: int):
        self.fn, self.length = _program(cfg), length

    def row_logprobs(self, params, tokens: Sequence[int]) -> jax.Array:
        """(length, vocab) log-probabilities of the next token after each prefix of `tokens` (the rest padding)."""
        n = len(tokens)
        if not 0 < n <= self.length:
            raise ValueError(f"a row of {n} tokens does not fit the exact program's {self.length}")
        padded = np.zeros((1, self.length), np.int32)
        padded[0, :n] = tokens
        return self.fn(params, padded, np.int32(n))

    def next_token(self, params, context: Sequence[int], seed: int, step: int, sp) -> tuple[int, float]:
        """(token, its log-probability) drawn after `context` with SamplingParams `sp`, as the engine's decode does."""
        logp = self.row_logprobs(params, context)[len(context) - 1]
        tok = int(
            _draw(
                logp,
                np.uint32(seed),
                np.int32(step),
                np.float32(sp.temperature),
                np.float32(sp.top_p),
                np.int32(sp.top_k),
            )
        )
        return tok, float(logp[tok])

    def decode(
        self, params, tokens: list[int], generated: int, seed: int, sp, steps: int, eos: set[int]
    ) -> tuple[list[int], list[float]]:
        """Up to `steps` (token, log-probability) pairs after `tokens` (whose last `generated` were sampled
        this round), ending where the engine's decode chunk would: at EOS (unless ignored) or max_tokens."""
        new: list[int] = []
        logprobs: list[float] = []
        for _ in range(steps):
            step = generated + len(new)
            tok, lp = self.next_token(params, tokens + new, seed, step, sp)
            new.append(tok)
            logprobs.append(lp)
            if (tok in eos and not sp.ignore_eos) or step + 1 >= sp.max_tokens:
                break
        return new, logprobs

    def target_logprobs(self, params, batch: dict) -> np.ndarray:
        """(rows, t) log p(targets) of an rl/batch.py batch, each row scored alone (padding rows 0)."""
        out = np.zeros(batch["targets"].shape, np.float32)
        width = out.shape[1]
        for i, n in enumerate(np.asarray(batch["segment_ids"]).sum(axis=1)):
            if n:
                logp = self.row_logprobs(params, batch["tokens"][i, :n])[:width]
                out[i] = np.asarray(_gather(logp, np.asarray(batch["targets"][i], np.int32)))
        return out
