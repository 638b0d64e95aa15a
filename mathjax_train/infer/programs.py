"""The engine's compiled programs: a prefill chunk, a decode chunk and a page copy.

Shapes come from small sets of buckets (rows, prompt-chunk tokens, pages read), so a whole run
compiles a handful of programs whatever the prompts, lengths or admission order. The paged cache
is donated to every call, so it is updated in place.
"""

from __future__ import annotations

import threading

import jax
import jax.numpy as jnp
import numpy as np

from mathjax_train.config import ModelConfig
from mathjax_train.infer.sampling import row_keys, sample, token_logprobs
from mathjax_train.model import Decoder, flush_side, init_side
from mathjax_train.model.attention import PagedKV


def bucket(n: int, limit: int, minimum: int = 1) -> int:
    """n rounded up to a power of two (at least `minimum`), never above `limit` (the last bucket)."""
    b = minimum
    while b < n:
        b *= 2
    return min(b, limit)


def row_bucket(n: int, limit: int) -> int:
    """Rows a decode chunk computes: 1, 4, 16, 64, ... (few shapes: each costs a compilation)."""
    b = 1
    while b < n:
        b *= 4
    return min(b, limit)


def page_bucket(n: int, limit: int) -> int:
    """Pages a call reads: 1, 2, 3, 4, 6, 8, 12, 16, 24, ... (two buckets an octave, so a decode chunk
    reads at most a third more pages than its longest row holds), never above `limit`."""
    b = 1
    while b < n:
        b = b + b // 2 if b & (b - 1) == 0 and b >= 2 else (b * 4 // 3 if b >= 3 else b + 1)
    return min(b, limit)


class Programs:
    """Compiled functions of one model; `shapes` records every (program, shape) compiled.
    `Programs.of` shares one instance (and its compilations) among engines of the same model."""

    _shared: dict = {}

    @classmethod
    def of(cls, cfg: ModelConfig, eos_ids: list[int], decode_steps: int) -> "Programs":
        key = (repr(cfg), tuple(eos_ids), decode_steps)
        if key not in cls._shared:
            cls._shared[key] = cls(cfg, eos_ids, decode_steps)
        return cls._shared[key]

    def __init__(self, cfg: ModelConfig, eos_ids: list[int], decode_steps: int):
        self.cfg = cfg
        self.model = Decoder(cfg)
        self.eos = jnp.asarray(eos_ids or [-1], jnp.int32)
        self.decode_steps = decode_steps
        self.shapes: set[tuple] = set()
        # engines on several threads (serve's and a caller's) may share these programs; XLA:CPU has
        # crashed compiling one program from two threads at once, so calls are serialized
        self.lock = threading.RLock()
        self._prefill = jax.jit(self._prefill_impl, donate_argnums=(1,))
        self._decode = jax.jit(self._decode_impl, donate_argnums=(1,))
        self._copy = jax.jit(self._copy_impl, donate_argnums=(0,))

    # -- prefill: the KV of up to T tokens of one sequence, flushed into its pages
    def _prefill_impl(self, params, cache, tokens, start, valid, page_table):
        t = tokens.shape[1]
        positions = start[:, None] + jnp.arange(t)[None]
        kv = PagedKV(cache["k"], cache["v"], page_table, start, jnp.int32(0))
        _, side = self.model.apply(
            {"params": params}, tokens, positions, None, init_side(self.cfg, 1, t), kv, last=jnp.maximum(valid - 1, 0)
        )
        return flush_side(cache, side, page_table, start, valid)

    def prefill(self, params, cache, tokens: np.ndarray, start: int, page_table: np.ndarray, record=None):
        """tokens (n,), written at cache indices start..start+n-1 through `page_table` (pages,).
        `record` (a set) also collects the shape, for a caller that counts its own compilations."""
        t = tokens.shape[0]
        padded = np.zeros((1, bucket(t, 1 << 30, 16)), np.int32)
        padded[0, :t] = tokens
        self.shapes.add(("prefill", padded.shape[1], page_table.shape[0]))
        if record is not None:
            record.add(("prefill", padded.shape[1], page_table.shape[0]))
        with self.lock:
            return self._prefill(
                params,
                cache,
                padded,
                np.asarray([start], np.int32),
                np.asarray([t], np.int32),
                page_table[None].astype(np.int32),
            )

    # -- decode: `decode_steps` tokens for every row, stopping early when no row is active
    def _decode_impl(self, params, cache, rows, page_table):
        steps = self.decode_steps
        s = rows["last"].shape[0]
        out = {"tokens": jnp.full((s, steps), -1, jnp.int32), "logprobs": jnp.zeros((s, steps), jnp.float32)}
        start = rows["length"]  # tokens already in pages; this chunk's go to the side buffer

        def cond(carry):
            i, _, r, _ = carry
            return (i < steps) & jnp.any(r["active"])

        def body(carry):
            i, side, r, out = carry
            active = r["active"]
            kv = PagedKV(cache["k"], cache["v"], page_table, start, i)
            logits, side = self.model.apply(
                {"params": params}, r["last"][:, None], (start + i)[:, None], None, side, kv
            )
            logits = logits[:, 0]
            tok = sample(logits, row_keys(r["seed"], r["step"]), r["temperature"], r["top_p"], r["top_k"])
            lp = token_logprobs(logits, tok)
            out = {
                "tokens": out["tokens"].at[:, i].set(jnp.where(active, tok, -1)),
                "logprobs": out["logprobs"].at[:, i].set(jnp.where(active, lp, 0.0)),
            }
            ended = (jnp.isin(tok, self.eos) & ~r["ignore_eos"]) | (r["step"] + 1 >= r["max_step"])
            grow = active.astype(jnp.int32)
            r = dict(
                r,
                last=jnp.where(active, tok, r["last"]),
                step=r["step"] + grow,
                emitted=r["emitted"] + grow,
                active=active & ~ended,
            )
            return i + 1, side, r, out

        rows = dict(rows, emitted=jnp.zeros_like(start))
        carry = (jnp.int32(0), init_side(self.cfg, s, steps), rows, out)
        _, side, rows, out = jax.lax.while_loop(cond, body, carry)
        return flush_side(cache, side, page_table, start, rows["emitted"]), out

    def decode(self, params, cache, rows: dict, page_table: np.ndarray, record=None):
        self.shapes.add(("decode", page_table.shape[0], page_table.shape[1]))
        if record is not None:
            record.add(("decode", page_table.shape[0], page_table.shape[1]))
        with self.lock:
            cache, out = self._decode(params, cache, rows, page_table)
            return cache, {k: np.asarray(v) for k, v in out.items()}

    # -- copy pages (the partial last page of a shared prompt, for each sample that writes into it)
    @staticmethod
    def _copy_impl(cache, src, dst):
        return {k: v.at[:, :, dst].set(v[:, :, src]) for k, v in cache.items()}

    def copy_pages(self, cache, pairs: list[tuple[int, int]]):
        n = bucket(len(pairs), 1 << 30)
        src = np.zeros(n, np.int32)
        dst = np.zeros(n, np.int32)  # padding copies the trash page onto itself
        for i, (a, b) in enumerate(pairs):
            src[i], dst[i] = a, b
        self.shapes.add(("copy", n))
        with self.lock:
            return self._copy(cache, src, dst)
