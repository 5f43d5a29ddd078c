"""Tensor files a port reads or writes: safetensors, npz and HDF5 (numpy + h5py only).

Readers validate everything they can without reading tensor data (header, dtypes, shapes, that every
tensor's bytes lie inside the file) and then read data lazily, so a malformed file is reported when it
is opened, with one line naming the file and the tensor, never half-way through a check. safetensors
is parsed directly (8-byte little-endian header length, JSON header, raw little-endian data): the
`safetensors` package cannot hand bfloat16 to numpy, and ports built on Candle or ggml dump bfloat16.
bfloat16 is widened to float32 exactly; the logical dtype is kept.

Writers use `safetensors.numpy` and `numpy.savez`, so what the export writes loads with their APIs.
"""

from __future__ import annotations

import json
import os
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConformanceError, DumpError

TENSOR_SUFFIXES = (".safetensors", ".npz", ".h5", ".hdf5")

# safetensors dtype codes <-> logical dtype names (numpy names, plus bfloat16).
SAFETENSORS_DTYPES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8",
    "U64": "uint64", "U32": "uint32", "U16": "uint16", "U8": "uint8", "BOOL": "bool",
}  # fmt: skip
SUPPORTED_DTYPES = tuple(SAFETENSORS_DTYPES.values())
FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")
MAX_HEADER_BYTES = 100 * 1024 * 1024

ErrorType = type[ConformanceError]


def itemsize(dtype: str) -> int:
    return 2 if dtype == "bfloat16" else np.dtype(dtype).itemsize


REDUCED = ("float16", "bfloat16")  # floating-point dtypes narrower than a float32 golden's


def is_float(dtype: str) -> bool:
    return dtype in FLOAT_DTYPES


def widen_bfloat16(raw: np.ndarray) -> np.ndarray:
    """Raw bfloat16 bits (uint16) -> float32, exactly."""
    return (np.asarray(raw).astype(np.uint32) << 16).view(np.float32)


@dataclass
class TensorEntry:
    """One tensor of a tensor file: what it is, validated, and how to read it."""

    name: str
    dtype: str  # logical dtype: float32, bfloat16, int64, bool...
    shape: tuple[int, ...]
    path: Path
    _read: Callable[[], np.ndarray] = field(repr=False)

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.numel * itemsize(self.dtype)

    def read(self) -> np.ndarray:
        """The data (bfloat16 widened to float32 exactly); memory-mapped where the format allows."""
        return self._read()


@dataclass
class TensorFile:
    """An opened tensor file: its entries (validated) and its string metadata."""

    path: Path
    format: str
    entries: dict[str, TensorEntry]
    metadata: dict[str, str]
    _close: Callable[[], None] | None = field(default=None, repr=False)

    def close(self) -> None:
        if self._close is not None:
            self._close()
            self._close = None


def open_tensor_file(path: Path, error: ErrorType = DumpError) -> TensorFile:
    """Open a .safetensors, .npz or .h5/.hdf5 file; malformed files raise `error` (one line)."""
    path = Path(path)
    if not path.is_file():
        raise error("no such file", path=path)
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return read_safetensors(path, error)
    if suffix == ".npz":
        return read_npz(path, error)
    if suffix in (".h5", ".hdf5"):
        return read_hdf5(path, error)
    raise error(f"not a tensor file (expected one of {', '.join(TENSOR_SUFFIXES)})", path=path)


def tensor_files(folder: Path) -> Iterator[Path]:
    """Tensor files below a folder, in a stable order."""
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix.lower() in TENSOR_SUFFIXES:
            yield path


# -- safetensors -----------------------------------------------------------------------------------------


def read_safetensors_header(path: Path, error: ErrorType = DumpError) -> tuple[dict[str, Any], int, int]:
    """(header, header length, data section length) of a safetensors file, validated."""
    size = path.stat().st_size
    if size < 8:
        raise error(f"truncated safetensors file: {size} bytes, shorter than the 8-byte header length", path=path)
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        if length > size - 8:
            raise error(f"truncated safetensors file: the header length says {length} bytes but only "
                        f"{size - 8} follow", path=path)  # fmt: skip
        if length > MAX_HEADER_BYTES:
            raise error(f"not a safetensors file (header length {length} bytes)", path=path)
        raw = handle.read(length)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise error("not a safetensors file: its header is not JSON (truncated or another format)", path=path) from None
    if not isinstance(header, dict):
        raise error("not a safetensors file: its header is not a JSON object", path=path)
    return header, length, size - 8 - length


def read_safetensors(path: Path, error: ErrorType = DumpError) -> TensorFile:
    header, length, data_size = read_safetensors_header(path, error)
    metadata: dict[str, str] = {}
    entries: dict[str, TensorEntry] = {}
    mapped: dict[str, Any] = {}

    def data() -> np.ndarray:
        if "map" not in mapped:
            mapped["map"] = (np.memmap(path, dtype=np.uint8, mode="r", offset=8 + length)
                             if data_size > 0 else np.zeros(0, np.uint8))  # fmt: skip
        return mapped["map"]

    for name, info in header.items():
        if name == "__metadata__":
            if not isinstance(info, dict) or not all(isinstance(v, str) for v in info.values()):
                raise error("__metadata__ must map strings to strings", path=path)
            metadata = dict(info)
            continue
        if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= set(info):
            raise error("malformed header entry (needs dtype, shape, data_offsets)", path=path, tensor=name)
        code = info["dtype"]
        if code not in SAFETENSORS_DTYPES:
            raise error(f"wrong dtype: {code!r} is not supported (supported: {', '.join(SAFETENSORS_DTYPES)})",
                        path=path, tensor=name)  # fmt: skip
        dtype = SAFETENSORS_DTYPES[code]
        shape = info["shape"]
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise error(f"malformed shape {shape!r}", path=path, tensor=name)
        offsets = info["data_offsets"]
        if (not isinstance(offsets, list) or len(offsets) != 2 or not all(isinstance(o, int) for o in offsets)
                or not 0 <= offsets[0] <= offsets[1]):  # fmt: skip
            raise error(f"malformed data_offsets {offsets!r}", path=path, tensor=name)
        start, end = offsets
        need = int(np.prod(shape, dtype=np.int64)) * itemsize(dtype)
        if end - start != need:
            raise error(f"data_offsets span {end - start} bytes but a {dtype} tensor of shape {list(shape)} needs "
                        f"{need}", path=path, tensor=name)  # fmt: skip
        if end > data_size:
            raise error(f"truncated safetensors file: the tensor's data ends at byte {end} of a data section of "
                        f"{data_size} bytes", path=path, tensor=name)  # fmt: skip
        entries[name] = TensorEntry(
            name, dtype, tuple(shape), path, _safetensors_reader(data, start, end, dtype, tuple(shape))
        )
    return TensorFile(path, "safetensors", dict(sorted(entries.items())), metadata, lambda: mapped.clear())


def _safetensors_reader(data: Callable[[], np.ndarray], start: int, end: int, dtype: str,
                        shape: tuple[int, ...]) -> Callable[[], np.ndarray]:  # fmt: skip
    def read() -> np.ndarray:
        raw = data()[start:end]
        if dtype == "bfloat16":
            return widen_bfloat16(raw.view("<u2")).reshape(shape)
        if dtype == "bool":
            return raw.view(np.bool_).reshape(shape)
        return raw.view(np.dtype(dtype).newbyteorder("<")).reshape(shape)

    return read


# -- npz -------------------------------------------------------------------------------------------------


def _check_numpy_dtype(dtype: np.dtype, path: Path, name: str, error: ErrorType) -> str:
    if dtype.kind in "fiub" and dtype.name in SUPPORTED_DTYPES:
        return dtype.name
    raise error(f"wrong dtype: {dtype.str} ({dtype.name}) is not a numeric tensor dtype "
                f"(supported: {', '.join(SUPPORTED_DTYPES)})", path=path, tensor=name)  # fmt: skip


def read_npz(path: Path, error: ErrorType = DumpError) -> TensorFile:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise error(f"not a readable npz file (truncated or not a zip archive: {exc})", path=path) from None
    entries: dict[str, TensorEntry] = {}
    try:
        damaged = archive.testzip()  # reads every member once: CRC errors surface now, not mid-check
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
        archive.close()
        raise error(f"damaged npz file ({exc})", path=path) from None
    if damaged is not None:
        archive.close()
        raise error("damaged npz file (checksum mismatch)", path=path, tensor=damaged.removesuffix(".npy"))
    for info in archive.infolist():
        if info.is_dir():
            continue
        name = info.filename.removesuffix(".npy")
        try:
            with archive.open(info) as handle:
                version = np.lib.format.read_magic(handle)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
                else:
                    shape, _, dtype = np.lib.format.read_array_header_2_0(handle)
        except (ValueError, OSError, EOFError, zlib.error, zipfile.BadZipFile) as exc:
            archive.close()
            raise error(f"not a .npy member ({' '.join(str(exc).split())})", path=path, tensor=name) from None
        logical = _check_numpy_dtype(np.dtype(dtype), path, name, error)
        entries[name] = TensorEntry(name, logical, tuple(int(d) for d in shape), path, _npz_reader(archive, info))
    return TensorFile(path, "npz", dict(sorted(entries.items())), {}, archive.close)


def _npz_reader(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> Callable[[], np.ndarray]:
    def read() -> np.ndarray:
        with archive.open(info) as handle:
            return np.lib.format.read_array(handle, allow_pickle=False)

    return read


# -- HDF5 ------------------------------------------------------------------------------------------------


def read_hdf5(path: Path, error: ErrorType = DumpError) -> TensorFile:
    import h5py

    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise error(
            f"not a readable HDF5 file (truncated or not HDF5: {' '.join(str(exc).split())})", path=path
        ) from None
    entries: dict[str, TensorEntry] = {}
    metadata = {str(k): _text(v) for k, v in handle.attrs.items() if isinstance(v, (str, bytes))}
    datasets: list[tuple[str, Any]] = []
    try:
        handle.visititems(lambda name, obj: datasets.append((name, obj)) if isinstance(obj, h5py.Dataset) else None)
        for name, dataset in datasets:
            declared = _text(dataset.attrs.get("dtype", ""))
            if declared == "bfloat16":
                if dataset.dtype != np.uint16:
                    raise error("a bfloat16 dataset must hold raw uint16 bits", path=path, tensor=name)
                logical = "bfloat16"
            else:
                logical = _check_numpy_dtype(dataset.dtype, path, name, error)
            entries[name] = TensorEntry(name, logical, tuple(int(d) for d in dataset.shape), path,
                                        _hdf5_reader(dataset, logical))  # fmt: skip
    except ConformanceError:
        handle.close()
        raise
    except (OSError, KeyError, ValueError) as exc:
        handle.close()
        raise error(f"damaged HDF5 file ({' '.join(str(exc).split())})", path=path) from None
    return TensorFile(path, "hdf5", dict(sorted(entries.items())), metadata, handle.close)


def _hdf5_reader(dataset: Any, logical: str) -> Callable[[], np.ndarray]:
    def read() -> np.ndarray:
        data = np.asarray(dataset[()])
        return widen_bfloat16(data) if logical == "bfloat16" else data

    return read


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


# -- writers ---------------------------------------------------------------------------------------------


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}.partial-{os.getpid()}")


def write_tensors(path: Path, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None,
                  fmt: str = "safetensors") -> Path:  # fmt: skip
    """Write tensors atomically as safetensors (with string metadata) or npz (metadata goes to the manifest)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {name: np.asarray(array, order="C") for name, array in tensors.items()}
    tmp = _temporary(path)
    try:
        if fmt == "safetensors":
            from safetensors.numpy import save_file

            save_file(arrays, str(tmp), metadata=metadata or None)
        elif fmt == "npz":
            # what numpy.savez writes (one .npy member per array), without its reserved keyword `file`
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
                for name, array in arrays.items():
                    with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                        np.lib.format.write_array(member, array, allow_pickle=False)
        else:
            raise ValueError(f"unknown tensor format {fmt!r}")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def suffix(fmt: str) -> str:
    return {"safetensors": ".safetensors", "npz": ".npz"}[fmt]
