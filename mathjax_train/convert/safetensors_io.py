"""Stream safetensors files tensor by tensor (read) and write them without holding a whole shard.

The format is an 8-byte little-endian header size, a JSON header of {name: dtype, shape,
data_offsets}, then raw little-endian bytes. Reading one tensor at a time keeps a 7B import at
about one copy of the model in host memory.
"""

from __future__ import annotations

import json
import struct
from typing import Iterator

import ml_dtypes
import numpy as np

from mathjax_train.errors import InputError

DTYPES = {
    "F64": np.dtype(np.float64),
    "F32": np.dtype(np.float32),
    "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "I64": np.dtype(np.int64),
    "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16),
    "I8": np.dtype(np.int8),
    "U8": np.dtype(np.uint8),
    "BOOL": np.dtype(np.bool_),
}
CODES = {v: k for k, v in DTYPES.items()}


def read_header(f, path) -> tuple[dict, int]:
    raw = f.read(8)
    if len(raw) != 8:
        raise InputError(f"{path}: not a safetensors file (too short)")
    (n,) = struct.unpack("<Q", raw)
    if n > 100_000_000:
        raise InputError(f"{path}: not a safetensors file (header of {n} bytes)")
    try:
        header = json.loads(f.read(n))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: corrupt safetensors header: {e}") from None
    header.pop("__metadata__", None)
    return header, 8 + n


def iter_tensors(path) -> Iterator[tuple[str, np.ndarray]]:
    """Yield (name, array) for each tensor of a safetensors file, in file order, one at a time."""
    with path.open("rb") as f:
        header, base = read_header(f, path)
        items = sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0])
        for name, info in items:
            dtype = DTYPES.get(info["dtype"])
            if dtype is None:
                raise InputError(f"{path}: tensor {name!r} has unsupported dtype {info['dtype']}")
            start, end = info["data_offsets"]
            f.seek(base + start)
            data = f.read(end - start)
            shape = tuple(info["shape"])
            if len(data) != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
                raise InputError(f"{path}: tensor {name!r} is truncated")
            yield name, np.frombuffer(data, dtype=dtype).reshape(shape)


def write_safetensors(path, tensors: list[tuple[str, tuple, np.dtype]], produce) -> None:
    """Write a file whose tensors (name, shape, dtype) are produced one at a time by produce(name)."""
    header, offset = {}, 0
    for name, shape, dtype in tensors:
        size = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        header[name] = {"dtype": CODES[np.dtype(dtype)], "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    header["__metadata__"] = {"format": "pt"}
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with path.open("wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for name, shape, dtype in tensors:
            arr = np.ascontiguousarray(produce(name), dtype=dtype)
            assert arr.shape == tuple(shape), (name, arr.shape, shape)
            f.write(arr.tobytes())
