"""Streaming writer for golden stores.

The file is written under a temporary name beside the target and renamed over it only when every case
is complete, so an interrupted recording (even SIGKILL) never replaces or corrupts a previous file and
never leaves a file that reads as valid. Tensors are written as they arrive: small repeated tensors of
one module and role are stacked into one dataset per shape (buffered up to a byte budget), large ones
get a dataset of their own.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..errors import StoreError
from . import schema
from .schema import KIND_TENSOR, LeafRecord, checksum, role_name, shape_signature, to_json

_STR = h5py.string_dtype()
# Metadata tables hold integer ids into the case's `strings` table: module paths, roles, dtypes and
# locations repeat thousands of times in a generation run, and interned ids compress well.
LEAF_DTYPE = np.dtype(
    [
        ("key", np.int32),
        ("call", np.int32),
        ("role", np.int32),
        ("kind", np.int32),
        ("dtype", np.int32),
        ("shape", np.int32),
        ("location", np.int32),
        ("row", np.int64),
        ("crc32", np.int64),
        ("value", np.int32),
        ("tier", np.int32),
        ("summary", np.int32),
    ]
)
LEAF_STRINGS = ("key", "role", "kind", "dtype", "shape", "location", "value", "tier", "summary")
CALL_DTYPE = np.dtype(
    [
        ("key", np.int32),
        ("module", np.int32),
        ("method", np.int32),
        ("class_name", np.int32),
        ("call", np.int32),
        ("seq_start", np.int64),
        ("seq_end", np.int64),
        ("spec", np.int32),
    ]
)
CALL_STRINGS = ("key", "module", "method", "class_name", "spec")
ORACLE_DTYPE = np.dtype(
    [("key", np.int32), ("call", np.int32), ("role", np.int32), ("mode", np.int32), ("status", np.int32)]
    # noise is a scale for thresholds (k x noise): float32's seven digits are plenty, and half the table's bytes
    + [(name, np.float32) for name in schema.ORACLE_METRICS]
)
ORACLE_STRINGS = ("key", "role", "mode", "status")


class _Strings:
    """Interned strings of one case, written as the `strings` dataset when the case closes."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {"": 0}
        self.values: list[str] = [""]

    def __call__(self, text: str) -> int:
        index = self.ids.get(text)
        if index is None:
            index = self.ids[text] = len(self.values)
            self.values.append(text)
        return index


@dataclass
class StoragePolicy:
    """How tensors are laid out on disk.

    stack_max_bytes: tensors up to this size are stacked per (module, role, dtype, shape).
    buffer_max_bytes: stacked rows held in memory before they are flushed to their datasets.
    chunk_bytes: target chunk size for chunked (large or growing) datasets.
    compression: None, "gzip" or "lzf", applied to chunked datasets only.
    stats_above_bytes / hash_above_bytes: tensors larger than this are stored as statistics / a hash only.
    """

    stack_max_bytes: int = 256 * 1024
    buffer_max_bytes: int = 16 * 1024 * 1024
    chunk_bytes: int = 1024 * 1024
    compression: str | None = None
    compression_opts: int | None = None
    stats_above_bytes: int | None = None
    hash_above_bytes: int | None = None

    def tier_for(self, nbytes: int) -> str:
        if self.hash_above_bytes is not None and nbytes > self.hash_above_bytes:
            return "hash"
        if self.stats_above_bytes is not None and nbytes > self.stats_above_bytes:
            return "stats"
        return "full"


@dataclass
class _Stack:
    location: str
    dtype: np.dtype
    shape: tuple[int, ...]
    logical: str
    rows: list[np.ndarray] = field(default_factory=list)
    flushed: int = 0

    @property
    def count(self) -> int:
        return self.flushed + len(self.rows)

    @property
    def buffered_bytes(self) -> int:
        return sum(r.nbytes for r in self.rows)


class _Table:
    """A compound dataset of integer/float columns appended to in blocks, so large runs never hold all
    their metadata in memory; string columns are interned through `strings`."""

    def __init__(self, group: h5py.Group, name: str, dtype: np.dtype, strings: _Strings,
                 string_columns: tuple[str, ...]) -> None:  # fmt: skip
        self.group, self.name, self.dtype = group, name, dtype
        self.strings = strings
        self.string_columns = {dtype.names.index(c) for c in string_columns}  # type: ignore[union-attr]
        self.pending: list[tuple[Any, ...]] = []
        self.dataset: h5py.Dataset | None = None

    def append(self, row: tuple[Any, ...]) -> None:
        self.pending.append(tuple(self.strings(v) if i in self.string_columns else v for i, v in enumerate(row)))
        if len(self.pending) >= schema.TABLE_FLUSH_ROWS:
            self.flush()

    def flush(self) -> None:
        block = np.array(self.pending, dtype=self.dtype) if self.pending else np.zeros(0, dtype=self.dtype)
        self.pending = []
        if self.dataset is None:
            self.dataset = self.group.create_dataset(
                self.name, shape=(0,), maxshape=(None,), dtype=self.dtype,
                chunks=(schema.TABLE_FLUSH_ROWS,), compression="gzip", compression_opts=4, shuffle=True,
            )  # fmt: skip
        if len(block):
            start = self.dataset.shape[0]
            self.dataset.resize((start + len(block),))
            self.dataset[start:] = block


def summarize(array: np.ndarray) -> dict[str, Any]:
    """Statistics kept for tensors of the `stats` tier (and the hash tier's checksum)."""
    values = np.asarray(array, dtype=np.float64) if array.dtype.kind in "fc" else np.asarray(array)
    finite = values[np.isfinite(values)] if values.dtype.kind == "f" else values
    out: dict[str, Any] = {"numel": int(values.size), "crc32": checksum(array)}
    if values.dtype.kind in "fiub" and finite.size:
        flat = finite.astype(np.float64).ravel()
        out.update(
            min=float(flat.min()),
            max=float(flat.max()),
            mean=float(flat.mean()),
            std=float(flat.std()),
            l2=float(np.sqrt(np.dot(flat, flat))),
            abs_mean=float(np.abs(flat).mean()),
        )
    if values.dtype.kind == "f":
        out.update(n_nan=int(np.isnan(values).sum()), n_inf=int(np.isinf(values).sum()))
    return out


class CaseWriter:
    """Writes one case: its inputs and outputs, every module call, and the oracle's noise table."""

    def __init__(self, writer: GoldenWriter, name: str, group: h5py.Group, provenance: dict[str, Any]) -> None:
        self.writer = writer
        self.name = name
        self.group = group
        self.policy = writer.policy
        self.seq = 0
        self._call_counts: dict[str, int] = {}
        self._stacks: dict[tuple[str, str, str, tuple[int, ...]], _Stack] = {}
        # stacked tensors by content: a tensor equal to one already stored (a layer's input that is the previous
        # layer's output, the same scores seen by two modules) points at that row instead of storing it again
        self._stored: dict[tuple[str, tuple[int, ...], bytes], LeafRecord] = {}
        self._buffered = 0
        self._strings = _Strings()
        self._leaves = _Table(group, "leaves", LEAF_DTYPE, self._strings, LEAF_STRINGS)
        self._calls = _Table(group, "calls", CALL_DTYPE, self._strings, CALL_STRINGS)
        self._oracle = _Table(group, "oracle", ORACLE_DTYPE, self._strings, ORACLE_STRINGS)
        self._tensors = group.create_group("tensors")
        self._inputs = group.create_group("inputs")
        self._outputs = group.create_group("outputs")
        self._value_inputs: dict[str, Any] = {}
        self._value_outputs: dict[str, Any] = {}
        self.started = time.time()
        self.provenance = dict(provenance)
        self.n_tensors = 0
        self.n_bytes = 0
        self.closed = False

    # -- case inputs / outputs -------------------------------------------------------------------------
    def add_input(self, name: str, value: Any, logical_dtype: str | None = None) -> None:
        self._add_io(self._inputs, self._value_inputs, name, value, logical_dtype)

    def add_output(self, name: str, value: Any, logical_dtype: str | None = None) -> None:
        self._add_io(self._outputs, self._value_outputs, name, value, logical_dtype)

    def _add_io(
        self, group: h5py.Group, values: dict[str, Any], name: str, value: Any, logical_dtype: str | None
    ) -> None:
        if isinstance(value, np.ndarray):
            dataset = group.create_dataset(schema.escape_component(name), data=value)
            dataset.attrs["crc32"] = checksum(value)
            dataset.attrs["dtype"] = logical_dtype or value.dtype.name
        else:
            values[name] = value

    # -- module calls ------------------------------------------------------------------------------------
    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def next_call_index(self, key: str) -> int:
        index = self._call_counts.get(key, 0)
        self._call_counts[key] = index + 1
        return index

    def add_call(
        self,
        key: str,
        module: str,
        method: str,
        class_name: str,
        call: int,
        seq_start: int,
        seq_end: int,
        spec: dict[str, Any],
    ) -> None:
        self._calls.append((key, module, method, class_name, call, seq_start, seq_end, to_json(spec)))

    def add_value(self, key: str, call: int, role: str, kind: str, value: Any) -> None:
        """Record a non-tensor leaf (int, str, None, a cache object...) by description."""
        self._leaves.append((key, call, role, kind, "", "[]", "", -1, 0, to_json(value), "full", ""))

    def add_reference(self, key: str, call: int, role: str, target: LeafRecord) -> LeafRecord:
        """Record a tensor leaf that is the very tensor already stored as `target` (no data copied)."""
        record = LeafRecord(
            key, call, role, KIND_TENSOR, target.dtype, target.shape, target.location, target.row,
            target.crc32, "", target.tier, target.summary,
        )  # fmt: skip
        self._append_leaf(record)
        return record

    def add_tensor(
        self, key: str, call: int, role: str, array: np.ndarray, logical_dtype: str | None = None, owned: bool = False
    ) -> LeafRecord:
        """Store a tensor leaf. `array` holds raw storage (uint16 for bfloat16 with logical_dtype set);
        `owned` means the caller hands over a private copy, so small tensors are stacked without copying."""
        array = np.asarray(array)
        if not array.flags.c_contiguous:  # (np.ascontiguousarray would also turn 0-d into 1-d)
            array = np.ascontiguousarray(array)
        dtype_name = logical_dtype or array.dtype.name
        shape = tuple(int(d) for d in array.shape)
        tier = self.policy.tier_for(array.nbytes)
        if tier == "full" and array.nbytes > max(self.policy.stack_max_bytes, PARALLEL_CRC_BYTES):
            # a large tensor: its checksum is computed by a helper thread while HDF5 writes it
            pending = _crc_pool().submit(checksum, array)
            record = self._single(key, call, role, array, dtype_name, shape, pending)
            self._append_leaf(record)
            self.n_tensors += 1
            self.n_bytes += array.nbytes
            return record
        crc = checksum(array)
        if tier != "full":
            summary = summarize(array if dtype_name not in schema.RAW_STORAGE else schema.bfloat16_to_float32(array))
            summary["crc32"] = crc
            record = LeafRecord(
                key, call, role, KIND_TENSOR, dtype_name, shape, "", -1, crc, "", tier, to_json(summary)
            )
        elif array.nbytes <= self.policy.stack_max_bytes:
            content = (dtype_name, shape, hashlib.blake2b(array.tobytes(), digest_size=20).digest())
            stored = self._stored.get(content)
            if stored is not None:
                return self.add_reference(key, call, role, stored)
            record = self._stack_row(key, call, role, array if owned else array.copy(), dtype_name, shape, crc)
            self._stored[content] = record
        else:
            record = self._single(key, call, role, array, dtype_name, shape, crc)
        self._append_leaf(record)
        self.n_tensors += 1
        self.n_bytes += array.nbytes
        return record

    @property
    def buffered_bytes(self) -> int:
        """Bytes of stacked rows held in memory, not yet written to their datasets."""
        return self._buffered

    def _append_leaf(self, r: LeafRecord) -> None:
        self._leaves.append(
            (r.key, r.call, r.role, r.kind, r.dtype, to_json(list(r.shape)), r.location, r.row, r.crc32, r.value,
             r.tier, r.summary)
        )  # fmt: skip

    def _single(
        self, key: str, call: int, role: str, array: np.ndarray, dtype_name: str, shape: tuple[int, ...], crc: Any
    ) -> LeafRecord:
        location = f"tensors/{schema.escape_component(key)}/{role_name(role)}@call_{call:06d}"
        # Contiguous unless compressed: a contiguous dataset reads at disk speed (chunked ~2x slower).
        chunks = (_chunk_shape(shape, array.dtype.itemsize, self.policy.chunk_bytes)
                  if array.ndim and self.policy.compression else None)  # fmt: skip
        if chunks is None and array.nbytes >= RAW_WRITE_BYTES:
            dataset = self._write_raw(location, array)
        else:
            dataset = self._create_dataset(location, array, chunks)
        if dtype_name != array.dtype.name:
            dataset.attrs["dtype"] = dtype_name
        if not isinstance(crc, int):
            crc = crc.result()
        return LeafRecord(key, call, role, KIND_TENSOR, dtype_name, shape, location, -1, crc, "", "full", "")

    def _write_raw(self, location: str, array: np.ndarray) -> h5py.Dataset:
        """A contiguous dataset whose space HDF5 allocates at creation and whose bytes we write at its file
        offset with os.pwrite. h5py holds the GIL for the whole of an HDF5 write, so a background write of
        a 37 MB activation stalled the recording thread (the model's Python code) for as long; pwrite
        releases it. HDF5 never touches these bytes itself (no fill value, no sieve buffer)."""
        tid = h5py.h5t.py_create(array.dtype)
        space = h5py.h5s.create_simple(array.shape) if array.ndim else h5py.h5s.create(h5py.h5s.SCALAR)
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
        dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
        lcpl = h5py.h5p.create(h5py.h5p.LINK_CREATE)
        lcpl.set_create_intermediate_group(True)
        dataset_id = h5py.h5d.create(self.group.id, location.encode(), tid, space, dcpl=dcpl, lcpl=lcpl)
        offset = dataset_id.get_offset()
        data = np.ascontiguousarray(array).data.cast("B")
        fd = self.writer.raw_fd()
        written = 0
        while written < len(data):
            written += os.pwrite(fd, data[written:], offset + written)
        return h5py.Dataset(dataset_id)

    def _create_dataset(self, location: str, array: np.ndarray, chunks: Any) -> h5py.Dataset:
        return self.group.create_dataset(
            location,
            data=array,
            chunks=chunks,
            compression=self.policy.compression if chunks else None,
            compression_opts=self.policy.compression_opts if chunks else None,
        )

    def _stack_row(
        self, key: str, call: int, role: str, array: np.ndarray, dtype_name: str, shape: tuple[int, ...], crc: int
    ) -> LeafRecord:
        stack_key = (key, role, dtype_name, shape)
        stack = self._stacks.get(stack_key)
        if stack is None:
            location = f"tensors/{schema.escape_component(key)}/{role_name(role)}@{shape_signature(dtype_name, shape)}"
            stack = _Stack(location, array.dtype, shape, dtype_name)
            self._stacks[stack_key] = stack
        row = stack.count
        stack.rows.append(array)
        self._buffered += array.nbytes
        if self._buffered > self.policy.buffer_max_bytes:
            self._flush_stacks(largest_first=True)
        return LeafRecord(key, call, role, KIND_TENSOR, dtype_name, shape, stack.location, row, crc, "", "full", "")

    def _flush_stacks(self, largest_first: bool = False, final: bool = False) -> None:
        stacks = sorted(self._stacks.values(), key=lambda s: s.buffered_bytes, reverse=True)
        for stack in stacks:
            if not stack.rows:
                continue
            self._write_stack(stack, final)
            if largest_first and not final and self._buffered <= self.policy.buffer_max_bytes // 2:
                break

    def _write_stack(self, stack: _Stack, final: bool) -> None:
        block = np.stack(stack.rows)
        self._buffered -= block.nbytes
        stack.rows = []
        logical = stack.logical
        if stack.location not in self.group:
            if final:
                # The whole stack is known: an exact-size contiguous dataset wastes no chunk padding.
                dataset = self.group.create_dataset(stack.location, data=block)
            else:
                dataset = self.group.create_dataset(
                    stack.location,
                    shape=(0, *stack.shape),
                    maxshape=(None, *stack.shape),
                    dtype=stack.dtype,
                    chunks=_chunk_shape((block.shape[0], *stack.shape), stack.dtype.itemsize,
                                        self.policy.chunk_bytes, stacked=True),
                    compression=self.policy.compression,
                    compression_opts=self.policy.compression_opts,
                )  # fmt: skip
                dataset.resize((block.shape[0], *stack.shape))
                dataset[:] = block
            if logical != stack.dtype.name:
                dataset.attrs["dtype"] = logical
        else:
            dataset = self.group[stack.location]
            start = dataset.shape[0]
            dataset.resize((start + block.shape[0], *stack.shape))
            dataset[start:] = block
        stack.flushed += block.shape[0]

    # -- oracle -------------------------------------------------------------------------------------------
    def add_oracle(self, key: str, call: int, role: str, mode: str, status: str, metrics: dict[str, float]) -> None:
        values = tuple(float(metrics.get(name, np.nan)) for name in schema.ORACLE_METRICS)
        self._oracle.append((key, call, role, mode, status, *values))

    # -- closing ------------------------------------------------------------------------------------------
    def close(self) -> None:
        if self.closed:
            return
        self._flush_stacks(final=True)
        self._leaves.flush()
        self._calls.flush()
        self._oracle.flush()
        self.group.create_dataset("strings", data=np.array(self._strings.values, dtype=object), dtype=_STR)
        provenance = dict(self.provenance)
        provenance.setdefault("inputs", {})
        provenance["input_values"] = self._value_inputs
        provenance["output_values"] = self._value_outputs
        provenance["stats"] = {
            "tensors_written": self.n_tensors,
            "bytes_written": self.n_bytes,
            "seconds": round(time.time() - self.started, 3),
        }
        self.group.create_dataset("provenance", data=json.dumps(provenance, indent=1, sort_keys=True, default=str))
        for field_name in ("subject", "case", "family", "dtype", "size", "description"):
            if field_name in provenance:
                self.group.attrs[field_name] = str(provenance[field_name])
        self.group.attrs["complete"] = True
        self.closed = True


PARALLEL_CRC_BYTES = 4 * 1024 * 1024
RAW_WRITE_BYTES = 1024 * 1024  # contiguous tensors from this size on are written with os.pwrite
_POOL: Any = None


def _crc_pool() -> Any:
    """One helper thread for checksums (zlib releases the GIL, so it runs beside HDF5's write)."""
    global _POOL
    if _POOL is None:
        from concurrent.futures import ThreadPoolExecutor

        _POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="conformance-crc")
    return _POOL


def _chunk_shape(
    shape: tuple[int, ...], itemsize: int, target_bytes: int, stacked: bool = False
) -> tuple[int, ...] | None:
    """A chunk shape of about `target_bytes`, cut along the leading axes first.

    For a stack (rows along axis 0 that keep growing) the chunk holds whole rows.
    """
    if not shape or int(np.prod(shape, dtype=np.int64)) == 0:
        return None
    if stacked:
        row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * itemsize
        return (max(1, target_bytes // max(row_bytes, 1)), *shape[1:])
    chunk = list(shape)
    for axis in range(len(chunk)):
        rest = int(np.prod(chunk[axis + 1 :], dtype=np.int64)) * itemsize
        chunk[axis] = max(1, min(chunk[axis], target_bytes // max(rest, 1)))
        if rest <= target_bytes:
            break
    return tuple(chunk)


class GoldenWriter:
    """Writes a golden store atomically: `<path>.partial-<pid>` while recording, renamed when complete.

    publish=False keeps the complete file at its partial name on close; `publish()` renames it later, so a
    recording made of two files (a store and its float64 twin) can put both in place one after the other,
    only once both are complete.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        command: str,
        software: dict[str, Any],
        policy: StoragePolicy | None = None,
        publish: bool = True,
    ) -> None:
        self.path = Path(path)
        self.policy = policy or StoragePolicy()
        self.auto_publish = publish
        self.recording_id = uuid.uuid4().hex
        self.path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_partials(self.path)
        self.tmp_path = self.path.with_name(f"{self.path.name}.partial-{os.getpid()}")
        try:
            # Keep the file readable by HDF5 1.10 tools (Debian's h5ls/h5dump).
            self.file = h5py.File(self.tmp_path, "w", libver=("v110", "v110"), track_order=True)
        except OSError as exc:
            raise StoreError(f"cannot create golden store ({exc})", path=self.tmp_path) from exc
        self.file.attrs["format"] = schema.FORMAT
        self.file.attrs["schema_version"] = schema.SCHEMA_VERSION
        self.file.attrs["created_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.file.attrs["command"] = command
        self.file.attrs["software"] = to_json(software)
        self.file.attrs["complete"] = False
        self.file.attrs[schema.RECORDING_ID_ATTR] = self.recording_id
        self.cases_group = self.file.create_group("cases", track_order=True)
        self.cases: list[str] = []
        self._raw_fd: int | None = None

    def raw_fd(self) -> int:
        """A second descriptor on the partial file, for writing large tensors' bytes without HDF5."""
        if self._raw_fd is None:
            self._raw_fd = os.open(self.tmp_path, os.O_WRONLY)
        return self._raw_fd

    def _close_raw_fd(self) -> None:
        if self._raw_fd is not None:
            os.close(self._raw_fd)
            self._raw_fd = None

    @contextmanager
    def case(self, name: str, provenance: dict[str, Any]) -> Iterator[CaseWriter]:
        if name in self.cases_group:
            raise StoreError(f"case {name!r} recorded twice", path=self.path)
        group = self.cases_group.create_group(schema.escape_component(name), track_order=True)
        writer = CaseWriter(self, name, group, provenance)
        yield writer
        writer.close()
        self.cases.append(name)
        self.file.flush()

    def set_attribute(self, name: str, value: Any) -> None:
        """A root attribute (JSON-encoded unless a string), e.g. the name of the store's float64 twin."""
        self.file.attrs[name] = value if isinstance(value, str) else to_json(value)

    def close(self) -> Path:
        """Mark the file complete and move it over the target path (unless publishing was deferred)."""
        self.file.attrs["complete"] = True
        self.file.attrs["cases"] = to_json(self.cases)
        self._close_raw_fd()
        self.file.close()
        if not self.auto_publish:
            return self.tmp_path
        return self.publish()

    def publish(self) -> Path:
        """Move the complete file over the target path."""
        # No fsync: the rename makes the store atomic for interrupted or killed recordings; surviving a
        # power cut as well would cost seconds per file (re-record instead).
        os.replace(self.tmp_path, self.path)
        return self.path

    def abort(self) -> None:
        """Drop the partial file; whatever was at the target path stays as it was."""
        try:
            self._close_raw_fd()
            if self.file.id.valid:
                self.file.close()
        finally:
            self.tmp_path.unlink(missing_ok=True)

    def __enter__(self) -> GoldenWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def remove_stale_partials(path: Path) -> None:
    """Delete partial files left by recorders that were killed (their pid no longer runs)."""
    for partial in path.parent.glob(f"{path.name}.partial-*"):
        pid_text = partial.name.rsplit("-", 1)[-1]
        if not pid_text.isdigit():
            continue
        try:
            os.kill(int(pid_text), 0)
        except ProcessLookupError:
            partial.unlink(missing_ok=True)
        except PermissionError:
            pass


class TensorHandle:
    """A tensor queued for the background writer; `record` is set once it is written."""

    __slots__ = ("record",)

    def __init__(self) -> None:
        self.record: LeafRecord | None = None


class AsyncCaseWriter:
    """Runs a CaseWriter's checksumming and HDF5 writes in a background thread.

    The recording thread only copies each new tensor (it may change in place once its module returns)
    and queues it; everything that touches HDF5 happens in the writer thread, in queue order. The
    bytes held by the writer (queued copies, recycled buffers and stacked rows not yet written) stay
    below twice the largest tensor seen so far (and at least `min_bytes`), so recording adds at most two
    activations to the forward's peak memory, and a slow disk slows the recording instead of filling
    memory. An error in the writer thread is raised in the recording thread at the next call.
    """

    def __init__(self, case: CaseWriter, min_bytes: int = 16 * 1024 * 1024) -> None:
        import threading
        from collections import deque

        self.case = case
        self.min_bytes = min_bytes
        self._largest = 0
        self._queue: deque[tuple[Any, ...]] = deque()
        self._queued_bytes = 0
        self._spares: list[np.ndarray] = []  # written copies' byte buffers, ready for the next copy
        self._free_bytes = 0
        self._batch: list[tuple[Any, ...]] = []
        self._cond = threading.Condition()
        self._error: BaseException | None = None
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="conformance-writer", daemon=True)
        self._thread.start()

    # the counters are the recording thread's own: no HDF5 involved
    def next_seq(self) -> int:
        return self.case.next_seq()

    def next_call_index(self, key: str) -> int:
        return self.case.next_call_index(key)

    @property
    def provenance(self) -> dict[str, Any]:
        return self.case.provenance

    @property
    def max_bytes(self) -> int:
        return max(self.min_bytes, 2 * self._largest)

    def _put(self, item: tuple[Any, ...], nbytes: int = 0) -> None:
        with self._cond:
            self._largest = max(self._largest, nbytes)
            while (self._queued_bytes + nbytes > self.max_bytes and self._queued_bytes > 0
                   and self._error is None):  # fmt: skip
                self._cond.wait()
            if self._error is not None:
                raise self._error
            self._queue.append(item)
            self._queued_bytes += nbytes
            self._cond.notify_all()

    def add_tensor(self, key: str, call: int, role: str, array: np.ndarray, logical_dtype: str | None = None,
                   owned: bool = False) -> TensorHandle:  # fmt: skip
        handle = TensorHandle()
        if owned:
            data, buffer = array, None
        else:
            data, buffer = self._copy(np.asarray(array))
        self._push_batch()  # rows that came before this tensor stay before it
        held = buffer.nbytes if buffer is not None else data.nbytes
        self._put(("tensor", handle, key, call, role, data, logical_dtype, buffer), held)
        return handle

    def _copy(self, array: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """A private copy of `array`, and the byte buffer holding it when it is to be recycled.

        Large copies go into recycled byte buffers, whatever their shape (a decoder's tensors change shape
        at every stage): copying into fresh memory costs a page fault per page (about 0.5 GB/s here),
        into memory already touched about 12 GB/s."""
        if array.nbytes <= self.case.policy.stack_max_bytes or array.ndim == 0:
            return np.array(array, copy=True), None  # small: kept by its stack, never recycled
        nbytes = array.nbytes
        buffer = None
        with self._cond:
            self._largest = max(self._largest, nbytes)
            # The smallest spare buffer that fits, or a new one once it fits in the budget beside what the
            # writer holds (spare buffers too small give way first).
            while self._error is None:
                fitting = [spare for spare in self._spares if spare.nbytes >= nbytes]
                if fitting:
                    buffer = min(fitting, key=lambda spare: spare.nbytes)
                    self._spares = [spare for spare in self._spares if spare is not buffer]
                    self._free_bytes -= buffer.nbytes
                    break
                # (rows buffered by the stacks count too: they are the writer's memory as well)
                held = self._free_bytes + self._queued_bytes + self.case.buffered_bytes
                if held + nbytes <= self.max_bytes:
                    break
                if self._spares:
                    self._spares.clear()
                    self._free_bytes = 0
                    continue
                if self._queued_bytes == 0:
                    break
                self._cond.wait()
            if self._error is not None:
                raise self._error
        if buffer is None:
            buffer = np.empty(nbytes, np.uint8)
        copy = buffer[:nbytes].view(array.dtype).reshape(array.shape)
        np.copyto(copy, array)
        return copy, buffer

    # Metadata rows are gathered here and queued in batches: one lock round trip per row would cost
    # more than the row (a generation run has hundreds of thousands).
    def _small(self, item: tuple[Any, ...]) -> None:
        self._batch.append(item)
        if len(self._batch) >= 512:
            self._push_batch()

    def _push_batch(self) -> None:
        if self._batch:
            batch, self._batch = self._batch, []
            self._put(("batch", batch))

    def add_reference(self, key: str, call: int, role: str, target: TensorHandle | LeafRecord) -> None:
        self._small(("reference", key, call, role, target))

    def add_value(self, key: str, call: int, role: str, kind: str, value: Any) -> None:
        self._small(("value", key, call, role, kind, value))

    def add_call(self, *args: Any) -> None:
        self._small(("call", *args))

    def add_oracle(self, *args: Any) -> None:
        self._small(("oracle", *args))

    def flush(self) -> None:
        """Wait until everything queued is written."""
        self._push_batch()
        with self._cond:
            while self._queue and self._error is None:
                self._cond.wait()
            if self._error is not None:
                raise self._error

    def close(self) -> None:
        self.flush()
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join()
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if not self._queue:
                    return
                item = self._queue[0]
            try:
                nbytes = self._handle(item)
            except BaseException as exc:
                with self._cond:
                    self._error = exc
                    self._queue.clear()
                    self._cond.notify_all()
                return
            with self._cond:
                self._queue.popleft()
                self._queued_bytes -= nbytes
                self._cond.notify_all()

    def _handle(self, item: tuple[Any, ...]) -> int:
        kind = item[0]
        if kind == "batch":
            for row in item[1]:
                self._handle(row)
            return 0
        if kind == "tensor":
            _, handle, key, call, role, data, logical, buffer = item
            handle.record = self.case.add_tensor(key, call, role, data, logical, owned=buffer is None)
            if buffer is None:
                return int(data.nbytes)
            with self._cond:  # written: its buffer can take the next copy (this item still counts as queued)
                if self._free_bytes + self._queued_bytes <= self.max_bytes:
                    self._spares.append(buffer)
                    self._free_bytes += buffer.nbytes
            return int(buffer.nbytes)
        if kind == "reference":
            _, key, call, role, target = item
            record = target.record if isinstance(target, TensorHandle) else target
            if record is None:  # pragma: no cover - handles are written before anything refers to them
                raise RuntimeError(f"reference to an unwritten tensor at {key}#{call}/{role}")
            self.case.add_reference(key, call, role, record)
        elif kind == "value":
            self.case.add_value(*item[1:])
        elif kind == "call":
            self.case.add_call(*item[1:])
        elif kind == "oracle":
            self.case.add_oracle(*item[1:])
        return 0
