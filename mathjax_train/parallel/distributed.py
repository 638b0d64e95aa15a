"""Multi-host start-up: `jax.distributed.initialize` from the config or the Cloud TPU environment.

Process 0 runs the coordinator service on one TCP port that every host must reach. JAX's own
default on Cloud TPU moved (8476, then 8482 in recent releases) and custom VPC firewalls often
open only the old one, so the port is always explicit here: `distributed.coordinator_port`, else
$JAX_COORDINATOR_PORT, else DEFAULT_COORDINATOR_PORT (open it between the workers:
`gcloud compute firewall-rules create ... --allow tcp:8476`).
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass

import jax

from mathjax_train.config import ConfigError, DistributedConfig

DEFAULT_COORDINATOR_PORT = 8476
METADATA_TIMEOUT_S = 3.0
_TPU_DEVICE_FILES = ("/dev/accel0", "/dev/vfio/0")  # TPU VMs expose the chips as one of these

_initialized: dict | None = None


@dataclass
class TpuEnvironment:
    """What a Cloud TPU VM (or GKE pod) says about this host's place in the slice(s)."""

    worker_id: int
    worker_hostnames: list[str]
    num_slices: int = 1
    slice_id: int = 0
    megascale_coordinator: str = ""  # multislice: the host of process 0
    accelerator_type: str = ""
    source: str = "env"  # env | metadata

    @property
    def num_processes(self) -> int:
        return len(self.worker_hostnames) * self.num_slices

    @property
    def process_id(self) -> int:
        return self.worker_id + self.slice_id * len(self.worker_hostnames)

    @property
    def coordinator_host(self) -> str:
        host = self.megascale_coordinator or self.worker_hostnames[0]
        return _split_host_port(host)[0]


def _split_host_port(address: str) -> tuple[str, str | None]:
    """'host:port' -> (host, port); '[v6::addr]:port' and bare hosts (no port) work too."""
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        return host, rest[1:] if rest.startswith(":") else None
    if address.count(":") == 1:
        host, port = address.split(":")
        return host, port
    return address, None


def coordinator_port(cfg: DistributedConfig) -> int:
    """distributed.coordinator_port, else $JAX_COORDINATOR_PORT, else DEFAULT_COORDINATOR_PORT."""
    if cfg.coordinator_port:
        return cfg.coordinator_port
    env = os.environ.get("JAX_COORDINATOR_PORT", "")
    if env:
        if not env.isdigit() or not 0 < int(env) < 65536:
            raise ConfigError(f"$JAX_COORDINATOR_PORT: {env!r} is not a TCP port")
        return int(env)
    return DEFAULT_COORDINATOR_PORT


def on_tpu_vm() -> bool:
    return any(os.path.exists(p) for p in _TPU_DEVICE_FILES)


class _MetadataUnreachable(RuntimeError):
    pass


def _metadata(key: str) -> str | None:
    """One instance attribute from the GCE metadata server (None when it is not set)."""
    host = os.environ.get("GCE_METADATA_IP", "metadata.google.internal")
    req = urllib.request.Request(
        f"http://{host}/computeMetadata/v1/instance/attributes/{key}", headers={"Metadata-Flavor": "Google"}
    )
    try:
        with urllib.request.urlopen(req, timeout=METADATA_TIMEOUT_S) as resp:
            return resp.read().decode()
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return None
        raise RuntimeError(f"TPU metadata {key!r} from {host}: HTTP {e.code}") from None
    except OSError as e:
        raise _MetadataUnreachable(f"{host}: {e}") from None


def _tpu_env_lines(text: str) -> dict[str, str]:
    """The `tpu-env` attribute: lines of `KEY: 'value'`."""
    out = {}
    for line in text.splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            out[k.strip()] = v.strip().strip("'\"")
    return out


def _worker_hosts(endpoints: str) -> list[str]:
    """`worker-network-endpoints`: hostnames, or the older `name:id:ip` triples."""
    hosts = []
    for item in endpoints.strip().split(","):
        parts = item.strip().split(":")
        if len(parts) == 1:
            hosts.append(parts[0])
        elif len(parts) == 3:
            hosts.append(parts[2])
        else:
            raise RuntimeError(f"TPU metadata worker-network-endpoints: cannot read {item!r}")
    return hosts


def detect_tpu_environment(query_metadata: bool | None = None) -> TpuEnvironment | None:
    """This host's TPU slice layout from the environment (GKE, or exported by hand), else from the
    GCE metadata server when running on a TPU VM; None elsewhere (no network is touched then)."""
    hosts = os.environ.get("TPU_PROCESS_ADDRESSES") or os.environ.get("TPU_WORKER_HOSTNAMES")
    env = dict(os.environ)
    source = "env"
    if hosts is None:
        if not (on_tpu_vm() if query_metadata is None else query_metadata):
            return None
        try:
            worker = _metadata("agent-worker-number")
        except _MetadataUnreachable as e:  # accelerator device files, but not a Cloud TPU VM
            print(
                f"mathjax-train: no TPU metadata server ({e}); running as a single host unless "
                "distributed.* says otherwise",
                file=sys.stderr,
            )
            return None
        endpoints = _metadata("worker-network-endpoints")
        if worker is None or endpoints is None:
            return None  # a single-host TPU VM without slice metadata
        env = {**_tpu_env_lines(_metadata("tpu-env") or ""), **env}
        env["TPU_WORKER_ID"] = worker.strip()
        env.setdefault("TPU_ACCELERATOR_TYPE", (_metadata("accelerator-type") or "").strip())
        hosts, source = ",".join(_worker_hosts(endpoints)), "metadata"
    host_list = [h.strip() for h in hosts.split(",") if h.strip()]
    try:
        worker_id = int(env.get("TPU_WORKER_ID", "0"))
        num_slices = int(env.get("MEGASCALE_NUM_SLICES") or 1)
        slice_id = int(env.get("MEGASCALE_SLICE_ID") or 0)
    except ValueError as e:
        raise ConfigError(
            f"TPU environment: {e} (TPU_WORKER_ID, MEGASCALE_NUM_SLICES, MEGASCALE_SLICE_ID must be integers)"
        ) from None
    if not host_list or not 0 <= worker_id < len(host_list):
        raise ConfigError(f"TPU environment: worker {worker_id} is not one of the {len(host_list)} workers {host_list}")
    return TpuEnvironment(
        worker_id,
        host_list,
        num_slices,
        slice_id,
        env.get("MEGASCALE_COORDINATOR_ADDRESS", ""),
        env.get("TPU_ACCELERATOR_TYPE", ""),
        source,
    )


def resolve_init_args(cfg: DistributedConfig, tpu: TpuEnvironment | None) -> dict | None:
    """The jax.distributed.initialize arguments, or None when this run is single-process.

    Config fields win over the TPU environment; an address without a port gets coordinator_port().
    """
    if cfg.initialize == "never":
        return None
    explicit = bool(cfg.coordinator_address) or cfg.num_processes > 1
    multi_host_tpu = tpu is not None and tpu.num_processes > 1
    if cfg.initialize == "auto" and not explicit and not multi_host_tpu:
        return None
    port = coordinator_port(cfg)
    address = cfg.coordinator_address or (tpu.coordinator_host if tpu else "")
    if address:
        host, given = _split_host_port(address)
        if given is not None and not (given.isdigit() and 0 < int(given) < 65536):
            raise ConfigError(f"distributed.coordinator_address: {address!r} has no valid port after ':'")
        address = f"{host}:{given or port}" if ":" not in host else f"[{host}]:{given or port}"
    num = cfg.num_processes or (tpu.num_processes if tpu else 0)
    pid = cfg.process_id if cfg.process_id >= 0 else (tpu.process_id if tpu else -1)
    missing = [
        n for n, v in (("coordinator_address", address), ("num_processes", num), ("process_id", pid >= 0)) if not v
    ]
    if missing:
        raise ConfigError(
            f"distributed: no TPU environment found, so distributed.{', '.join(missing)} must be "
            "set (or distributed.initialize=never for one process)"
        )
    if not 0 <= pid < num:
        raise ConfigError(f"distributed.process_id: {pid} is not in [0, {num})")
    return {
        "coordinator_address": address,
        "num_processes": num,
        "process_id": pid,
        "initialization_timeout": cfg.initialization_timeout_s,
    }


def maybe_initialize(cfg: DistributedConfig) -> dict | None:
    """Initialize jax.distributed once when asked or when this host is part of a multi-host slice.

    Must run before anything touches jax devices. Returns the arguments used (None: one process).
    """
    global _initialized
    if _initialized is not None:
        return _initialized
    tpu = None if cfg.initialize == "never" else detect_tpu_environment()
    args = resolve_init_args(cfg, tpu)
    if args is None:
        return None
    # jax defines its flags as config attributes at run time, out of the type checker's sight
    if jax.config.jax_cpu_collectives_implementation in (None, "", "none"):  # type: ignore[attr-defined]
        jax.config.update("jax_cpu_collectives_implementation", "gloo")  # cross-process CPU collectives
    jax.distributed.initialize(**args)
    _initialized = dict(args, source=tpu.source if tpu and not cfg.coordinator_address else "config")
    return _initialized
