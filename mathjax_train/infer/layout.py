"""How the engine lays out a model's parameters for decoding: the same values, arranged for speed.

- A tied output head is the embedding table (vocab, embed) read transposed; XLA:CPU multiplies by a
  transposed operand much more slowly than by an (embed, vocab) matrix (84 vs 49 ms for 128 rows of
  SmolLM2's 49k vocabulary), so the head gets its own (embed, vocab) copy.
- Scanned layers keep their weights stacked, and XLA:CPU copies a layer's slice out of the stack at
  every layer of every decode step (a third of a SmolLM2 step at 4 rows). Unrolled, each layer's
  weights are arrays of their own: 24% faster at 4 rows and 7% at 128, for about 2 s more compile per
  program and a second copy of the weights in memory.
The engine remakes these arrays whenever the model's parameters change (rl).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from mathjax_train.config import ModelConfig


def unroll_by_default(choice: str, backend: str) -> bool:
    """engine.layers resolved: `auto` unrolls on CPU (where the scan's weight copies cost), scans elsewhere."""
    return choice == "unroll" or (choice == "auto" and backend == "cpu")


def decode_config(cfg: ModelConfig, unroll: bool) -> ModelConfig:
    """The config the engine's programs run: the head untied, the layers unrolled when `unroll`."""
    scan = cfg.scan_layers and not unroll
    if not cfg.tie_embeddings and scan == cfg.scan_layers:
        return cfg
    return dataclasses.replace(cfg, tie_embeddings=False, scan_layers=scan)


def decode_params(params: dict, cfg: ModelConfig, unroll: bool) -> dict:
    """`params` (laid out for `cfg`) for `decode_config(cfg, unroll)`: lm_head.kernel = the tied table
    transposed; stacked `layers` split into `layers_0`, `layers_1`, ..."""
    out = dict(params)
    if cfg.tie_embeddings:
        out["lm_head"] = {"kernel": jax.jit(jnp.transpose)(params["embed_tokens"]["embedding"])}
    if cfg.scan_layers and unroll:
        stacked = out.pop("layers")
        for i in range(cfg.num_layers):
            out[f"layers_{i}"] = jax.tree.map(lambda a, i=i: a[i], stacked)
    return out
