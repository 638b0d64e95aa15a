"""Keep JAX off a TPU backend that cannot start. libtpu (the `[tpu]` extra, which `plan --compile` uses to compile
for TPU slices from any machine) makes JAX try a TPU backend in every process, even with no TPU attached: libtpu
then prints its start-up complaints and holds a lock that plan's compile child cannot take. On a host with no TPU
chips the CLI therefore runs JAX on the CPU, as it would without libtpu, unless the user set JAX_PLATFORMS or a
GPU plugin is installed (JAX then picks the GPU as before).
"""

from __future__ import annotations

import importlib.util
import os
import pkgutil
import sys


def _tpu_chips() -> int:
    from jax._src import hardware_utils  # stdlib-only helper that jax itself asks the same question with

    return hardware_utils.num_available_tpu_chips_and_device_id()[0]


def _gpu_plugin_installed() -> bool:
    return any(m.name.startswith(("jax_cuda", "jax_rocm")) for m in pkgutil.iter_modules())


def keep_off_absent_tpu() -> bool:
    """JAX on the CPU when libtpu is installed but this host has no TPU chip (module docstring); True if set."""
    if os.environ.get("JAX_PLATFORMS") or importlib.util.find_spec("libtpu") is None:
        return False
    if _tpu_chips() > 0 or _gpu_plugin_installed():
        return False
    os.environ["JAX_PLATFORMS"] = "cpu"  # child processes (plan's compile, multi-host launches) start the same way
    if "jax" in sys.modules:
        import jax

        jax.config.update("jax_platforms", "cpu")
    return True
