"""The golden-store layout: names, versions and the small encodings both the writer and reader share.

The layout itself is documented in docs/golden-store.md; this module is its single source of truth
in code. Only numpy and h5py are imported here (the checking side runs without torch).
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

FORMAT = "conformance-golden-store"
SCHEMA_VERSION = 1

# Roots of a leaf's role: positional args, keyword args, return value.
ROLE_ROOTS = ("args", "kwargs", "outputs")

# What a leaf is. Tensors carry data; everything else is described by `value` (JSON).
KIND_TENSOR = "tensor"
VALUE_KINDS = ("none", "bool", "int", "float", "str", "json", "dtype", "device", "object")

# Storage tiers (issue: large runs). `full` keeps every element; `stats` keeps a statistical summary;
# `hash` keeps only a checksum. The check engine compares what a tier holds and says which tier it used.
TIERS = ("full", "stats", "hash")

# Noise metrics recorded by the float64 oracle, per output tensor (see conformance/metrics.py).
ORACLE_METRICS = ("max_abs", "mean_abs", "rel_l2", "max_rel", "cos_dist", "max_ulp")

# dtypes numpy/HDF5 lack are stored as raw bits with the logical dtype named.
RAW_STORAGE = {"bfloat16": np.dtype("<u2")}

TABLE_FLUSH_ROWS = 8192

# Root attributes beyond the basic ones. Every store gets a random `recording_id`; a float32 (or bfloat16)
# store recorded with its clean float64 twin names it in `float64_reference` (JSON: the twin's file name,
# relative to the store's folder, and the twin's recording_id), so a check finds its chained-noise
# reference from the store alone and never pairs it with another recording that took the twin's name.
RECORDING_ID_ATTR = "recording_id"
REFERENCE64_ATTR = "float64_reference"


def checksum(array: np.ndarray, value: int = 0) -> int:
    """CRC-32 of the array's bytes in C order (streamable: pass the previous value)."""
    data = np.ascontiguousarray(array)
    if data.size == 0:
        return zlib.crc32(b"", value)
    return zlib.crc32(memoryview(data).cast("B"), value)  # type: ignore[arg-type]


def bfloat16_to_float32(raw: np.ndarray) -> np.ndarray:
    """Widen raw bfloat16 bits (uint16) to float32 exactly."""
    return (raw.astype(np.uint32) << 16).view(np.float32)


def float32_to_bfloat16_bits(values: np.ndarray) -> np.ndarray:
    """Round float32 to bfloat16 (round-to-nearest-even) and return the raw bits as uint16."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    rounding = ((bits >> 16) & 1) + np.uint32(0x7FFF)
    out = ((bits + rounding) >> 16).astype(np.uint16)
    nan = np.isnan(values)
    if nan.any():
        out[nan] = 0x7FC0
    return out


def escape_component(name: str) -> str:
    """Make one path component safe as an HDF5 link name ('/' separates groups, '.' alone is special)."""
    name = name.replace("%", "%25").replace("/", "%2F")
    if name in ("", ".", ".."):
        name = name.replace(".", "%2E") or "%00"
    return name


def unescape_component(name: str) -> str:
    if name == "%00":
        return ""
    return name.replace("%2E", ".").replace("%2F", "/").replace("%25", "%")


def role_name(role: str) -> str:
    """A role as one HDF5 link name: `kwargs/position_embeddings/0` -> `kwargs.position_embeddings.0`.

    Roles are flattened into names (not nested groups) because every HDF5 group costs a few hundred
    bytes and a generation run has thousands of roles; the leaves table maps names back exactly."""
    return ".".join(escape_component(part).replace(".", "%2E") for part in role.split("/"))


def shape_signature(dtype: str, shape: tuple[int, ...]) -> str:
    dims = "x".join(str(d) for d in shape) if shape else "scalar"
    return f"{dtype}_{dims}"


def to_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))


@dataclass(frozen=True)
class LeafRecord:
    """One leaf of one module call: a tensor (with where it is stored) or a described value."""

    key: str
    call: int
    role: str
    kind: str
    dtype: str
    shape: tuple[int, ...]
    location: str
    row: int
    crc32: int
    value: str
    tier: str
    summary: str

    @property
    def is_tensor(self) -> bool:
        return self.kind == KIND_TENSOR

    @property
    def name(self) -> str:
        """The golden name of this tensor: module key, call index and role."""
        return f"{self.key}#{self.call}/{self.role}"

    @property
    def nbytes(self) -> int:
        itemsize = RAW_STORAGE[self.dtype].itemsize if self.dtype in RAW_STORAGE else np.dtype(self.dtype).itemsize
        return int(np.prod(self.shape, dtype=np.int64)) * itemsize if self.is_tensor else 0

    def decoded_value(self) -> Any:
        return json.loads(self.value) if self.value else None


@dataclass(frozen=True)
class CallRecord:
    """One call of one module (or wrapped method): where it sits in execution order and its structure."""

    key: str
    module: str
    method: str
    class_name: str
    call: int
    seq_start: int
    seq_end: int
    spec: str

    @property
    def name(self) -> str:
        return f"{self.key}#{self.call}"

    def decoded_spec(self) -> dict[str, Any]:
        return json.loads(self.spec) if self.spec else {}


@dataclass(frozen=True)
class OracleRecord:
    """Float32-vs-float64 noise of one output tensor, measured when the golden was recorded."""

    key: str
    call: int
    role: str
    mode: str
    status: str
    metrics: dict[str, float]


def split_name(name: str) -> tuple[str, int, str]:
    """Parse `key#call/role` back into its parts."""
    head, _, role = name.partition("/")
    key, _, call = head.rpartition("#")
    if not key or not call.isdigit() or not role:
        raise ValueError(f"not a golden tensor name (expected key#call/role): {name!r}")
    return key, int(call), role
