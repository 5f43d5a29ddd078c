"""Checkpoints: safetensors files read into NumPy arrays (bfloat16 included), and the one rule by which
every model here takes its weights from them.

Published checkpoints are often bfloat16, which NumPy has no dtype for, so the safetensors file is
parsed directly (8-byte little-endian header length, JSON header, raw little-endian data) and bfloat16
is widened to float32 exactly. Tensor names are the official parameter names (`model.layers.0.mlp.up_proj.weight`).

The rule (`load_weights`), as transformers' from_pretrained applies it, but strict where a silent
default would make a wrong model:
* every parameter a module lists must be in the checkpoint (no random initialisation): else WeightError
  naming each missing tensor;
* with the shape the config gives: else WeightError naming the tensor and both shapes;
* a checkpoint tensor the model has no place for is not an error (from_pretrained warns and goes on:
  Qwen3-TTS CustomVoice and VoiceDesign checkpoints carry a speaker encoder the model does not build);
  the loader returns those names and the models keep them in `unused_weights`.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .nn import Module

_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32, "I16": np.int16,
           "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}  # fmt: skip


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


def load_config(folder: str | Path, name: str = "config.json") -> dict:
    """A checkpoint folder's config.json (or another JSON file of it) as a dict."""
    return json.loads((Path(folder) / name).read_text())


class WeightError(ValueError):
    """Checkpoint tensors missing, or of another shape than the config gives, for a module tree."""


def load_weights(root: Module, tensors: Mapping[str, np.ndarray], dtype: Any = None,
                 source: str = "checkpoint") -> list[str]:  # fmt: skip
    """Fill every module's `params` below `root` from `tensors`, named by official path relative to the root
    (floating tensors cast to `dtype` when given). Returns the names of the tensors nothing used."""
    used: set[str] = set()
    missing: list[str] = []
    prefix = f"{root.path}." if root.path else ""
    for path, module in root.named_modules():
        relative = "" if path == root.path else path[len(prefix) :]
        for name in module.params:
            key = f"{relative}.{name}" if relative else name
            if key not in tensors:
                missing.append(key)
                continue
            value = tensors[key]
            if dtype is not None and value.dtype.kind == "f":
                value = np.ascontiguousarray(value, dtype=dtype)
            expected = module.param_shapes().get(name)
            if expected is not None and tuple(value.shape) != tuple(expected):
                raise WeightError(f"{source}: {key}: checkpoint shape {tuple(value.shape)} != {tuple(expected)} "
                                  "the config gives")  # fmt: skip
            setattr(module, name, value)
            used.add(key)
    if missing:
        shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
        raise WeightError(f"{source} lacks {len(missing)} tensor(s) the model needs: {shown}")
    return sorted(set(tensors) - used)
