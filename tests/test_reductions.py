"""`argmax_last` equals jnp.argmax over the last axis: ties (lowest index), a vocabulary that is not a
multiple of the block, -inf and +inf entries, small vocabularies and integer inputs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mathjax_train.model.reductions import argmax_last


@pytest.mark.parametrize("vocab", [5, 255, 256, 300, 512, 1000])
def test_argmax_last_matches_argmax(vocab):
    x = jax.random.normal(jax.random.PRNGKey(vocab), (3, 7, vocab))
    x = jnp.round(x * 2) / 2  # many ties
    x = x.at[0, 0].set(-jnp.inf).at[0, 1, vocab // 3].set(jnp.inf).at[1, 2].set(3.0)
    got = jax.jit(argmax_last)(x)
    assert got.dtype == jnp.int32
    np.testing.assert_array_equal(got, jnp.argmax(x, axis=-1))
    assert int(got[1, 2]) == 0 and int(got[0, 1]) == vocab // 3  # all tied -> 0


def test_argmax_last_integer_and_bf16_inputs():
    ints = jax.random.randint(jax.random.PRNGKey(0), (4, 600), 0, 9)
    np.testing.assert_array_equal(argmax_last(ints), jnp.argmax(ints, axis=-1))
    half = jax.random.normal(jax.random.PRNGKey(1), (4, 600)).astype(jnp.bfloat16)
    np.testing.assert_array_equal(argmax_last(half), jnp.argmax(half, axis=-1))
