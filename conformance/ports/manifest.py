"""The export manifests' schema, as a validator (numpy only; no jsonschema dependency on the checking side).

`validate_index(data)` and `validate_case(data)` return the list of problems of a parsed manifest (empty
when it is valid); `validate_export(folder)` also opens every tensor file the manifests name and checks
that each tensor listed is there with the listed shape and dtype, and that every replay bundle exists.
`conformance export` runs it on what it wrote.

Index (`DIR/manifest.json`)::

    {"schema": "conformance-export/1", "format": "safetensors" | "npz", "created_utc": str, "command": str,
     "goldens": {"path": str, "file": str, "sha256": str(64 hex), ...}, "policy": {...}, "naming": str,
     "cases": [{"case": str, "folder": str, "manifest": str, "calls": int, "bundles": int}]}

Case (`DIR/<case>/manifest.json`)::

    {"schema": "conformance-export-case/1", "case": str, "family": str, "description": str, "model": str,
     "dtype": str, "format": str, "files": {"inputs": str, "goldens": str, "outputs": str}, "naming": str,
     "layouts": str, "metrics": {name: {"direction": str, "meaning": str}}, "config": {...},
     "settings": {...} (every setting the official run used beyond the inputs, as its subject recorded it),
     "provenance": {...}, "inputs": [io], "input_values": {...}, "outputs": [io], "output_values": {...},
     "checkpoint_problems": [str],
     "calls": [{"key": str, "call": int, "module": str, "method": str, "class": str, "order": int,
                "completion": int, "seq_start": int, "seq_end": int, "structure": {...},
                "tensors": [tensor], "values": [{"role": str, "kind": str, "value": any}],
                "replay_bundle": str | null, "weights": {"mode": "none" | "embedded" | "by-reference", ...}}]}

    io     = {"name": str, "dtype": str, "shape": [int], "file": str}
    tensor = {"name": "key#call/role", "role": str, "dtype": str, "shape": [int], "layout": str | null,
              "tier": "full" | "stats" | "hash", "file": str | null, "producers": [str] (inputs only),
              "stored_as": "float32" (bfloat16 only), "summary": {...} (stats/hash tiers only),
              "tolerance": {"chained": tol, "isolated": tol}}
    tol    = {"thresholds": {metric: number}, "source": str, "xfail": str (optional),
              "mask_threshold": number (attention masks only)}
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from ..errors import ConformanceError
from .export import CASE_SCHEMA, INDEX_SCHEMA
from .formats import SUPPORTED_DTYPES, TensorFile, open_tensor_file

_NAME = re.compile(r"^.+#\d+/.+$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_LOGICAL_DTYPES = (*SUPPORTED_DTYPES,)


class _Checker:
    def __init__(self) -> None:
        self.problems: list[str] = []

    def fail(self, where: str, message: str) -> None:
        self.problems.append(f"{where}: {message}")

    def type(self, obj: Any, key: str, kind: Any, where: str, optional: bool = False) -> Any:
        if not isinstance(obj, dict):
            self.fail(where, "must be an object")
            return None
        if key not in obj:
            if not optional:
                self.fail(where, f"missing {key!r}")
            return None
        value = obj[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        ok = any((value is None) if k is None else (isinstance(value, k) and not (k is int and isinstance(value, bool)))
                 for k in kinds)  # fmt: skip
        if not ok:
            names = "/".join("null" if k is None else k.__name__ for k in kinds)
            self.fail(where, f"{key!r} must be {names}, not {type(value).__name__}")
            return None
        return value

    def shape(self, obj: dict[str, Any], where: str) -> None:
        shape = self.type(obj, "shape", list, where)
        if shape is not None and not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
            self.fail(where, f"shape {shape!r} must be a list of non-negative integers")

    def dtype(self, obj: dict[str, Any], where: str) -> None:
        dtype = self.type(obj, "dtype", str, where)
        if dtype is not None and dtype not in _LOGICAL_DTYPES:
            self.fail(where, f"dtype {dtype!r} is not one of {', '.join(_LOGICAL_DTYPES)}")

    def tolerance(self, obj: Any, where: str) -> None:
        if not isinstance(obj, dict):
            self.fail(where, "tolerance must be an object")
            return
        for mode in ("chained", "isolated"):
            tol = self.type(obj, mode, dict, where)
            if tol is None:
                continue
            thresholds = self.type(tol, "thresholds", dict, f"{where}.{mode}")
            self.type(tol, "source", str, f"{where}.{mode}")
            self.type(tol, "xfail", str, f"{where}.{mode}", optional=True)
            for name, value in (thresholds or {}).items():
                if not (isinstance(value, (int, float)) and not isinstance(value, bool)) or value < 0:
                    self.fail(f"{where}.{mode}", f"threshold {name} must be a non-negative number, not {value!r}")


def validate_index(data: Any) -> list[str]:
    c = _Checker()
    if c.type(data, "schema", str, "index") != INDEX_SCHEMA and "schema" in (data or {}):
        c.fail("index", f"schema must be {INDEX_SCHEMA!r}")
    fmt = c.type(data, "format", str, "index")
    if fmt is not None and fmt not in ("safetensors", "npz"):
        c.fail("index", f"format {fmt!r} must be safetensors or npz")
    c.type(data, "created_utc", str, "index")
    c.type(data, "command", str, "index")
    c.type(data, "naming", str, "index")
    c.type(data, "policy", dict, "index")
    goldens = c.type(data, "goldens", dict, "index")
    if goldens is not None:
        c.type(goldens, "path", str, "index.goldens")
        c.type(goldens, "file", str, "index.goldens")
        sha = c.type(goldens, "sha256", str, "index.goldens")
        if sha is not None and not _HEX64.match(sha):
            c.fail("index.goldens", "sha256 must be 64 lowercase hex digits")
    cases = c.type(data, "cases", list, "index")
    for i, entry in enumerate(cases or []):
        where = f"index.cases[{i}]"
        for key in ("case", "folder", "manifest"):
            c.type(entry, key, str, where)
        for key in ("calls", "bundles"):
            c.type(entry, key, int, where)
    return c.problems


def _validate_io(c: _Checker, records: Any, where: str) -> None:
    if not isinstance(records, list):
        c.fail(where, "must be a list")
        return
    for i, record in enumerate(records):
        w = f"{where}[{i}]"
        c.type(record, "name", str, w)
        c.type(record, "file", str, w)
        c.dtype(record, w)
        c.shape(record, w)


def validate_case(data: Any) -> list[str]:
    c = _Checker()
    if c.type(data, "schema", str, "case") not in (CASE_SCHEMA, None):
        c.fail("case", f"schema must be {CASE_SCHEMA!r}")
    for key in ("case", "family", "description", "model", "dtype", "format", "naming", "layouts"):
        c.type(data, key, str, "case")
    for key in ("config", "provenance", "metrics", "input_values", "output_values"):
        c.type(data, key, dict, "case")
    c.type(data, "settings", dict, "case", optional=True)  # exports written before settings were recorded lack it
    c.type(data, "checkpoint_problems", list, "case")
    files = c.type(data, "files", dict, "case")
    for key in ("inputs", "goldens", "outputs"):
        if files is not None:
            c.type(files, key, str, "case.files")
    _validate_io(c, (data or {}).get("inputs"), "case.inputs")
    _validate_io(c, (data or {}).get("outputs"), "case.outputs")
    calls = c.type(data, "calls", list, "case") or []
    seen: set[str] = set()
    for i, call in enumerate(calls):
        where = f"case.calls[{i}]"
        key = c.type(call, "key", str, where)
        for name in ("module", "method", "class"):
            c.type(call, name, str, where)
        for name in ("call", "order", "completion", "seq_start", "seq_end"):
            c.type(call, name, int, where)
        c.type(call, "structure", dict, where)
        c.type(call, "replay_bundle", (str, None), where)
        weights = c.type(call, "weights", dict, where)
        if weights is not None and weights.get("mode") not in ("none", "embedded", "by-reference"):
            c.fail(where, f"weights.mode {weights.get('mode')!r} must be none, embedded or by-reference")
        for j, value in enumerate(c.type(call, "values", list, where) or []):
            c.type(value, "role", str, f"{where}.values[{j}]")
            c.type(value, "kind", str, f"{where}.values[{j}]")
        for j, tensor in enumerate(c.type(call, "tensors", list, where) or []):
            w = f"{where}.tensors[{j}]"
            name = c.type(tensor, "name", str, w)
            role = c.type(tensor, "role", str, w)
            if name is not None:
                if not _NAME.match(name):
                    c.fail(w, f"name {name!r} is not key#call/role")
                elif key is not None and role is not None and name != f"{key}#{call.get('call')}/{role}":
                    c.fail(w, f"name {name!r} does not match its call and role")
                if name in seen:
                    c.fail(w, f"duplicate tensor {name!r}")
                seen.add(name)
            c.dtype(tensor, w)
            c.shape(tensor, w)
            c.type(tensor, "layout", (str, None), w)
            c.type(tensor, "file", (str, None), w)
            tier = c.type(tensor, "tier", str, w)
            if tier is not None and tier not in ("full", "stats", "hash"):
                c.fail(w, f"tier {tier!r} must be full, stats or hash")
            if role is not None and not role.startswith("outputs"):
                producers = c.type(tensor, "producers", list, w)
                if producers is not None and not all(isinstance(p, str) and _NAME.match(p) for p in producers):
                    c.fail(w, "producers must be golden tensor names")
            c.tolerance(tensor.get("tolerance") if isinstance(tensor, dict) else None, f"{w}.tolerance")
    return c.problems


def _open(path: Path, cache: dict[Path, TensorFile], problems: list[str]) -> TensorFile | None:
    if path not in cache:
        try:
            cache[path] = open_tensor_file(path, ConformanceError)
        except ConformanceError as exc:
            problems.append(str(exc))
            return None
    return cache[path]


def validate_export(folder: Path) -> list[str]:
    """Problems of an export folder: manifests against the schema, and files against the manifests."""
    folder = Path(folder)
    try:
        index = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        return [f"{folder / 'manifest.json'}: cannot read the index ({exc})"]
    problems = validate_index(index)
    if problems:
        return problems
    cache: dict[Path, TensorFile] = {}
    try:
        for entry in index["cases"]:
            path = folder / entry["manifest"]
            try:
                manifest = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                problems.append(f"{path}: cannot read ({exc})")
                continue
            found = validate_case(manifest)
            problems += [f"{path}: {p}" for p in found]
            if found:
                continue
            case_dir = path.parent
            for record in manifest["inputs"] + manifest["outputs"]:
                _check_tensor(case_dir / record["file"], record["name"], record, cache, problems)
            for call in manifest["calls"]:
                for tensor in call["tensors"]:
                    if tensor["file"] is not None:
                        _check_tensor(case_dir / tensor["file"], tensor["name"], tensor, cache, problems)
                if call["replay_bundle"] is not None:
                    bundle = _open(case_dir / call["replay_bundle"], cache, problems)
                    if bundle is not None:
                        for tensor in call["tensors"]:
                            if tensor["file"] is not None and tensor["role"] not in bundle.entries:
                                problems.append(f"{bundle.path}: missing {tensor['role']}")
                        if call["weights"]["mode"] == "embedded":
                            for name in call["weights"]["names"]:
                                if f"weights/{name}" not in bundle.entries:
                                    problems.append(f"{bundle.path}: missing weights/{name}")
    finally:
        for handle in cache.values():
            handle.close()
    return problems


def _check_tensor(path: Path, name: str, record: dict[str, Any], cache: dict[Path, TensorFile],
                  problems: list[str]) -> None:  # fmt: skip
    handle = _open(path, cache, problems)
    if handle is None:
        return
    entry = handle.entries.get(name)
    if entry is None:
        problems.append(f"{path}: missing tensor {name}")
        return
    dtype = record.get("stored_as", record["dtype"])
    if list(entry.shape) != list(record["shape"]) or entry.dtype != dtype:
        problems.append(
            f"{path}: {name} is {entry.dtype}{list(entry.shape)}, the manifest says {dtype}{record['shape']}"
        )
