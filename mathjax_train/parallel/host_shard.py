"""One sampling job split over the hosts of a pod, each host running its own engine replica: host i of n takes
the job's items i, i + n, i + 2n, ... (by their index in the whole job, so seeds and results do not depend on
n), writes them to its own output OUTPUT.shard-i-of-n (resumed on its own), and marks it `.done` when its part
is complete; the complete shards are then joined in item order. `rft`, `generate` and `evaluate` shard so.
"""

from __future__ import annotations

import json

from etils import epath

from mathjax_train.config import DistributedConfig, InputError


def resolve_shard(shard_index: int, num_shards: int) -> tuple[int, int]:
    """(shard_index, num_shards): the ones given, else this host's jax process index and count (joining
    jax.distributed first when this host is part of a multi-host TPU slice)."""
    if num_shards > 0 and shard_index >= 0:
        if shard_index >= num_shards:
            raise InputError(f"shard index {shard_index} is not in [0, {num_shards})")
        return shard_index, num_shards
    import jax

    from mathjax_train.parallel.distributed import maybe_initialize

    maybe_initialize(DistributedConfig())
    index = shard_index if shard_index >= 0 else jax.process_index()
    count = num_shards or jax.process_count()
    if not 0 <= index < count:
        raise InputError(f"shard index {index} is not in [0, {count})")
    return index, count


def owns(item_index: int, shard_index: int, num_shards: int) -> bool:
    """Whether item `item_index` of the whole job belongs to shard `shard_index`."""
    return item_index % num_shards == shard_index


def shard_path(output: str, index: int, count: int) -> str:
    """Where shard `index` of `count` writes (the output itself for one shard)."""
    return output if count == 1 else f"{output}.shard-{index}-of-{count}"


def settings_path(output: str) -> str:
    """The settings an output (or one shard of it) was made with: checked when a run resumes it and when
    shards are joined."""
    return output + ".settings.json"


def done_path(path: str) -> str:
    return path + ".done"


def mark_done(path: str, info: dict) -> None:
    """Record that the shard at `path` is complete (`info`: what it holds, for whoever joins the shards)."""
    epath.Path(done_path(path)).write_text(json.dumps(info))


def unfinished(output: str, count: int) -> list[str]:
    """The shards of `output` not marked done yet (all of them joinable when this is empty)."""
    return [p for p in (shard_path(output, i, count) for i in range(count)) if not epath.Path(done_path(p)).exists()]
