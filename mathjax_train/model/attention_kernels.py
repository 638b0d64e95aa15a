"""Fused attention kernels with the same contract as `dot_product_attention`: causal, packed
sequences kept apart by segment ids, optional sliding window.

splash: JAX's Pallas TPU kernel. It never builds the (t, t) score matrix, so long sequences fit in
HBM. For a TPU target (model/target.py: the devices the program is compiled for, not the host's) it is
compiled with Mosaic; elsewhere it runs in Pallas interpret mode (slow; for tests on CPU). Under a mesh it runs per shard through shard_map: batch split like the activations, heads like
the `heads` rule.

cudnn: `jax.nn.dot_product_attention` with cuDNN's flash attention for GPU targets (bf16/fp16), the
packing mask passed as a bias; elsewhere the same call with XLA's implementation, so CPU tests run it too.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as splash
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as splash_mask
from jax.sharding import PartitionSpec

from mathjax_train.errors import InputError
from mathjax_train.model import target

LANES = 128  # the kernel's block sizes must be multiples of this, so sequence lengths must be too
BLOCKS = (512, 256, 128)  # the largest that divides the sequence is used


def block_size(seq_len: int) -> int:
    """Tile size for a sequence; the length must be a multiple of 128."""
    if seq_len % LANES:
        raise InputError(
            f"attention_kernel=splash: sequence length {seq_len} is not a multiple of {LANES}; "
            f"set train.seq_len to a multiple of {LANES} or use model.attention_kernel=dot"
        )
    return next(b for b in BLOCKS if seq_len % b == 0)


def _make_kernel(num_heads: int, seq_len: int, sliding_window: int, interpret: bool):
    one: splash_mask.Mask
    if sliding_window:
        # key j is visible from query i when 0 <= i - j < window (slots; in a segment, positions)
        one = splash_mask.LocalMask((seq_len, seq_len), window_size=(sliding_window - 1, 0), offset=0)
    else:
        one = splash_mask.CausalMask((seq_len, seq_len))
    b = block_size(seq_len)
    sizes = splash.BlockSizes(
        block_q=b,
        block_kv=b,
        block_kv_compute=b,
        block_q_dkv=b,
        block_kv_dkv=b,
        block_kv_dkv_compute=b,
        block_q_dq=b,
        block_kv_dq=b,
    )
    return splash.make_splash_mha(
        splash_mask.MultiHeadMask([one] * num_heads),
        block_sizes=sizes,
        head_shards=1,
        q_seq_shards=1,
        interpret=interpret,
    )


def _local_attention(q, k, v, segment_ids, sliding_window: int, interpret: bool):
    """One shard: q (b, h, t, d), k/v (b, kv, t, d), segment_ids (b, t) -> (b, h, t, d)."""
    kernel = _make_kernel(q.shape[1], q.shape[2], sliding_window, interpret)
    return jax.vmap(lambda q1, k1, v1, s1: kernel(q1, k1, v1, splash.SegmentIds(s1, s1)))(q, k, v, segment_ids)


def _axes(spec_entry) -> tuple[str, ...]:
    return () if spec_entry is None else ((spec_entry,) if isinstance(spec_entry, str) else tuple(spec_entry))


def splash_attention(q, k, v, segment_ids, *, sliding_window: int = 0, interpret: bool | None = None):
    """q (b, t, h, d), k/v (b, t, kv, d), segment_ids (b, t) -> (b, t, h, d).

    Outputs at padding slots (segment 0) differ from the dot path (which gives them a uniform
    average); nothing reads them, since no real query sees a padding key and the loss skips them.
    """
    if interpret is None:
        interpret = target.current().interpret_pallas
    d = q.shape[-1]
    q = (q.astype(jnp.float32) / math.sqrt(d)).astype(q.dtype)  # the kernel does not scale
    qt, kt, vt = (jnp.swapaxes(x, 1, 2) for x in (q, k, v))
    segment_ids = segment_ids.astype(jnp.int32)
    fn = lambda q1, k1, v1, s1: _local_attention(q1, k1, v1, s1, sliding_window, interpret)  # noqa: E731

    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or mesh.size == 1:
        out = fn(qt, kt, vt, segment_ids)
    else:
        q_spec = nn.logical_to_mesh_axes(("batch", "heads", "length", "head_dim"))
        kv_spec = nn.logical_to_mesh_axes(("batch", "kv_heads", "length", "head_dim"))
        assert q_spec is not None and kv_spec is not None  # flax gives None only for names=None
        if _axes(q_spec[2]) or _axes(q_spec[3]):
            raise InputError(
                f"attention_kernel=splash: mesh.rules shard `length` or `head_dim` ({q_spec}); "
                "the kernel needs whole sequences and heads per device"
            )
        if _axes(q_spec[1]) != _axes(kv_spec[1]):
            raise InputError(
                f"attention_kernel=splash: `heads` is sharded over {_axes(q_spec[1])} but `kv_heads` "
                f"over {_axes(kv_spec[1])}; give both the same mesh.rules"
            )
        seg_spec = PartitionSpec(q_spec[0], None)
        out = jax.shard_map(
            fn, mesh=mesh, in_specs=(q_spec, kv_spec, kv_spec, seg_spec), out_specs=q_spec, check_vma=False
        )(qt, kt, vt, segment_ids)
    return jnp.swapaxes(out, 1, 2)


def cudnn_attention(q, k, v, mask, *, sliding_window: int = 0):
    """q (b, t, h, d), k/v (b, t, kv, d), mask (b, t, t) bool from `attention_mask` -> (b, t, h, d).

    cuDNN only when the target is a GPU and the dtype is 16-bit (its kernel has no fp32); the causal
    flag lets it skip the upper triangle, the mask (as a bias) adds segments and the window."""
    use_cudnn = target.current().platform == "gpu" and q.dtype in (jnp.bfloat16, jnp.float16)
    window = (sliding_window - 1, 0) if sliding_window else None
    return jax.nn.dot_product_attention(
        q,
        k,
        v,
        mask=mask[:, None],
        is_causal=True,
        local_window_size=window,
        implementation="cudnn" if use_cudnn else "xla",
    )
