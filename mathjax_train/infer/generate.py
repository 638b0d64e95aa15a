"""Batched generation with a preallocated KV cache.

Prompts are left-padded to one fixed length per run (padding slots have segment 0 and are never
attended), prefilled in one call, then decoded by a compiled while-loop. The loop runs in chunks
of fixed size so that stop strings can be checked on the host between chunks; every chunk has the
same shapes, so nothing recompiles per token or per prompt length.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mathjax_train.config import ModelConfig
from mathjax_train.infer.sampling import row_keys, sample
from mathjax_train.model import Decoder, init_cache


@dataclass
class SamplingParams:
    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    stop: Sequence[str] = ()
    chunk_size: int = 32  # decode steps between host checks of stop strings


@dataclass
class Generation:
    token_ids: list[int]
    text: str | None = None
    finish_reason: str = "length"  # eos | stop | length


@dataclass
class Generator:
    """Holds the compiled prefill/decode functions for one model; reuse it across batches."""

    cfg: ModelConfig
    params: dict
    eos_ids: Sequence[int] = ()
    _fns: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        self.model = Decoder(self.cfg)

    def _prefill_fn(self):
        if "prefill" not in self._fns:
            @partial(jax.jit, donate_argnums=(4,))
            def prefill(params, tokens, positions, segment_ids, cache):
                logits, cache = self.model.apply({"params": params}, tokens, positions, segment_ids,
                                                 cache=cache, cache_index=0)
                return logits[:, -1, :], cache
            self._fns["prefill"] = prefill
        return self._fns["prefill"]

    def _decode_fn(self, top_k: int, chunk: int):
        key = ("decode", top_k, chunk)
        if key not in self._fns:
            eos = jnp.asarray(list(self.eos_ids) or [-1], jnp.int32)

            @partial(jax.jit, donate_argnums=(1,))
            def decode(params, state, seeds, temperature, top_p, stop_at):
                def cond(s):
                    return (s["step"] < stop_at) & ~jnp.all(s["done"])

                def body(s):
                    step = s["step"]
                    prev = s["out"][:, step - 1]
                    logits, cache = self.model.apply(
                        {"params": params}, prev[:, None], s["next_pos"][:, None], jnp.ones_like(prev)[:, None],
                        cache=s["cache"], cache_index=s["prompt_len"] + step - 1)
                    tok = sample(logits[:, 0, :], row_keys(seeds, step), temperature, top_p, top_k)
                    tok = jnp.where(s["done"], eos[0], tok)
                    out = jax.lax.dynamic_update_slice(s["out"], tok[:, None], (0, step))
                    done = s["done"] | jnp.isin(tok, eos)
                    lengths = jnp.where(s["done"], s["lengths"], step + 1)
                    return dict(s, cache=cache, out=out, done=done, lengths=lengths, step=step + 1,
                                next_pos=s["next_pos"] + 1)

                return jax.lax.while_loop(cond, body, state)
            self._fns[key] = decode
        return self._fns[key]

    def generate(self, prompts: Sequence[Sequence[int]], sp: SamplingParams, seeds: Sequence[int],
                 prompt_len: int | None = None, decode_text: Callable[[list[int]], str] | None = None
                 ) -> list[Generation]:
        """Generate for each prompt (token ids). `prompt_len` fixes the padded length (default: longest)."""
        b = len(prompts)
        lens = np.array([len(p) for p in prompts])
        if lens.min() == 0:
            raise ValueError("a prompt has no tokens")
        plen = int(prompt_len or lens.max())
        if lens.max() > plen:
            raise ValueError(f"a prompt has {lens.max()} tokens, more than the padded prompt length {plen}")
        tokens = np.zeros((b, plen), np.int32)
        positions = np.zeros((b, plen), np.int32)
        segs = np.zeros((b, plen), np.int32)
        for i, p in enumerate(prompts):
            n = len(p)
            tokens[i, plen - n:] = p
            positions[i, plen - n:] = np.arange(n)
            segs[i, plen - n:] = 1
        total = plen + sp.max_new_tokens
        cache = init_cache(self.cfg, b, total)
        last_logits, cache = self._prefill_fn()(self.params, tokens, positions, segs, cache)

        seeds_a = jnp.asarray(np.asarray(seeds, np.uint32))
        temperature, top_p = jnp.float32(sp.temperature), jnp.float32(sp.top_p)
        first = sample(last_logits, row_keys(seeds_a, jnp.int32(0)), temperature, top_p, sp.top_k)
        eos = np.asarray(list(self.eos_ids) or [-1])
        out = jnp.zeros((b, sp.max_new_tokens), jnp.int32).at[:, 0].set(first)
        done = jnp.isin(first, jnp.asarray(eos))
        state = {"cache": cache, "out": out, "done": done, "lengths": jnp.ones((b,), jnp.int32),
                 "step": jnp.int32(1), "next_pos": jnp.asarray(lens, jnp.int32), "prompt_len": jnp.int32(plen)}
        chunk = sp.chunk_size if sp.stop else sp.max_new_tokens
        decode = self._decode_fn(sp.top_k, chunk)
        stopped = np.zeros(b, bool)
        while True:
            step = int(state["step"])
            if step >= sp.max_new_tokens or bool(np.all(np.asarray(state["done"]) | stopped)):
                break
            state["done"] = jnp.asarray(np.asarray(state["done"]) | stopped)
            state = decode(self.params, state, seeds_a, temperature, top_p, jnp.int32(min(step + chunk,
                                                                                          sp.max_new_tokens)))
            if sp.stop and decode_text is not None:
                outs, lengths = np.asarray(state["out"]), np.asarray(state["lengths"])
                for i in range(b):
                    if not stopped[i] and any(s in decode_text(list(outs[i, :lengths[i]])) for s in sp.stop):
                        stopped[i] = True
        return self._collect(state, eos, sp, decode_text)

    def _collect(self, state, eos, sp: SamplingParams, decode_text) -> list[Generation]:
        outs, lengths, done = np.asarray(state["out"]), np.asarray(state["lengths"]), np.asarray(state["done"])
        results = []
        for i in range(outs.shape[0]):
            ids = [int(t) for t in outs[i, :lengths[i]]]
            reason = "eos" if done[i] and ids and ids[-1] in eos else "length"
            text = None
            if decode_text is not None:
                text = decode_text([t for t in ids if t not in eos])
                cut = min((text.find(s) for s in sp.stop if s in text), default=-1)
                if cut >= 0:
                    text, reason = text[:cut], "stop"
            results.append(Generation(ids, text, reason))
        return results
