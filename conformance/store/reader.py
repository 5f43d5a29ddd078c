"""Lazy reader for golden stores (numpy + h5py only).

Opening a store reads only its root attributes; a case's tables are read the first time the case is
used, and tensor data only when asked for. Every tensor read is checked against the CRC-32 recorded
when it was written; a mismatch raises `IntegrityError` naming the file and the tensor.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..errors import IntegrityError, StoreError
from . import schema
from .schema import KIND_TENSOR, CallRecord, LeafRecord, OracleRecord, checksum


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


class ObjectValue:
    """A non-tensor leaf that was recorded by description only (a cache object, a device...)."""

    def __init__(self, kind: str, description: Any) -> None:
        self.kind = kind
        self.description = description

    def __repr__(self) -> str:
        return f"ObjectValue({self.kind}, {self.description!r})"


# Stacked datasets (repeated small calls of one module) are read whole and kept, up to this many bytes:
# a generation case reads hundreds of thousands of rows, and each h5py read costs ~0.3 ms by itself. A
# check visits every module once per frame, a cycle through all stacks, so a cache smaller than the
# stacks of a case misses on every new stack (LRU on a cycle): a 50-frame 0.6B generation has 1.5 GB of
# stacks. CONFORMANCE_STACK_CACHE_MB sets it.
STACK_CACHE_BYTES = int(os.environ.get("CONFORMANCE_STACK_CACHE_MB", "2048")) << 20


class Case:
    """One recorded case of a golden store."""

    def __init__(self, store: GoldenStore, name: str, group: h5py.Group) -> None:
        self.store = store
        self.name = name
        self.group = group
        self._stacks: OrderedDict[str, np.ndarray] = OrderedDict()  # least recently used first
        self._verified: dict[str, np.ndarray] = {}  # rows of cached stacks whose checksum was checked
        self._stack_bytes = 0

    # -- metadata ---------------------------------------------------------------------------------------
    @cached_property
    def provenance(self) -> dict[str, Any]:
        if "provenance" not in self.group:
            return {}
        return json.loads(_text(self.group["provenance"][()]))

    @property
    def dtype(self) -> str:
        return str(self.provenance.get("dtype", ""))

    @cached_property
    def _strings(self) -> list[str]:
        if "strings" not in self.group:
            raise StoreError(f"case {self.name!r} has no strings table", path=self.store.path)
        try:
            return [_text(s) for s in self.group["strings"][()]]
        except OSError as exc:
            raise StoreError(
                f"cannot read the strings table of case {self.name!r} ({exc})", path=self.store.path
            ) from exc

    def _columns(self, name: str, string_columns: tuple[str, ...]) -> list[dict[str, Any]]:
        rows = self._table(name)
        strings = self._strings
        if not len(rows):
            return []
        columns: dict[str, list[Any]] = {}
        try:
            for column in rows.dtype.names or ():
                values = rows[column].tolist()
                columns[column] = [strings[i] for i in values] if column in string_columns else values
        except IndexError:
            raise StoreError(
                f"the {name} table of case {self.name!r} refers to unknown strings", path=self.store.path
            ) from None
        return [dict(zip(columns, values)) for values in zip(*columns.values())]

    @cached_property
    def _calls(self) -> list[CallRecord]:
        calls = [
            CallRecord(r["key"], r["module"], r["method"], r["class_name"], r["call"], r["seq_start"], r["seq_end"],
                       r["spec"])
            for r in self._columns("calls", ("key", "module", "method", "class_name", "spec"))
        ]  # fmt: skip
        calls.sort(key=lambda c: c.seq_start)
        return calls

    @cached_property
    def _leaves(self) -> dict[tuple[str, int], list[LeafRecord]]:
        out: dict[tuple[str, int], list[LeafRecord]] = {}
        shapes: dict[str, tuple[int, ...]] = {}
        names = ("key", "role", "kind", "dtype", "shape", "location", "value", "tier", "summary")
        for r in self._columns("leaves", names):
            shape = shapes.get(r["shape"])
            if shape is None:
                shape = shapes[r["shape"]] = tuple(json.loads(r["shape"]))
            leaf = LeafRecord(r["key"], r["call"], r["role"], r["kind"], r["dtype"], shape, r["location"], r["row"],
                              r["crc32"], r["value"], r["tier"], r["summary"])  # fmt: skip
            out.setdefault((leaf.key, leaf.call), []).append(leaf)
        return out

    @cached_property
    def _leaf_index(self) -> dict[tuple[str, int, str], LeafRecord]:
        return {(leaf.key, leaf.call, leaf.role): leaf for leaves in self._leaves.values() for leaf in leaves}

    @cached_property
    def _oracle(self) -> dict[tuple[str, int, str, str], OracleRecord]:
        out = {}
        for r in self._columns("oracle", ("key", "role", "mode", "status")):
            metrics = {name: float(r[name]) for name in schema.ORACLE_METRICS}
            record = OracleRecord(r["key"], r["call"], r["role"], r["mode"], r["status"], metrics)
            out[(record.key, record.call, record.role, record.mode)] = record
        return out

    def _table(self, name: str) -> np.ndarray:
        if name not in self.group:
            raise StoreError(f"case {self.name!r} has no {name} table", path=self.store.path)
        try:
            return self.group[name][()]
        except OSError as exc:
            raise StoreError(
                f"cannot read the {name} table of case {self.name!r} ({exc})", path=self.store.path
            ) from exc

    def calls(self) -> list[CallRecord]:
        """Every recorded call, in execution order (by the time it started)."""
        return list(self._calls)

    def calls_by_completion(self) -> list[CallRecord]:
        """Every recorded call in the order calls returned: children before the modules that contain them."""
        return sorted(self._calls, key=lambda c: c.seq_end)

    def keys(self) -> list[str]:
        """Module keys in the order of their first call."""
        seen: dict[str, None] = {}
        for call in self._calls:
            seen.setdefault(call.key, None)
        return list(seen)

    def call_records(self, key: str) -> list[CallRecord]:
        return [c for c in self._calls if c.key == key]

    @cached_property
    def _call_index(self) -> dict[tuple[str, int], CallRecord]:
        return {(c.key, c.call): c for c in self._calls}

    def get_call(self, key: str, call: int) -> CallRecord:
        record = self._call_index.get((key, call))
        if record is None:
            raise StoreError(f"no call {key}#{call} in case {self.name!r}", path=self.store.path)
        return record

    def has_call(self, key: str, call: int) -> bool:
        return (key, call) in self._call_index

    def leaves(self, key: str | None = None, call: int | None = None) -> list[LeafRecord]:
        if key is not None and call is not None:
            return list(self._leaves.get((key, call), []))
        return [leaf for (k, c), leaves in self._leaves.items() for leaf in leaves
                if (key is None or k == key) and (call is None or c == call)]  # fmt: skip

    def leaf(self, key: str, call: int, role: str) -> LeafRecord:
        try:
            return self._leaf_index[(key, call, role)]
        except KeyError:
            raise StoreError(
                f"no tensor {key}#{call}/{role} in case {self.name!r}",
                path=self.store.path,
                tensor=f"{key}#{call}/{role}",
            ) from None

    def oracle(self, key: str, call: int, role: str, mode: str = "isolated") -> OracleRecord | None:
        return self._oracle.get((key, call, role, mode))

    def oracle_records(self) -> list[OracleRecord]:
        return list(self._oracle.values())

    # -- data -------------------------------------------------------------------------------------------
    def tensor(self, key: str | LeafRecord, call: int | None = None, role: str | None = None,
               *, verify: bool = True, raw: bool = False) -> np.ndarray:  # fmt: skip
        """Read one tensor leaf. bfloat16 is widened to float32 exactly unless `raw`."""
        leaf = key if isinstance(key, LeafRecord) else self.leaf(key, int(call or 0), str(role))
        if leaf.kind != KIND_TENSOR:
            raise StoreError(f"{leaf.name} is a {leaf.kind}, not a tensor", path=self.store.path, tensor=leaf.name)
        if leaf.tier != "full":
            raise StoreError(
                f"{leaf.name} was stored in the {leaf.tier} tier: only its summary is available",
                path=self.store.path, tensor=leaf.name,
            )  # fmt: skip
        data = self._read(leaf.location, leaf.row, leaf.name)
        if verify and not self._verified_row(leaf):
            if checksum(data) != leaf.crc32:
                raise IntegrityError(
                    "checksum mismatch: the stored bytes differ from what was recorded (file corrupted?)",
                    path=self.store.path, tensor=f"{self.name}:{leaf.name}",
                )  # fmt: skip
            self._mark_verified(leaf)
        if leaf.dtype in schema.RAW_STORAGE and not raw:
            return schema.bfloat16_to_float32(data)
        return data

    def summary(self, leaf: LeafRecord) -> dict[str, Any]:
        """Statistics or hash of a tensor kept in the stats/hash tier."""
        return json.loads(leaf.summary) if leaf.summary else {}

    def iter_tensor_chunks(self, leaf: LeafRecord, max_elements: int = 1 << 22, *, verify: bool = True,
                           ring: int | None = None) -> Iterator[np.ndarray]:  # fmt: skip
        """Stream a large tensor as flat chunks in C order, verifying its checksum at the end.

        With `ring`, chunks are read into a ring of that many preallocated buffers (fresh allocations of
        this size cost more than the read): a chunk then stays valid only until `ring - 1` further
        chunks have been taken. Without it every chunk is a new array.
        """
        dataset = self._dataset(leaf.location, leaf.name)
        if leaf.row >= 0 or dataset.ndim == 0 or leaf.dtype in schema.RAW_STORAGE:
            whole = self.tensor(leaf, verify=verify)
            for start in range(0, max(whole.size, 1), max_elements):
                yield whole.reshape(-1)[start : start + max_elements]
            return
        row_elements = int(np.prod(dataset.shape[1:], dtype=np.int64))
        rows_per_read = max(1, max_elements // max(1, row_elements))
        buffers = [np.empty((rows_per_read, *dataset.shape[1:]), dtype=dataset.dtype) for _ in range(ring or 0)]
        crc = 0
        for index, start in enumerate(range(0, dataset.shape[0], rows_per_read)):
            stop = min(start + rows_per_read, dataset.shape[0])
            if ring:
                block = buffers[index % ring][: stop - start]
            else:
                block = np.empty((stop - start, *dataset.shape[1:]), dtype=dataset.dtype)
            try:
                dataset.read_direct(block, np.s_[start:stop])
            except (OSError, ValueError) as exc:
                raise StoreError(f"cannot read data ({exc})", path=self.store.path,
                                 tensor=f"{self.name}:{leaf.name}") from exc  # fmt: skip
            if verify:
                crc = checksum(block, crc)
            yield block.reshape(-1)
        if verify and crc != leaf.crc32:
            raise IntegrityError("checksum mismatch: the stored bytes differ from what was recorded (file corrupted?)",
                                 path=self.store.path, tensor=f"{self.name}:{leaf.name}")  # fmt: skip

    @staticmethod
    def _logical(data: np.ndarray, leaf: LeafRecord) -> np.ndarray:
        return schema.bfloat16_to_float32(data) if leaf.dtype in schema.RAW_STORAGE else data

    def _dataset(self, location: str, name: str) -> h5py.Dataset:
        # (handles are not kept: each open chunked dataset holds its own HDF5 chunk cache, 1 MB by default,
        # which for the thousands of stacks of a generation case came to 1.6 GB)
        try:
            return self.group[location]
        except (KeyError, OSError) as exc:
            raise StoreError(f"dataset {location} is missing or unreadable ({exc})", path=self.store.path,
                             tensor=f"{self.name}:{name}") from exc  # fmt: skip

    def _read_slice(self, dataset: h5py.Dataset, index: Any, name: str) -> np.ndarray:
        try:
            return np.asarray(dataset[index])
        except (OSError, ValueError) as exc:
            raise StoreError(f"cannot read data ({exc})", path=self.store.path, tensor=f"{self.name}:{name}") from exc

    def _read(self, location: str, row: int, name: str) -> np.ndarray:
        if row >= 0:
            stack = self._stack(location, name)
            if stack is not None:
                return np.array(stack[row], copy=True)  # a private copy (0-d for scalars): callers may write to it
        dataset = self._dataset(location, name)
        return self._read_slice(dataset, row if row >= 0 else (), name)

    def _stack(self, location: str, name: str) -> np.ndarray | None:
        """A whole stacked dataset from the cache (read on first use), or None when it is too large."""
        stack = self._stacks.get(location)
        if stack is not None:
            self._stacks.move_to_end(location)
            return stack
        dataset = self._dataset(location, name)
        nbytes = dataset.size * dataset.dtype.itemsize
        if nbytes > STACK_CACHE_BYTES // 8:
            return None
        stack = self._read_slice(dataset, (), name)
        self._stacks[location] = stack
        self._stack_bytes += nbytes
        while self._stack_bytes > STACK_CACHE_BYTES:
            dropped_location, dropped = self._stacks.popitem(last=False)
            self._verified.pop(dropped_location, None)
            self._stack_bytes -= dropped.nbytes
        return stack

    # A cached stack does not change in memory: each of its rows needs its checksum checked once, not at
    # every read (a generation case reads its position ids and small states hundreds of thousands of times).
    def _verified_row(self, leaf: LeafRecord) -> bool:
        flags = self._verified.get(leaf.location)
        return flags is not None and leaf.row >= 0 and bool(flags[leaf.row])

    def _mark_verified(self, leaf: LeafRecord) -> None:
        stack = self._stacks.get(leaf.location)
        if leaf.row < 0 or stack is None:
            return
        flags = self._verified.get(leaf.location)
        if flags is None:
            flags = self._verified[leaf.location] = np.zeros(len(stack), dtype=bool)
        flags[leaf.row] = True

    def value(self, leaf: LeafRecord) -> Any:
        """The Python value of a leaf: an array for tensors, the decoded value otherwise."""
        if leaf.kind == KIND_TENSOR:
            return self.tensor(leaf)
        decoded = leaf.decoded_value()
        if leaf.kind in ("none", "bool", "int", "str", "json"):
            return decoded
        if leaf.kind == "float":
            return float(decoded)
        return ObjectValue(leaf.kind, decoded)

    def call_inputs(self, key: str, call: int) -> tuple[list[Any], dict[str, Any]]:
        """Rebuild (args, kwargs) of one call without reading its outputs."""
        args, kwargs, _ = self.call_io(key, call, outputs=False)
        return args, kwargs

    def call_io(self, key: str, call: int, outputs: bool = True) -> tuple[list[Any], dict[str, Any], Any]:
        """Rebuild (args, kwargs, outputs) of one call with the structure the official code used."""
        record = self.get_call(key, call)
        spec = record.decoded_spec()
        values = {leaf.role: leaf for leaf in self.leaves(key, call)}

        def build(node: Any) -> Any:
            if isinstance(node, dict) and "leaf" in node and "from" in node:  # recorded by an earlier call
                other_key, other_call = node["from"]
                return self.value(self.leaf(other_key, int(other_call), node["leaf"]))
            if isinstance(node, dict) and "leaf" in node:
                leaf = values.get(node["leaf"])
                if leaf is None:
                    raise StoreError(f"leaf {node['leaf']} of {key}#{call} is missing", path=self.store.path)
                return self.value(leaf)
            if isinstance(node, dict) and "tuple" in node:
                return tuple(build(x) for x in node["tuple"])
            if isinstance(node, dict) and "list" in node:
                return [build(x) for x in node["list"]]
            if isinstance(node, dict) and "dict" in node:
                return {k: build(v) for k, v in node["dict"].items()}
            raise StoreError(f"malformed structure of {key}#{call}: {node!r}", path=self.store.path)

        args = build(spec.get("args", {"tuple": []}))
        kwargs = build(spec.get("kwargs", {"dict": {}}))
        result = build(spec["outputs"]) if outputs and "outputs" in spec else None
        return list(args), dict(kwargs), result

    def tensor_leaves(self, roots: tuple[str, ...] = ("outputs",), order: str = "completion") -> Iterator[LeafRecord]:
        """Tensor leaves of every call, in execution order (completion order by default)."""
        calls = self.calls_by_completion() if order == "completion" else self.calls()
        for call in calls:
            for leaf in self._leaves.get((call.key, call.call), []):
                if leaf.kind == KIND_TENSOR and leaf.role.split("/", 1)[0] in roots:
                    yield leaf

    def input_names(self) -> list[str]:
        names = [schema.unescape_component(n) for n in self.group["inputs"]] if "inputs" in self.group else []
        return names + list(self.provenance.get("input_values", {}))

    def input(self, name: str) -> Any:
        return self._io("inputs", "input_values", name)

    def output_names(self) -> list[str]:
        names = [schema.unescape_component(n) for n in self.group["outputs"]] if "outputs" in self.group else []
        return names + list(self.provenance.get("output_values", {}))

    def output(self, name: str) -> Any:
        return self._io("outputs", "output_values", name)

    def _io(self, group_name: str, values_key: str, name: str) -> Any:
        escaped = schema.escape_component(name)
        group = self.group.get(group_name, {})
        if escaped in group:
            dataset = group[escaped]
            data = np.asarray(dataset[()])
            if int(dataset.attrs.get("crc32", checksum(data))) != checksum(data):
                raise IntegrityError(
                    "checksum mismatch", path=self.store.path, tensor=f"{self.name}:{group_name}/{name}"
                )
            if _text(dataset.attrs.get("dtype", "")) in schema.RAW_STORAGE:
                return schema.bfloat16_to_float32(data)
            return data
        values = self.provenance.get(values_key, {})
        if name in values:
            return values[name]
        raise StoreError(f"case {self.name!r} has no {group_name[:-1]} {name!r}", path=self.store.path)


class GoldenStore:
    """A golden store opened for reading. Use as a context manager or call `close()`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise StoreError("no such file", path=self.path)
        try:
            self.file = h5py.File(self.path, "r")
        except OSError as exc:
            reason = " ".join(str(exc).split())
            raise StoreError(f"not a readable HDF5 file (truncated or not HDF5: {reason})", path=self.path) from None
        try:
            attrs = self.file.attrs
            fmt = _text(attrs.get("format", ""))
            if fmt != schema.FORMAT:
                raise StoreError(f"not a golden store (format attribute is {fmt!r})", path=self.path)
            version = int(attrs.get("schema_version", -1))
            if version != schema.SCHEMA_VERSION:
                raise StoreError(f"schema version {version} is not supported (this tool reads "
                                 f"version {schema.SCHEMA_VERSION}); re-record the golden", path=self.path)  # fmt: skip
            if not bool(attrs.get("complete", False)):
                raise StoreError("incomplete golden store: its recording was interrupted", path=self.path)
            self.created_utc = _text(attrs.get("created_utc", ""))
            self.command = _text(attrs.get("command", ""))
            self.software: dict[str, Any] = json.loads(_text(attrs.get("software", "{}")))
            self.recording_id = _text(attrs.get(schema.RECORDING_ID_ATTR, ""))
            twin = _text(attrs.get(schema.REFERENCE64_ATTR, ""))
            # {"path": file name relative to this store's folder, "recording_id": the twin's own id}
            self.float64_reference: dict[str, Any] | None = json.loads(twin) if twin else None
            self.cases = [schema.unescape_component(n) for n in self.file["cases"]]
        except StoreError:
            self.file.close()
            raise
        except (OSError, KeyError, ValueError) as exc:
            self.file.close()
            raise StoreError(f"damaged golden store ({exc})", path=self.path) from None
        self._case_cache: dict[str, Case] = {}

    def case(self, name: str) -> Case:
        if name not in self._case_cache:
            if name not in self.cases:
                raise StoreError(f"no case {name!r} (cases: {', '.join(self.cases)})", path=self.path)
            self._case_cache[name] = Case(self, name, self.file["cases"][schema.escape_component(name)])
        return self._case_cache[name]

    def __iter__(self) -> Iterator[Case]:
        return (self.case(name) for name in self.cases)

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> GoldenStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def open_store(path: str | Path) -> GoldenStore:
    return GoldenStore(path)
