"""Keep other libraries' start-up noise off the terminal: TensorFlow's C++ lines about CUDA, and
absl warnings (Orbax's "Metadata file does not exist" for every checkpoint it reads).

`mathjax-train --verbose ...` or MATHJAX_VERBOSE=1 leaves all of it as the libraries print it.
Either way TensorFlow, which only runs input pipelines, is kept off the GPUs: they are JAX's
(CUDA_VISIBLE_DEVICES is not touched).
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import os
import re
import sys
import tempfile

VERBOSE_ENV = "MATHJAX_VERBOSE"

# What TensorFlow prints while it loads and probes CUDA, whatever TF_CPP_MIN_LOG_LEVEL=2 says.
NOISE = re.compile(
    "|".join(
        [
            r"^WARNING: All log messages before absl::InitializeLog\(\) is called",
            r"^[IW]\d{4} [\d:.]+ +\d+ \S+\] ",  # C++ INFO/WARNING records, e.g. cudart_stub's "Could not find cuda drivers"
            r"failed call to cuInit",
            r"Unable to register cu\w+ factory",
            r"TF-TRT Warning",
            r"rebuild TensorFlow with the appropriate compiler flags",
        ]
    )
)


def verbose_requested(flag: bool) -> bool:
    """--verbose, or MATHJAX_VERBOSE set to anything but empty/0/false/no."""
    return flag or os.environ.get(VERBOSE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def configure(verbose: bool) -> None:
    """Set up logging for one command; call before TensorFlow is imported (the CLI imports it lazily)."""
    if not verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF's and XLA's C++ INFO and WARNING records
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)  # Orbax, SeqIO and TFDS log through absl
    hook = next((f for f in sys.meta_path if isinstance(f, _TensorFlowImport)), None)
    if hook is not None:
        hook.quiet = not verbose
    elif "tensorflow" not in sys.modules:
        sys.meta_path.insert(0, _TensorFlowImport(quiet=not verbose))


class _TensorFlowImport(importlib.abc.MetaPathFinder):
    """Runs the first `import tensorflow` with its stderr filtered (when quiet), then hides the GPUs from it."""

    def __init__(self, quiet: bool):
        self.quiet = quiet

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)  # also asked by has-TF checks (flax, etils)
        if spec is None or spec.loader is None:
            return spec
        load = spec.loader.exec_module

        def exec_module(module):
            if self in sys.meta_path:
                sys.meta_path.remove(self)
            with filtered_stderr(self.quiet):
                load(module)
                module.config.set_visible_devices([], "GPU")  # also where TF calls cuInit

        spec.loader.exec_module = exec_module
        return spec


@contextlib.contextmanager
def filtered_stderr(quiet: bool = True):
    """While the block runs, file descriptor 2 (C++ logs too) goes to a file; afterwards the lines
    NOISE does not match are written to stderr."""
    if not quiet:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            lines = tmp.read().decode(errors="replace").splitlines(keepends=True)
            sys.stderr.write("".join(line for line in lines if not NOISE.search(line)))
