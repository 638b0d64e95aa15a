"""Shared by the attention tests: float32 tolerances, packed segment ids, a tiny model, one train step.

Tolerances, float32 throughout (another kernel sums the softmax in another order): activations
elementwise |kernel - dot| <= 2e-5 + 2e-5 |dot| (values are O(1)); gradients, which sum hundreds
of token contributions, max |kernel - dot| <= 1e-5 * max |dot| over each tensor."""

import jax
import numpy as np

from mathjax_train.config import load_config
from mathjax_train.train.setup import build_step

TOL = dict(rtol=2e-5, atol=2e-5)
GRAD_REL = 1e-5


def assert_close_to_scale(actual, ref, what, rel=GRAD_REL):
    actual, ref = np.asarray(actual, np.float32), np.asarray(ref, np.float32)
    scale = float(np.max(np.abs(ref)))
    err = float(np.max(np.abs(actual - ref)))
    assert scale > 0 and err <= rel * scale, f"{what}: max error {err:.3g} > {rel} x scale {scale:.3g}"


def packed_segments(b, t, seed=0, lengths=(20, 120)):
    """Rows of several examples of random lengths in [lengths), then padding (segment 0); positions
    restart per example."""
    rng = np.random.default_rng(seed)
    seg = np.zeros((b, t), np.int32)
    pos = np.zeros((b, t), np.int32)
    for r in range(b):
        start, s = 0, 1
        while True:
            n = int(rng.integers(*lengths))
            if start + n > t - 10:
                break
            seg[r, start : start + n], pos[r, start : start + n] = s, np.arange(n)
            start, s = start + n, s + 1
    return seg, pos


def tiny_model_config(kernel, **kw):
    overrides = [
        "model.vocab_size=64",
        "model.hidden_size=64",
        "model.intermediate_size=128",
        "model.num_layers=2",
        "model.num_heads=4",
        "model.num_kv_heads=2",
        "model.dtype=float32",
        "train.seq_len=128",
        "train.batch_size=4",
        f"model.attention_kernel={kernel}",
    ]
    return load_config(None, overrides + [f"{k}={v}" for k, v in kw.items()])


def sharded_step(cfg, host_params, batch):
    """One train step of `cfg` under its mesh from the given parameters: (metrics, new params) on the host."""
    setup = build_step(cfg)
    state = setup.init_state(0, jax.device_put(host_params, setup.layout.param_shardings))
    with jax.set_mesh(setup.mesh):
        new, m = setup.step(state, jax.device_put(batch, setup.batch_sharding))
    return jax.device_get(m), jax.device_get(new["params"])
