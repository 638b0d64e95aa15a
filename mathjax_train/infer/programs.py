"""The engine's compiled programs: a prefill chunk, a decode chunk and a page copy.

Shapes come from small sets of buckets (rows, prompt-chunk tokens, pages read), so a whole run
compiles a handful of programs whatever the prompts, lengths or admission order. The paged cache
is donated to every call, so it is updated in place.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Sequence

import jax
import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from mathjax_train.config import ModelConfig
from mathjax_train.infer.paged_kernels import XLA, KernelSpec
from mathjax_train.infer.placement import Placement
from mathjax_train.infer.rows import SeqState
from mathjax_train.infer.sampling import row_keys, sample, token_logprobs
from mathjax_train.model import Decoder, flush_side, init_side
from mathjax_train.model.attention import PagedKV
from mathjax_train.model.reductions import argmax_last
from mathjax_train.model.target import traced_for


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


def row_buckets(limit: int) -> list[int]:
    """Every row count `row_bucket` gives up to `limit`."""
    out = [1]
    while out[-1] < limit:
        out.append(row_bucket(out[-1] + 1, limit))
    return out


def prefill_row_buckets(tokens: int, budget: int) -> list[int]:
    """Rows one prefill call may take at a token bucket: 1, 4 or 16 sequences, as long as they hold at most
    `budget` tokens in all (a long prompt is compute-bound alone; short ones share one read of the weights)."""
    return [b for b in (1, 4, 16) if b == 1 or b * tokens <= budget]


def page_bucket(n: int, limit: int) -> int:
    """Pages a call reads: 1, 2, 3, 4, 6, 8, 12, 16, 24, ... (two buckets an octave, so a decode chunk
    reads at most a third more pages than its longest row holds), never above `limit`."""
    b = 1
    while b < n:
        b = b + b // 2 if b & (b - 1) == 0 and b >= 2 else (b * 4 // 3 if b >= 3 else b + 1)
    return min(b, limit)


def page_table(pages: list[int], width: int) -> np.ndarray:
    """One row of a call's page table: its pages, then the trash page."""
    table = np.zeros(width, np.int32)
    table[: min(len(pages), width)] = pages[:width]
    return table


def decode_inputs(
    rows: Sequence[SeqState], slots: int, width: int, errors: dict[int, Exception] | None = None
) -> tuple[dict, np.ndarray]:
    """A decode chunk's inputs for `rows` in `slots` slots (the rest inactive) and their page table. With
    `errors` (isolate_rows), a row whose settings do not fit the arrays leaves its slot inactive, its error
    in `errors`; without, the error is raised."""
    batch = {
        "last": np.zeros(slots, np.int32),
        "length": np.zeros(slots, np.int32),
        "active": np.zeros(slots, bool),
        "step": np.zeros(slots, np.int32),
        "max_step": np.ones(slots, np.int32),
        "seed": np.zeros(slots, np.uint32),
        "temperature": np.zeros(slots, np.float32),
        "top_p": np.ones(slots, np.float32),
        "top_k": np.zeros(slots, np.int32),
        "ignore_eos": np.zeros(slots, bool),
    }
    table = np.zeros((slots, width), np.int32)
    for i, r in enumerate(rows):
        try:
            sp = r.params
            # a row with no token yet in its round feeds its context's last token, whose KV is not cached
            batch["last"][i], batch["length"][i], batch["active"][i] = r.tokens[-1], r.cached, True
            batch["step"][i], batch["max_step"][i], batch["seed"][i] = len(r.generated), sp.max_tokens, r.seed
            batch["temperature"][i], batch["top_p"][i], batch["top_k"][i] = sp.temperature, sp.top_p, sp.top_k
            batch["ignore_eos"][i] = sp.ignore_eos
            table[i] = page_table(r.pages, width)
        except Exception as e:
            if errors is None:
                raise
            for name, v in batch.items():  # the slot stays inactive
                v[i] = 1 if name == "max_step" else 0
            table[i] = 0
            errors[i] = e
    return batch, table


PAGE_AXIS = {"k": 2, "v": 2, "pool": 1}  # where the page index sits in each cache array (kv_cache, ragged_paged)


class Programs:
    """Compiled functions of one model; `shapes` records every (program, shape) compiled.
    `Programs.of` shares one instance (and its compilations) among engines of the same model."""

    _shared: dict = {}

    @classmethod
    def of(
        cls,
        cfg: ModelConfig,
        eos_ids: list[int],
        decode_steps: int,
        kernel: KernelSpec = XLA,
        placement: Placement | None = None,
    ) -> "Programs":
        key = (repr(cfg), tuple(eos_ids), decode_steps, kernel, placement.mesh if placement is not None else None)
        if key not in cls._shared:
            cls._shared[key] = cls(cfg, eos_ids, decode_steps, kernel, placement)
        return cls._shared[key]

    def __init__(
        self,
        cfg: ModelConfig,
        eos_ids: list[int],
        decode_steps: int,
        kernel: KernelSpec = XLA,
        placement: Placement | None = None,
    ):
        """`placement` with a mesh (engine.tensor > 1): the programs are traced under its mesh and logical
        rules, and return the cache with the sharding it came in with (split by kv heads), so it stays put."""
        self.cfg = cfg
        self.model = Decoder(cfg, paged_kernel=kernel.name)
        self.in_place = kernel.ragged_pool  # its pool is written where tokens go; no side buffer to flush
        self.eos = jnp.asarray(eos_ids or [-1], jnp.int32)
        self.decode_steps = decode_steps
        self.shapes: set[tuple] = set()
        # engines on several threads (serve's and a caller's) may share these programs; XLA:CPU has
        # crashed compiling one program from two threads at once, so calls are serialized
        self.lock = threading.RLock()
        self.placement = placement if placement is not None and placement.mesh is not None else None
        outs: dict[str, dict] = {"prefill": {}, "decode": {}, "copy": {}}  # one device: XLA places outputs
        if self.placement is not None:
            p = self.placement
            kv = {n: p.kv_sharding(n) for n in (("pool",) if self.in_place else ("k", "v"))}
            outs = {"prefill": {"out_shardings": kv}, "decode": {"out_shardings": (kv, p.replicated())}}
            outs["copy"] = outs["prefill"]
        outs["verify"] = outs["decode"]
        # kernels compile for the engine's devices (a TPU slice's, when `plan` compiles ahead of time on a CPU host)
        devices = placement.devices if placement is not None else jax.devices()[:1]
        self._prefill = jax.jit(traced_for(devices, self._prefill_impl), donate_argnums=(1,), **outs["prefill"])
        self._decode = jax.jit(traced_for(devices, self._decode_impl), donate_argnums=(1,), **outs["decode"])
        self._copy = jax.jit(self._copy_impl, donate_argnums=(0,), **outs["copy"])
        self._verify = jax.jit(traced_for(devices, self._verify_impl), donate_argnums=(1,), **outs["verify"])

    def lower(self, name: str, *args):
        """The "prefill", "decode" or "copy" program traced and lowered for `args` (arrays or ShapeDtypeStructs
        with the engine's shardings), not run: `plan` compiles it for a TPU slice from any host."""
        program = {"prefill": self._prefill, "decode": self._decode, "copy": self._copy, "verify": self._verify}[name]
        with self.lock, self._mesh():
            return program.lower(*args)

    def _mesh(self):
        """The context the programs trace in: the engine's mesh and the logical rules (none on one device)."""
        stack = contextlib.ExitStack()
        if self.placement is not None:
            stack.enter_context(jax.set_mesh(self.placement.mesh))
            stack.enter_context(nn.logical_axis_rules(self.placement.rules))
        return stack

    def _side(self, rows: int, length: int) -> dict:
        """A fresh side buffer, split by kv heads like the pages it is flushed into."""
        side = init_side(self.cfg, rows, length)
        if self.placement is None:
            return side
        return {n: jax.lax.with_sharding_constraint(x, self.placement.kv_sharding(n)) for n, x in side.items()}

    # -- prefill: the KV of up to T tokens of each of a few sequences, flushed into their pages
    def _prefill_impl(self, params, cache, tokens, start, valid, page_table):
        b, t = tokens.shape
        positions = start[:, None] + jnp.arange(t)[None]
        if self.in_place:
            kv = PagedKV(None, None, page_table, start, jnp.int32(0), valid)
            _, cache = self.model.apply(
                {"params": params}, tokens, positions, None, cache, kv, last=jnp.maximum(valid - 1, 0)
            )
            return cache
        kv = PagedKV(cache["k"], cache["v"], page_table, start, jnp.int32(0))
        _, side = self.model.apply(
            {"params": params}, tokens, positions, None, self._side(b, t), kv, last=jnp.maximum(valid - 1, 0)
        )
        return flush_side(cache, side, page_table, start, valid)

    def prefill(self, params, cache, chunks: Sequence[tuple[np.ndarray, int, np.ndarray]], record=None):
        """One call for `chunks`, each (tokens (n,), start, page_table (pages,)): its tokens written at cache
        indices start..start+n-1 through its page table. The chunks share a page-table width; the tokens are
        padded to the longest one's bucket. `record` (a set) also collects the shape, for a caller that counts
        its own compilations."""
        rows = len(chunks)
        t = bucket(max(c[0].shape[0] for c in chunks), 1 << 30, 16)
        width = chunks[0][2].shape[0]
        tokens = np.zeros((rows, t), np.int32)
        start, valid = np.zeros(rows, np.int32), np.zeros(rows, np.int32)
        table = np.zeros((rows, width), np.int32)
        for i, (ids, at, pages) in enumerate(chunks):
            tokens[i, : ids.shape[0]], start[i], valid[i], table[i] = ids, at, ids.shape[0], pages
        shape = ("prefill", t, width, rows)
        self.shapes.add(shape)
        if record is not None:
            record.add(shape)
        with self.lock, self._mesh():
            return self._prefill(params, cache, tokens, start, valid, table)

    # -- decode: up to `decode_steps` tokens for every row; the chunk ends early after `limit["steps"]`
    # steps, when no row is active, or (with limit["exit_on_end"]) as soon as a row ends, so that a row
    # waiting for its slot is admitted at once. Both limits are inputs: they change no compiled shape.
    def _decode_impl(self, params, cache, rows, page_table, limit):
        steps = self.decode_steps
        s = rows["last"].shape[0]
        out = {"tokens": jnp.full((s, steps), -1, jnp.int32), "logprobs": jnp.zeros((s, steps), jnp.float32)}
        start = rows["length"]  # tokens already in pages; this chunk's go to the side buffer

        def cond(carry):
            i, _, r, _, ended_any = carry
            go_on = (i < jnp.minimum(steps, limit["steps"])) & jnp.any(r["active"])
            return go_on & ~(limit["exit_on_end"] & ended_any)

        def body(carry):
            i, side, r, out, _ = carry
            active = r["active"]
            if self.in_place:  # `side` is the cache itself, written at start + i
                kv = PagedKV(None, None, page_table, start, i, active.astype(jnp.int32))
            else:
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
            return i + 1, side, r, out, jnp.any(active & ended)

        rows = dict(rows, emitted=jnp.zeros_like(start))
        carry = (jnp.int32(0), cache if self.in_place else self._side(s, steps), rows, out, jnp.bool_(False))
        _, side, rows, out, _ = jax.lax.while_loop(cond, body, carry)
        if self.in_place:
            return side, out
        return flush_side(cache, side, page_table, start, rows["emitted"]), out

    def decode(self, params, cache, rows: dict, page_table: np.ndarray, record=None, steps=0, exit_on_end=False):
        """One chunk: `steps` (0 = decode_steps) at most; `exit_on_end`: stop once any row ends."""
        self.shapes.add(("decode", page_table.shape[0], page_table.shape[1]))
        if record is not None:
            record.add(("decode", page_table.shape[0], page_table.shape[1]))
        limit = {"steps": np.int32(steps or self.decode_steps), "exit_on_end": np.bool_(exit_on_end)}
        with self.lock, self._mesh():
            cache, out = self._decode(params, cache, rows, page_table, limit)
            return cache, {k: np.asarray(v) for k, v in out.items()}

    # -- verify: each greedy row's last token and k drafted ones (infer/speculate.py) in one call. A row keeps
    # the drafts the model itself picks, in order, then the model's next token: 1 to k + 1 tokens, cut at EOS
    # and at max_step. Only the kept tokens' keys and values go to the pages. Not for the in-place pool.
    def _verify_impl(self, params, cache, rows, drafts, page_table):
        s, k = drafts.shape
        start = rows["length"]
        tokens = jnp.concatenate([rows["last"][:, None], jnp.maximum(drafts, 0)], axis=1)
        positions = start[:, None] + jnp.arange(k + 1)[None]
        kv = PagedKV(cache["k"], cache["v"], page_table, start, jnp.int32(0))
        logits, side = self.model.apply({"params": params}, tokens, positions, None, self._side(s, k + 1), kv)
        picked = argmax_last(logits)  # (s, k + 1): the model's token after each input token
        agrees = jnp.cumprod((picked[:, :k] == drafts).astype(jnp.int32), axis=1)
        keep = 1 + jnp.sum(agrees, axis=1)
        ends = jnp.isin(picked, self.eos) & ~rows["ignore_eos"][:, None]
        first_end = jnp.where(jnp.any(ends, axis=1), jnp.argmax(ends, axis=1) + 1, k + 1)
        keep = jnp.minimum(jnp.minimum(keep, first_end), rows["max_step"] - rows["step"])
        keep = jnp.where(rows["active"], jnp.maximum(keep, 1), 0)
        kept = jnp.arange(k + 1)[None] < keep[:, None]
        logprobs = token_logprobs(logits.reshape(s * (k + 1), -1), picked.reshape(-1)).reshape(s, k + 1)
        out = {"tokens": jnp.where(kept, picked, -1), "logprobs": jnp.where(kept, logprobs, 0.0)}
        return flush_side(cache, side, page_table, start, keep), out

    def verify(self, params, cache, rows: dict, drafts: np.ndarray, page_table: np.ndarray, record=None):
        """Greedy rows (decode_inputs) with their drafts (slots, k), -1 where none: tokens and logprobs
        (slots, k + 1), -1 / 0 after each row's kept ones."""
        shape = ("verify", page_table.shape[0], page_table.shape[1], drafts.shape[1])
        self.shapes.add(shape)
        if record is not None:
            record.add(shape)
        with self.lock, self._mesh():
            cache, out = self._verify(params, cache, rows, drafts, page_table)
            return cache, {k: np.asarray(v) for k, v in out.items()}

    # -- copy pages (the partial last page of a shared prompt, for each sample that writes into it)
    @staticmethod
    def _copy_impl(cache, src, dst):
        def copy(pages, axis):
            index = (slice(None),) * axis
            return pages.at[index + (dst,)].set(pages[index + (src,)])

        return {name: copy(pages, PAGE_AXIS[name]) for name, pages in cache.items()}

    def copy_pages(self, cache, pairs: list[tuple[int, int]]):
        n = bucket(len(pairs), 1 << 30)
        src = np.zeros(n, np.int32)
        dst = np.zeros(n, np.int32)  # padding copies the trash page onto itself
        for i, (a, b) in enumerate(pairs):
            src[i], dst[i] = a, b
        self.shapes.add(("copy", n))
        with self.lock, self._mesh():
            return self._copy(cache, src, dst)
