"""Model FLOPs per token and device peak FLOP/s, for MFU = achieved model FLOP/s / peak.

Training FLOPs per token follow the PaLM appendix: 6 x (matmul parameters, including the output
projection) + 12 x layers x heads x head_dim x sequence length (attention scores and values,
counted over the full sequence as PaLM does, not halved for the causal mask). For a mixture of experts the
matmul parameters are the active ones: the router plus the top-k experts a token goes through.
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp

from mathjax_train.config import InputError, ModelConfig
from mathjax_train.parallel.topology import FAMILIES

# Dense bf16 peak TFLOP/s per chip by jax device_kind substring: the TPU families' figures come from
# the topology table; the longest matching key wins ("TPU v5" is a prefix of "TPU v5 lite").
GPU_PEAK_TFLOPS = (("H200", 989.0), ("H100", 989.0), ("A100", 312.0))
PEAK_TFLOPS = tuple((kind, f.peak_tflops) for f in FAMILIES.values() for kind in f.device_kinds) + GPU_PEAK_TFLOPS


def matmul_params(cfg: ModelConfig) -> int:
    """Parameters that take part in matmuls per token (the embedding lookup is not one)."""
    e, h, kv, d, m, v = (
        cfg.hidden_size,
        cfg.num_heads,
        cfg.num_kv_heads,
        cfg.resolved_head_dim,
        cfg.intermediate_size,
        cfg.vocab_size,
    )
    per_layer = (
        e * h * d + 2 * e * kv * d + h * d * e + (mlp_params(cfg, active=True) if cfg.num_experts else 3 * e * m)
    )
    return cfg.num_layers * per_layer + e * v


def mlp_params(cfg: ModelConfig, active: bool) -> int:
    """One layer's feed-forward matmul parameters: 3 e m dense; with experts the router (e x experts) plus
    3 e m_expert for each of the top-k experts a token uses (`active`) or for all of them."""
    e = cfg.hidden_size
    if not cfg.num_experts:
        return 3 * e * cfg.intermediate_size
    experts = cfg.num_experts_per_tok if active else cfg.num_experts
    return e * cfg.num_experts + experts * 3 * e * cfg.moe_intermediate_size


def active_param_count(cfg: ModelConfig, total: int) -> int:
    """Parameters a token uses, from the model's `total`: all but the experts it is not routed to."""
    unused = (cfg.num_experts - cfg.num_experts_per_tok) * 3 * cfg.hidden_size * cfg.moe_intermediate_size
    return total - cfg.num_layers * unused if cfg.num_experts else total


def train_flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    attention = 12 * cfg.num_layers * cfg.num_heads * cfg.resolved_head_dim * seq_len
    return 6.0 * matmul_params(cfg) + attention


def peak_flops_per_device(device=None, configured_tflops: float = 0.0, dtype: str = "bfloat16") -> float:
    """FLOP/s of one device: configured, else the table, else (CPU) measured with a matmul."""
    if configured_tflops > 0:
        return configured_tflops * 1e12
    device = device or jax.devices()[0]
    kind = getattr(device, "device_kind", "")
    matches = [(key, tflops) for key, tflops in PEAK_TFLOPS if key.lower() in kind.lower()]
    if matches:
        return max(matches, key=lambda m: len(m[0]))[1] * 1e12
    if device.platform == "cpu":
        return _measured_cpu_flops(dtype) / max(len(jax.local_devices()), 1)
    raise InputError(f"no peak FLOP/s known for device kind {kind!r}; set train.peak_tflops_per_device")


@functools.lru_cache(maxsize=None)
def _measured_cpu_flops(dtype: str) -> float:
    """The host's matmul FLOP/s (all cores, one device): the best of a few 1024^3 products."""
    n = 1024
    dt = jnp.float32 if dtype == "float32" else jnp.dtype(dtype)
    a = jnp.ones((n, n), dt)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        f(a).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best
