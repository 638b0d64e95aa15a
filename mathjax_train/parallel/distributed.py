"""Multi-host start-up: `jax.distributed.initialize` from the config or the TPU environment."""
from __future__ import annotations

import os

import jax

from mathjax_train.config import ConfigError, DistributedConfig

_initialized = False


def _on_multi_host_tpu() -> bool:
    hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
    return "," in hosts or bool(os.environ.get("MEGASCALE_COORDINATOR_ADDRESS"))


def maybe_initialize(cfg: DistributedConfig) -> bool:
    """Initialize jax.distributed once when asked or when the environment is a multi-host pod.

    Must run before anything touches jax devices. Returns whether it initialized.
    """
    global _initialized
    if _initialized:
        return True
    explicit = bool(cfg.coordinator_address) or cfg.num_processes > 1
    if cfg.initialize == "never" or (cfg.initialize == "auto" and not explicit and not _on_multi_host_tpu()):
        return False
    kwargs = {}
    if cfg.coordinator_address:
        if ":" not in cfg.coordinator_address:
            raise ConfigError(f"distributed.coordinator_address: {cfg.coordinator_address!r} needs a port "
                              "(host:port); pick one your firewall allows between the hosts")
        kwargs["coordinator_address"] = cfg.coordinator_address
    if cfg.num_processes > 0:
        kwargs["num_processes"] = cfg.num_processes
    if cfg.process_id >= 0:
        kwargs["process_id"] = cfg.process_id
    jax.distributed.initialize(**kwargs)
    _initialized = True
    return True
