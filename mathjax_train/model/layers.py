"""Basic layers that name logical axes on every parameter: a general dense, RMSNorm, embedding."""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import flax.linen as nn

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def dtype_of(name: str):
    return DTYPES[name]


class DenseGeneral(nn.Module):
    """y = x . kernel over the last `len(in_shape)` axes of x; kernel is (*in_shape, *features).

    Keeping heads/head_dim as separate kernel axes lets the sharding rules split heads without
    reshapes, and makes HF conversion a transpose plus reshape.
    """

    features: Sequence[int]
    kernel_axes: Sequence[str]
    in_dims: int = 1
    use_bias: bool = False
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        in_shape = tuple(x.shape[-self.in_dims:])
        features = tuple(self.features)
        n_in = len(in_shape)
        init = nn.initializers.variance_scaling(
            1.0, "fan_in", "truncated_normal",
            in_axis=tuple(range(n_in)), out_axis=tuple(range(n_in, n_in + len(features))))
        kernel = self.param("kernel", nn.with_logical_partitioning(init, tuple(self.kernel_axes)),
                            in_shape + features, self.param_dtype)
        x = x.astype(self.dtype)
        contract = (tuple(range(x.ndim - n_in, x.ndim)), tuple(range(n_in)))
        y = jax.lax.dot_general(x, kernel.astype(self.dtype), (contract, ((), ())))
        if self.use_bias:
            bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros_init(),
                                                                   tuple(self.kernel_axes[n_in:])),
                              features, self.param_dtype)
            y = y + bias.astype(self.dtype)
        return y


class RMSNorm(nn.Module):
    """RMSNorm computed in float32 (as HF does), scaled, then cast to the compute dtype."""

    eps: float = 1e-6
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones_init(), ("embed",)),
                           (x.shape[-1],), self.param_dtype)
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return (scale.astype(jnp.float32) * y).astype(self.dtype)


class Embed(nn.Module):
    """Token embedding (vocab, embed); `attend` gives tied-embedding logits."""

    num_embeddings: int
    features: int
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    def setup(self):
        self.embedding = self.param(
            "embedding", nn.with_logical_partitioning(nn.initializers.normal(stddev=0.02), ("vocab", "embed")),
            (self.num_embeddings, self.features), self.param_dtype)

    def __call__(self, tokens: jax.Array) -> jax.Array:
        return jnp.take(self.embedding, tokens, axis=0).astype(self.dtype)

    def attend(self, x: jax.Array) -> jax.Array:
        return jnp.einsum("bte,ve->btv", x.astype(self.dtype), self.embedding.astype(self.dtype))
