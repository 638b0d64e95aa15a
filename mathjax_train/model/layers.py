"""Basic layers that name logical axes on every parameter: a general dense, RMSNorm, embedding."""

from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import flax.linen as nn
from jax.ad_checkpoint import checkpoint_name

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def dtype_of(name: str):
    return DTYPES[name]


PROJECTION = "projection"  # the checkpoint name of every projection's output (remat policies save it by name)


def project(x: jax.Array, kernel: jax.Array, n_in: int) -> jax.Array:
    """x . kernel over x's last `n_in` axes and kernel's first `n_in`; (*batch, *in) -> (*batch, *out).

    Its own VJP (`_project`) only to take the kernel gradient as dot(x, dy): from JAX's own rule XLA:CPU
    made a transposing copy of dy, fused with the SwiGLU backward, that was a third of the demo's step; in
    this order it makes none (measured, not explained; the reverse order was slower still). A remat policy
    cannot see the dot inside a custom VJP, so the output is named PROJECTION for the `dots` policies
    (model/decoder.py REMAT_POLICIES) to save it."""
    return checkpoint_name(_project(x, kernel, n_in), PROJECTION)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _project(x: jax.Array, kernel: jax.Array, n_in: int) -> jax.Array:
    return jax.lax.dot_general(x, kernel, ((tuple(range(x.ndim - n_in, x.ndim)), tuple(range(n_in))), ((), ())))


def _project_fwd(x, kernel, n_in):
    return _project(x, kernel, n_in), (x, kernel)


def _project_bwd(n_in, res, dy):
    x, kernel = res
    n_batch, n_out = x.ndim - n_in, kernel.ndim - n_in
    out_k = tuple(range(n_in, kernel.ndim))
    dx = jax.lax.dot_general(dy, kernel, ((tuple(range(n_batch, n_batch + n_out)), out_k), ((), ())))
    batch = tuple(range(n_batch))
    dk = jax.lax.dot_general(x, dy, ((batch, batch), ((), ())))
    return dx.astype(x.dtype), dk.astype(kernel.dtype)


_project.defvjp(_project_fwd, _project_bwd)


class DenseGeneral(nn.Module):
    """y = x . kernel over the last `len(in_shape)` axes of x; kernel is (*in_shape, *features).

    Keeping heads/head_dim as separate kernel axes lets the sharding rules split heads without
    reshapes, and makes HF conversion a transpose plus reshape. `lora` (a LoraConfig, or None) adds
    what model/lora.py describes: adapters `lora_a` (*in_shape, rank) and `lora_b` (rank, *features)
    when this module's name is a target, and an int8 `kernel` with `kernel_scale` (*features) when
    the base is quantized.
    """

    features: Sequence[int]
    kernel_axes: Sequence[str]
    in_dims: int = 1
    use_bias: bool = False
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32
    lora: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        in_shape = tuple(x.shape[-self.in_dims :])
        features = tuple(self.features)
        n_in = len(in_shape)
        in_axes, out_axes = tuple(self.kernel_axes[:n_in]), tuple(self.kernel_axes[n_in:])
        init = nn.initializers.variance_scaling(
            1.0,
            "fan_in",
            "truncated_normal",
            in_axis=tuple(range(n_in)),
            out_axis=tuple(range(n_in, n_in + len(features))),
        )
        lora = self.lora
        int8 = lora is not None and lora.quantize_base == "int8"
        # self.param hands back the unboxed array; flax annotates it as LogicallyPartitioned (the ignores below)
        kernel = self.param(
            "kernel",
            nn.with_logical_partitioning(nn.initializers.zeros_init() if int8 else init, tuple(self.kernel_axes)),
            in_shape + features,
            jnp.int8 if int8 else self.param_dtype,
        )
        x = x.astype(self.dtype)
        y = project(x, kernel.astype(self.dtype), n_in)  # type: ignore[attr-defined]
        if int8:  # one scale per output channel, so it applies after the matmul
            scale = self.param(
                "kernel_scale",
                nn.with_logical_partitioning(nn.initializers.ones_init(), out_axes),
                features,
                jnp.float32,
            )
            y = y * scale.astype(self.dtype)  # type: ignore[attr-defined]
        if lora is not None and lora.enabled and self.name in lora.targets:
            y = y + self._adapter(x, in_shape, features, in_axes, out_axes)
        if self.use_bias:
            bias = self.param(
                "bias", nn.with_logical_partitioning(nn.initializers.zeros_init(), out_axes), features, self.param_dtype
            )
            y = y + bias.astype(self.dtype)  # type: ignore[attr-defined]
        return y

    def _adapter(self, x, in_shape, features, in_axes, out_axes):
        """(alpha / rank) B A dropout(x); dropout only when a `dropout` RNG is given (training)."""
        lora, n_in = self.lora, len(in_shape)
        pdt = DTYPES[lora.param_dtype]
        # A like PEFT's default: uniform with bound 1 / sqrt(fan_in); B zero, so training starts at the base
        a_init = nn.initializers.variance_scaling(
            1.0 / 3.0, "fan_in", "uniform", in_axis=tuple(range(n_in)), out_axis=n_in
        )
        a = self.param(
            "lora_a", nn.with_logical_partitioning(a_init, in_axes + ("lora_rank",)), in_shape + (lora.rank,), pdt
        )
        b = self.param(
            "lora_b",
            nn.with_logical_partitioning(nn.initializers.zeros_init(), ("lora_rank",) + out_axes),
            (lora.rank,) + features,
            pdt,
        )
        if lora.dropout > 0 and self.has_rng("dropout"):
            keep = jax.random.bernoulli(self.make_rng("dropout"), 1.0 - lora.dropout, x.shape)
            x = jnp.where(keep, x / (1.0 - lora.dropout), 0).astype(self.dtype)
        h = project(project(x, a.astype(self.dtype), n_in), b.astype(self.dtype), 1)
        return h * jnp.asarray(lora.scaling, self.dtype)


class RMSNorm(nn.Module):
    """RMSNorm over the last axis computed in float32 (as HF does), scaled, then cast to the compute dtype.
    `axis` is the scale's logical axis: `embed` for the hidden states, `head_dim` for QK-norm's per-head norm.
    `plus_one` scales by 1 + scale with scale initialised at 0 (Gemma): the parameter is HF's weight as stored,
    so a bfloat16 copy keeps its precision (1 + w in bfloat16 would round w to 2**-8) and conversion renames."""

    eps: float = 1e-6
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32
    axis: str = "embed"
    plus_one: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        # self.param hands back the unboxed array; flax annotates it as LogicallyPartitioned
        scale = self.param(
            "scale",
            nn.with_logical_partitioning(
                nn.initializers.zeros_init() if self.plus_one else nn.initializers.ones_init(), (self.axis,)
            ),
            (x.shape[-1],),
            self.param_dtype,
        )
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        factor = scale.astype(jnp.float32)  # type: ignore[attr-defined]
        if self.plus_one:
            factor = 1.0 + factor
        return (factor * y).astype(self.dtype)


def softcap(x: jax.Array, cap: float) -> jax.Array:
    """cap * tanh(x / cap): logits bounded by +-cap (Gemma's final_logit_softcapping); cap 0 = x unchanged."""
    if not cap:
        return x
    return jnp.tanh(x / cap) * cap


class Embed(nn.Module):
    """Token embedding (vocab, embed); `attend` gives tied-embedding logits."""

    num_embeddings: int
    features: int
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    def setup(self):
        self.embedding = self.param(
            "embedding",
            nn.with_logical_partitioning(nn.initializers.normal(stddev=0.02), ("vocab", "embed")),
            (self.num_embeddings, self.features),
            self.param_dtype,
        )

    def __call__(self, tokens: jax.Array) -> jax.Array:
        return jnp.take(self.embedding, tokens, axis=0).astype(self.dtype)

    def attend(self, x: jax.Array) -> jax.Array:
        return jnp.einsum("bte,ve->btv", x.astype(self.dtype), self.embedding.astype(self.dtype))
