"""Content hashes of stage inputs and outputs that are equal whenever the content is.

Files: sha256 of the bytes. Directories: sorted relative paths and bytes. Model checkpoints (a
directory with model_config.json: import-hf output or a training OUTPUT_DIR) hash what a later
stage loads from them: the model config, the tokenizer files and the restored parameter arrays of
the step `resolve` picks. Their Orbax files are not hashed as bytes: OCDBT names its data files at
random and lays them out differently on every save of the same arrays (tests/test_pipeline.py), and
_CHECKPOINT_METADATA carries timestamps. Optimizer state is left out (no later stage reads it).
"""

from __future__ import annotations

import hashlib

import numpy as np
from etils import epath

from mathjax_train.model import checkpoint as model_ckpt

CHUNK = 1 << 20


def _update_file(h, path: epath.Path) -> None:
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)


def _files(root: epath.Path, prefix: str = "") -> list[tuple[str, epath.Path]]:
    """(relative path, path) of every file under root, sorted (epath has no recursive glob on gs://)."""
    out = []
    for p in root.iterdir():
        rel = f"{prefix}{p.name}"
        out += _files(p, rel + "/") if p.is_dir() else [(rel, p)]
    return sorted(out)


def _hash_dir_into(h, root: epath.Path) -> None:
    for rel, p in _files(root):
        h.update(rel.encode() + b"\0")
        _update_file(h, p)
        h.update(b"\0")


def checkpoint_hash(path) -> str:
    """sha256 over model_config.json, tokenizer/ and the parameter arrays (path, dtype, shape, bytes)."""
    import jax

    paths = model_ckpt.resolve(path)
    h = hashlib.sha256(b"checkpoint\0")
    h.update(paths.config_file.read_bytes() + b"\0")
    if paths.tokenizer_dir.exists():
        _hash_dir_into(h, paths.tokenizer_dir)
    params = model_ckpt.load_params(path, model_ckpt.load_model_config(path))
    for key, leaf in sorted(jax.tree_util.tree_leaves_with_path(params), key=lambda kv: jax.tree_util.keystr(kv[0])):
        arr = np.ascontiguousarray(np.asarray(leaf))
        h.update(f"{jax.tree_util.keystr(key)}:{arr.dtype}:{arr.shape}\0".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def is_checkpoint(path: epath.Path) -> bool:
    return path.is_dir() and (path / model_ckpt.CONFIG_FILE).exists()


def content_hash(path) -> str | None:
    """The content hash of a file, directory or checkpoint; None when the path does not exist."""
    p = epath.Path(path)
    if not p.exists():
        return None
    if is_checkpoint(p):
        return checkpoint_hash(p)
    h = hashlib.sha256()
    if p.is_dir():
        h.update(b"dir\0")
        _hash_dir_into(h, p)
    else:
        _update_file(h, p)
    return h.hexdigest()
