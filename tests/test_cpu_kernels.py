"""The CPU paged-attention kernel (model/cpu_kernels.py, csrc/paged_attention_cpu.cc): equal to the XLA path
on every kind of call the engine makes, refuses bad page ids without crashing, and is loaded only from a
directory that belongs to the user alone (as root and as an unprivileged user)."""

import json
import os
import platform
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mathjax_train.model import cpu_kernels
from mathjax_train.model.attention import PagedKV, paged_attention, paged_masks, paged_read

IS_ROOT = os.geteuid() == 0
NOBODY = 65534


def xla_path(q, pk, pv, layer, table, start, sk, sv, side_pos, window):
    kv = PagedKV(pk, pv, table, start, jnp.int32(side_pos))
    pages = (paged_read(pk, layer, table), paged_read(pv, layer, table))
    masks = paged_masks(kv, q.shape[1], pages[0].shape[2], sk.shape[3], window)
    return paged_attention(q, pages, (sk[layer], sv[layer]), masks)


def problem(seed, *, kv_heads, heads, t, side_len, head_dim=32, page_size=4, layers=3, width=6):
    """Random pages with rows of different lengths (an empty one, one ending mid-page, one filling its
    table), pages shuffled over the pool, and a side buffer."""
    rng = np.random.default_rng(seed)
    starts = np.array([0, 1, 5, 13, page_size * width], np.int32)
    b = len(starts)
    num_pages = b * width + 1
    f32 = lambda *s: jnp.asarray(rng.standard_normal(s).astype(np.float32))  # noqa: E731
    table = rng.permutation(np.arange(1, num_pages))[: b * width].reshape(b, width).astype(np.int32)
    return dict(
        q=f32(b, t, heads, head_dim),
        pk=f32(layers, kv_heads, num_pages, page_size, head_dim),
        pv=f32(layers, kv_heads, num_pages, page_size, head_dim),
        table=jnp.asarray(table),
        start=jnp.asarray(starts),
        sk=f32(layers, kv_heads, b, side_len, head_dim),
        sv=f32(layers, kv_heads, b, side_len, head_dim),
    )


@pytest.fixture(scope="module", autouse=True)
def kernel():
    problem_text = cpu_kernels.available()
    assert problem_text is None, problem_text  # CI has a C++ compiler: the kernel must build there


@pytest.mark.parametrize(
    "kv_heads,heads,t,side_len,side_pos,window,layer,head_dim",
    [
        (2, 6, 1, 4, 0, 0, 0, 64),  # decode, first step of a chunk
        (2, 6, 1, 4, 3, 0, 2, 64),  # decode, last step of a chunk, last layer
        (1, 4, 1, 8, 5, 0, 1, 64),  # one kv head (MQA)
        (3, 3, 1, 4, 2, 0, 1, 64),  # no grouping
        (1, 9, 1, 4, 2, 0, 1, 64),  # 9 query heads a kv head: two groups of 4 and one left over
        (2, 6, 5, 5, 0, 0, 1, 64),  # prefill chunk after cached tokens
        (2, 6, 5, 5, 0, 3, 1, 64),  # prefill with a window shorter than the chunk
        (2, 6, 1, 4, 2, 6, 2, 64),  # decode with a window shorter than the context
        (2, 4, 1, 4, 1, 0, 1, 128),  # LLaMA-sized heads
        (2, 6, 3, 4, 0, 0, 1, 256),  # wide heads (one query a group)
        (2, 6, 3, 4, 1, 0, 1, 24),  # a head_dim no vector width divides: the one-lane path
    ],
)
def test_kernel_equals_the_xla_path(kv_heads, heads, t, side_len, side_pos, window, layer, head_dim):
    p = problem(kv_heads * 10 + t, kv_heads=kv_heads, heads=heads, t=t, side_len=side_len, head_dim=head_dim)
    args = (p["q"], p["pk"], p["pv"], layer, p["table"], p["start"], p["sk"], p["sv"], side_pos, window)
    want = xla_path(*args)
    got = cpu_kernels.paged_attention_cpu(*args)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("march", ["haswell", "x86-64"])  # AVX2 (8 lanes) and no vector extension (one lane)
def test_the_narrower_instruction_sets_compute_the_same(march, tmp_path):
    """The machine builds with -march=native (AVX-512 here); the AVX2 and plain builds must agree too."""
    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("x86 instruction sets")
    lib = cpu_kernels.build(tmp_path, cpu_kernels._compiler(), march=march)
    target = f"test_paged_attention_{march.replace('-', '_')}"
    cpu_kernels.register(lib, target)
    for head_dim in (64, 128, 24):
        p = problem(head_dim, kv_heads=1, heads=9, t=3, side_len=4, head_dim=head_dim)
        args = (p["q"], p["pk"], p["pv"], 1, p["table"], p["start"], p["sk"], p["sv"], 1, 5)
        got = cpu_kernels.paged_attention_cpu(*args, target=target)
        np.testing.assert_allclose(np.asarray(got), np.asarray(xla_path(*args)), rtol=1e-5, atol=1e-5)


def test_kernel_reads_the_layer_it_is_given():
    p = problem(1, kv_heads=2, heads=4, t=1, side_len=4)
    args = dict(q=p["q"], table=p["table"], start=p["start"], side_pos=1, window=0)
    one = cpu_kernels.paged_attention_cpu(
        args["q"], p["pk"], p["pv"], 1, args["table"], args["start"], p["sk"], p["sv"], 1, 0
    )
    moved = {k: p[k].at[0].set(p[k][1]).at[1].set(p[k][0]) for k in ("pk", "pv", "sk", "sv")}
    zero = cpu_kernels.paged_attention_cpu(
        args["q"], moved["pk"], moved["pv"], 0, args["table"], args["start"], moved["sk"], moved["sv"], 1, 0
    )
    np.testing.assert_array_equal(np.asarray(one), np.asarray(zero))
    other = cpu_kernels.paged_attention_cpu(
        args["q"], p["pk"], p["pv"], 0, args["table"], args["start"], p["sk"], p["sv"], 1, 0
    )
    assert not np.allclose(np.asarray(one), np.asarray(other))


def test_kernel_runs_inside_a_scanned_jit():
    """The decoder scans over layers, so the layer index reaches the kernel traced."""
    p = problem(2, kv_heads=2, heads=4, t=1, side_len=4)

    @jax.jit
    def both(q):
        def body(acc, layer):
            out = cpu_kernels.paged_attention_cpu(
                q + acc, p["pk"], p["pv"], layer, p["table"], p["start"], p["sk"], p["sv"], 2, 0
            )
            return acc + out, out

        return jax.lax.scan(body, jnp.zeros_like(q), jnp.arange(3))[1]

    got = both(p["q"])
    acc = jnp.zeros_like(p["q"])
    for layer in range(3):
        want = xla_path(p["q"] + acc, p["pk"], p["pv"], layer, p["table"], p["start"], p["sk"], p["sv"], 2, 0)
        np.testing.assert_allclose(np.asarray(got[layer]), np.asarray(want), rtol=1e-5, atol=1e-5)
        acc = acc + want


def test_a_page_id_outside_the_cache_is_an_error_not_a_crash():
    p = problem(3, kv_heads=2, heads=4, t=1, side_len=4)
    bad = p["table"].at[3, 1].set(10_000)
    with pytest.raises(Exception, match="page id is outside the cache"):
        cpu_kernels.paged_attention_cpu(
            p["q"], p["pk"], p["pv"], 0, bad, p["start"], p["sk"], p["sv"], 0, 0
        ).block_until_ready()
    too_long = p["start"].at[0].set(1000)
    with pytest.raises(Exception, match="more tokens than its page table covers"):
        cpu_kernels.paged_attention_cpu(
            p["q"], p["pk"], p["pv"], 0, p["table"], too_long, p["sk"], p["sv"], 0, 0
        ).block_until_ready()


# Builds the kernel in a fresh process (the loader keeps its result per process) and reports where it loaded it
# from and whether its answer matches the XLA path.
PROBE = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, sys.argv[1])
    import numpy as np
    from mathjax_train.model import cpu_kernels
    import test_cpu_kernels as t
    problem = cpu_kernels.available()
    out = {"problem": problem, "dir": str(cpu_kernels._state.get("dir"))}
    if problem is None:
        p = t.problem(5, kv_heads=2, heads=4, t=1, side_len=4)
        args = (p["q"], p["pk"], p["pv"], 1, p["table"], p["start"], p["sk"], p["sv"], 2, 0)
        out["max_diff"] = float(np.max(np.abs(np.asarray(cpu_kernels.paged_attention_cpu(*args)) - np.asarray(t.xla_path(*args)))))
    print(json.dumps(out))
    """
)


def _probe(env, prefix=()):
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    base = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}  # root's, for root
    run = subprocess.run(
        [*prefix, sys.executable, "-c", PROBE, tests_dir],
        capture_output=True,
        text=True,
        timeout=300,
        cwd="/",
        env={**base, "JAX_PLATFORMS": "cpu", **env},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_an_unsafe_cache_dir_is_not_loaded_from(tmp_path):
    """A cache directory others can write to could hold a planted library: the loader builds into a private
    temporary directory instead, and never opens what is there."""
    shared = tmp_path / "shared-cache"
    shared.mkdir()
    shared.chmod(0o777)
    compiler = cpu_kernels._compiler()
    assert compiler
    planted = shared / cpu_kernels.library_name(compiler)
    planted.write_text("not a library: loading this would fail")
    got = _probe({"MATHJAX_KERNEL_CACHE": str(shared)})
    assert got["problem"] is None and got["max_diff"] < 1e-5
    assert not got["dir"].startswith(str(shared)) and "mathjax-kernels-" in got["dir"]
    assert planted.read_text().startswith("not a library")


@pytest.mark.skipif(not IS_ROOT, reason="switching to another uid needs root; the run itself is unprivileged here")
def test_an_unprivileged_user_builds_into_a_private_dir(tmp_path):
    """As uid nobody, whose home cannot be written, with root's cache directory offered: neither is used."""
    root_cache = tmp_path / "root-cache"
    root_cache.mkdir(mode=0o755)
    tmp_path.chmod(0o755)
    got = _probe(
        {"MATHJAX_KERNEL_CACHE": str(root_cache), "HOME": "/nonexistent", "TMPDIR": "/tmp"},
        prefix=("setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"),
    )
    assert got["problem"] is None and got["max_diff"] < 1e-5
    assert "mathjax-kernels-" in got["dir"] and os.stat(got["dir"]).st_uid == NOBODY
    assert not os.listdir(root_cache)


def test_the_user_cache_is_reused(tmp_path):
    cache = tmp_path / "cache"
    first = _probe({"MATHJAX_KERNEL_CACHE": str(cache)})
    assert first["dir"] == str(cache) and first["max_diff"] < 1e-5
    (lib,) = os.listdir(cache)
    mtime = os.stat(cache / lib).st_mtime_ns
    second = _probe({"MATHJAX_KERNEL_CACHE": str(cache)})
    assert second["dir"] == str(cache) and os.stat(cache / lib).st_mtime_ns == mtime
    assert os.stat(cache).st_mode & 0o777 == 0o700
