"""Read checkpoints in the official layout (safetensors) into NumPy arrays, bfloat16 included.

The published Qwen3-TTS checkpoints are bfloat16, which NumPy has no dtype for, so the safetensors
file is parsed directly (8-byte little-endian header length, JSON header, raw little-endian data) and
bfloat16 is widened to float32 exactly. Names are the official parameter names.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}


def load_safetensors(path: str | Path, dtype: np.dtype | type | None = None) -> dict[str, np.ndarray]:
    """All tensors of a safetensors file; floating tensors cast to `dtype` when given (exactly, upward)."""
    path = Path(path)
    with open(path, "rb") as handle:
        (header_len,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(header_len))
        base = 8 + header_len
        data = np.memmap(path, dtype=np.uint8, mode="r", offset=base) if path.stat().st_size > base else None
    out: dict[str, np.ndarray] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        raw = data[start:end] if data is not None else np.zeros(0, np.uint8)
        shape = tuple(info["shape"])
        if info["dtype"] == "BF16":
            bits = raw.view("<u2").astype(np.uint32) << 16
            array = bits.view(np.float32).reshape(shape)
        else:
            array = np.array(raw.view(np.dtype(_DTYPES[info["dtype"]]).newbyteorder("<")).reshape(shape))
        if dtype is not None and array.dtype.kind == "f":
            array = array.astype(dtype)
        out[name] = array
    return out


def load_checkpoint_tensors(folder: str | Path, dtype: np.dtype | type | None = None) -> dict[str, np.ndarray]:
    """The tensors of a checkpoint folder: model.safetensors, or the shards model.safetensors.index.json names."""
    folder = Path(folder)
    index = folder / "model.safetensors.index.json"
    if not index.exists():
        return load_safetensors(folder / "model.safetensors", dtype)
    tensors: dict[str, np.ndarray] = {}
    for shard in sorted(set(json.loads(index.read_text())["weight_map"].values())):
        tensors.update(load_safetensors(folder / shard, dtype))
    return tensors


def load_config(folder: str | Path) -> dict:
    return json.loads((Path(folder) / "config.json").read_text())
