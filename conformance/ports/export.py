"""`conformance export`: what a port in another language needs to check itself (numpy + h5py only).

    DIR/manifest.json                         index: format, golden file and hash, policy, cases
    DIR/<case>/manifest.json                  the case: config, inputs, every call and tensor (see manifest.py)
    DIR/<case>/inputs.safetensors             the case's inputs, by name (what the port must feed)
    DIR/<case>/goldens.safetensors            every golden tensor, named key#call/role
    DIR/<case>/outputs.safetensors            the case's final outputs (waveform, codes...)
    DIR/<case>/replay/<key>#<call>.safetensors   one module call: its inputs (args/0, kwargs/...), its weights
                                              (weights/<name relative to the module>) and expected outputs

`--format npz` writes the same names into .npz files (`np.load(...)["key#call/role"]`). bfloat16 goldens
and weights are widened to float32 exactly (numpy has no bfloat16); the manifest keeps the logical dtype.
In a key, ':' (a method: `vocoder:decode`) becomes '@' in bundle file names.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import json
import os
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import subjects
from ..compare.engine import Judge, reference_case
from ..compare.policy import THRESHOLDS, Policy
from ..compare.results import RunResult
from ..errors import ConformanceError, StoreError, UsageError
from ..store.reader import Case, GoldenStore
from ..store.schema import LeafRecord
from .formats import TensorEntry, is_float, open_tensor_file, read_safetensors, suffix, write_tensors

INDEX_SCHEMA = "conformance-export/1"
CASE_SCHEMA = "conformance-export-case/1"
BUNDLE_SCHEMA = "conformance-replay/1"
DEFAULT_WEIGHT_LIMIT = 1 << 20  # per bundle; a container module called every step would copy the whole model

NAMING = ("Golden tensors are named key#call/role: key is the official module path (a method as path:method, a "
          "module-level function as :name), call the 0-based index of that module's call in execution order, role "
          "args/i, kwargs/<name>[/...], outputs/0 for a bare tensor, outputs/i or outputs/<name> for a structure.")  # fmt: skip
LAYOUTS = ("Layout hints: NCL = (batch, channels, length) as torch Conv1d takes it; NLC / NC / ...C = channels "
           "last as torch Linear and norms take it; null = not inferred (the shape is the official module's). "
           "Hints come from the torch module classes that consumed or produced the tensor.")  # fmt: skip


def bundle_filename(key: str, call: int, fmt: str = "safetensors") -> str:
    return f"{key.replace(':', '@')}#{call}{suffix(fmt)}"


def bundle_relpath(case: str, key: str, call: int, fmt: str = "safetensors") -> Path:
    return Path(case) / "replay" / bundle_filename(key, call, fmt)


def replay_bundle_path(case: str, key: str, call: int, export_dir: Path | None = None) -> str:
    """Where `conformance export` puts (or put) the replay bundle of one module call: under `export_dir` in
    the format it was exported in, or without one a path relative to any export folder."""
    fmt = "safetensors"
    if export_dir is not None:
        with contextlib.suppress(OSError, ValueError):  # not exported yet: the default format
            fmt = json.loads((export_dir / "manifest.json").read_text()).get("format", fmt)
        return str(export_dir / bundle_relpath(case, key, call, fmt))
    return str(bundle_relpath(case, key, call, fmt))


def add_replay_bundles(run: RunResult, export_dir: Path | None = None) -> None:
    """Name, in every blame of `run` that names none, the replay bundle `conformance export` writes for the blamed
    call (whatever the candidate; a dump's blame already names it, under its map's export_dir): one module's golden
    inputs, weights and outputs, to unit-test it alone. Under `export_dir`, else $CONFORMANCE_EXPORT_DIR when set,
    else relative to any export folder."""
    folder = export_dir or (Path(os.environ["CONFORMANCE_EXPORT_DIR"]) if os.environ.get("CONFORMANCE_EXPORT_DIR")
                            else None)  # fmt: skip
    for case in run.cases:
        for blame in case.blame.values():
            if blame is not None and not blame.replay_bundle:
                blame.replay_bundle = replay_bundle_path(case.case, blame.key, blame.call, folder)


# -- layouts ------------------------------------------------------------------------------------------------

_CHANNELS_FIRST = {"Conv1d": "NCL", "ConvTranspose1d": "NCL", "BatchNorm1d": "NCL", "InstanceNorm1d": "NCL",
                   "Conv2d": "NCHW", "ConvTranspose2d": "NCHW", "BatchNorm2d": "NCHW"}  # fmt: skip
_CHANNELS_LAST = ("Linear", "LayerNorm", "RMSNorm", "GroupNorm1d")


def _channels_last(rank: int) -> str:
    return {1: "C", 2: "NC", 3: "NLC"}.get(rank, "...C")


def infer_layouts(case: Case) -> dict[tuple[str, int, str], str]:
    """Layout hints of tensor leaves: from torch classes with a known layout, spread through shared storage
    and through same-shape one-in one-out modules (activations, residual units), until nothing changes."""
    layouts: dict[tuple[str, int, str], str] = {}
    storage: dict[tuple[str, int], list[tuple[str, int, str]]] = defaultdict(list)
    calls = case.calls()
    leaves_of: dict[tuple[str, int], list[LeafRecord]] = {}
    for call in calls:
        leaves = [leaf for leaf in case.leaves(call.key, call.call) if leaf.is_tensor]
        leaves_of[(call.key, call.call)] = leaves
        for leaf in leaves:
            if leaf.location:
                storage[(leaf.location, leaf.row)].append((leaf.key, leaf.call, leaf.role))
        for leaf in leaves:
            if leaf.role not in ("args/0", "outputs/0") or not is_float(leaf.dtype):
                continue
            cls = call.class_name
            if cls in _CHANNELS_FIRST and len(leaf.shape) == len(_CHANNELS_FIRST[cls]):
                layouts[(leaf.key, leaf.call, leaf.role)] = _CHANNELS_FIRST[cls]
            elif any(cls.endswith(name) for name in _CHANNELS_LAST) and leaf.shape:
                layouts[(leaf.key, leaf.call, leaf.role)] = _channels_last(len(leaf.shape))
    by_index = {(leaf.key, leaf.call, leaf.role): leaf for leaves in leaves_of.values() for leaf in leaves}
    changed = True
    while changed:
        changed = False
        for index, layout in list(layouts.items()):
            known = by_index.get(index)
            if known is None or not known.location:
                continue
            for other in storage[(known.location, known.row)]:
                if other not in layouts:
                    layouts[other] = layout
                    changed = True
        for (key, index_of_call), leaves in leaves_of.items():
            inputs = [leaf for leaf in leaves if not leaf.role.startswith("outputs")]
            outputs = [leaf for leaf in leaves if leaf.role.startswith("outputs")]
            if len(inputs) != 1 or len(outputs) != 1 or inputs[0].shape != outputs[0].shape or len(inputs[0].shape) < 3:
                continue
            a, b = (key, index_of_call, inputs[0].role), (key, index_of_call, outputs[0].role)
            if (a in layouts) != (b in layouts):
                layouts[b if a in layouts else a] = layouts[a if a in layouts else b]
                changed = True
    return layouts


# -- weights ------------------------------------------------------------------------------------------------


@dataclass
class _Root:
    prefix: str  # module path the checkpoint's names are relative to ("" or a root's prefix, "vocoder")
    folder: Path
    entries: dict[str, TensorEntry] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)


class Checkpoints:
    """The checkpoint folders named in a case's provenance, indexed by the module path they are rooted at.
    Parameter names are `<module path relative to its root>.<param>` (the official state-dict names)."""

    def __init__(self, store: GoldenStore, case: Case, override: Path | None = None) -> None:
        self.roots: list[_Root] = []
        self.problems: list[str] = []
        top = {call.key.partition(":")[0].split(".")[0] for call in case.calls()}
        for name, recorded in case.provenance.get("checkpoint", {}).items():
            folder = Path(recorded)
            if override is not None:
                folder = override / name if (override / name).is_dir() else override
            elif not folder.is_absolute():
                folder = store.path.parent / folder
            if not folder.is_dir():
                self.problems.append(f"checkpoint {name} not found at {folder}")
                continue
            prefix = name if name in top else ""
            self._add(prefix, folder)
            for sub in sorted(folder.iterdir()):
                if sub.is_dir() and (sub / "config.json").exists():
                    self._add(f"{prefix}.{sub.name}" if prefix else sub.name, sub)
        self.roots.sort(key=lambda r: -len(r.prefix))

    def _add(self, prefix: str, folder: Path) -> None:
        index = folder / "model.safetensors.index.json"
        if index.exists():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            paths = [folder / shard for shard in shards]
        elif (folder / "model.safetensors").exists():
            paths = [folder / "model.safetensors"]
        else:
            return
        root = _Root(prefix, folder)
        for path in paths:
            root.entries.update(read_safetensors(path, StoreError).entries)
            root.files.append(str(path.resolve()))
        self.roots.append(root)

    def slice(self, key: str) -> tuple[dict[str, TensorEntry], str, list[str]]:
        """(parameters relative to the module, their full-name prefix, checkpoint files) of a module key."""
        path = key.partition(":")[0]
        path = "" if path == "(root)" else path
        for root in self.roots:
            if root.prefix and not (path == root.prefix or path.startswith(root.prefix + ".")):
                continue
            relative = (
                path[len(root.prefix) + 1 :] if root.prefix and path != root.prefix else ("" if root.prefix else path)
            )
            start = f"{relative}." if relative else ""
            found = {name[len(start) :]: entry for name, entry in root.entries.items() if name.startswith(start)}
            return found, start, root.files
        return {}, "", []


# -- tolerances ---------------------------------------------------------------------------------------------


class Tolerances:
    """The thresholds `conformance check` will apply to each tensor, per mode, resolved from the policy."""

    def __init__(self, policy: Policy, case: Case, reference: Case | None) -> None:
        self.policy = policy
        self.judges = {mode: Judge(policy, case, reference, mode) for mode in ("chained", "isolated")}

    def of(self, leaf: LeafRecord, data: np.ndarray | None) -> dict[str, Any]:
        if not is_float(leaf.dtype):
            return {mode: {"thresholds": {"exact": 0.0}, "source": "exact (discrete)"} for mode in self.judges}
        if self.policy.is_mask(leaf.role):
            return {mode: {"thresholds": {"exact": 0.0}, "mask_threshold": self.policy.mask_threshold,
                           "source": f"attention mask: positions <= {self.policy.mask_threshold:g} are masked, "
                                     "the rest compared exactly"} for mode in self.judges}  # fmt: skip
        scale = {"rel_l2": 1.0, "max_rel": 1.0, "max_ulp": 1.0, "max_abs": 0.0, "mean_abs": 0.0}
        if data is not None and data.size:
            values = np.abs(data.astype(np.float64))
            finite = values[np.isfinite(values)]
            if finite.size:
                scale["max_abs"] = float(finite.max())
                scale["mean_abs"] = float(np.sqrt(np.mean(finite**2)))
        out = {}
        for mode, judge in self.judges.items():
            try:
                noise = judge.noise(leaf)
            except ConformanceError:
                noise = None
            resolved = self.policy.resolve(leaf.key, leaf.role, leaf.dtype, mode, noise)
            entry: dict[str, Any] = {"thresholds": {k: float(v) for k, v in resolved.final(scale).items()},
                                     "source": resolved.source}  # fmt: skip
            if resolved.xfail:
                entry["xfail"] = resolved.xfail
            out[mode] = entry
        return out


# -- export ------------------------------------------------------------------------------------------------


@dataclass
class ExportOptions:
    fmt: str = "safetensors"
    cases: list[str] | None = None
    modules: list[str] | None = None  # globs over module keys: goldens and bundles of these modules only
    bundles: bool = True
    weight_limit: int = DEFAULT_WEIGHT_LIMIT  # larger weight slices are referenced, not copied, in bundles
    checkpoint: Path | None = None
    reference: GoldenStore | None = None
    command: str = ""
    on_case: Callable[[str, dict[str, Any]], None] | None = None


def _json_value(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.generic,)):
        return value.item()
    return value


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _want(key: str, modules: list[str] | None) -> bool:
    return modules is None or any(fnmatch.fnmatchcase(key, pattern) for pattern in modules)


def export(store: GoldenStore, out: Path, policy: Policy, options: ExportOptions) -> dict[str, Any]:
    """Write the export of `options.cases` (default all) into `out`; returns the index manifest."""
    if options.fmt not in ("safetensors", "npz"):
        raise UsageError(f"unknown export format {options.fmt!r} (safetensors or npz)")
    names = options.cases or list(store.cases)
    for name in names:
        if name not in store.cases:
            raise UsageError(f"no case {name!r} in the golden store (cases: {', '.join(store.cases)})", path=store.path)
    out.mkdir(parents=True, exist_ok=True)
    index: dict[str, Any] = {
        "schema": INDEX_SCHEMA,
        "format": options.fmt,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": options.command,
        "goldens": {
            "path": str(store.path.resolve()),
            "file": store.path.name,
            "sha256": _sha256(store.path),
            "created_utc": store.created_utc,
            "software": store.software,
        },
        "policy": policy.describe(),
        "naming": NAMING,
        "cases": [],
    }
    for name in names:
        case = store.case(name)
        manifest = export_case(store, case, out / name, policy, options)
        entry = {"case": name, "folder": name, "manifest": f"{name}/manifest.json",
                 "calls": len(manifest["calls"]), "bundles": sum(1 for c in manifest["calls"] if c["replay_bundle"])}  # fmt: skip
        index["cases"].append(entry)
        if options.on_case:
            options.on_case(name, entry)
    _write_json(out / "manifest.json", index)
    return index


def export_case(store: GoldenStore, case: Case, folder: Path, policy: Policy, options: ExportOptions) -> dict[str, Any]:
    fmt = options.fmt
    folder.mkdir(parents=True, exist_ok=True)
    files = {"inputs": f"inputs{suffix(fmt)}", "goldens": f"goldens{suffix(fmt)}", "outputs": f"outputs{suffix(fmt)}"}
    provenance = case.provenance
    try:
        subject = subjects.for_case(case)
    except ConformanceError:  # not installed here: the policy as it applies to every subject
        subject = None
    case_policy = policy.for_subject(subject.name if subject else None, subject.token_logits if subject else ())
    tolerances = Tolerances(case_policy, case, reference_case(options.reference, case))
    layouts = infer_layouts(case)

    def io(
        names: list[str], read: Callable[[str], Any], file: str
    ) -> tuple[dict[str, np.ndarray], list[dict[str, Any]], dict[str, Any]]:
        tensors, records, values = {}, [], {}
        for name in names:
            value = read(name)
            if isinstance(value, np.ndarray):
                tensors[name] = value
                records.append({"name": name, "dtype": value.dtype.name, "shape": list(value.shape), "file": file})
            else:
                values[name] = _json_value(value)
        return tensors, records, values

    input_tensors, inputs, input_values = io(case.input_names(), case.input, files["inputs"])
    output_tensors, outputs, output_values = io(case.output_names(), case.output, files["outputs"])
    write_tensors(folder / files["inputs"], input_tensors, {"case": case.name, "schema": CASE_SCHEMA}, fmt)
    write_tensors(folder / files["outputs"], output_tensors, {"case": case.name, "schema": CASE_SCHEMA}, fmt)

    storage: dict[tuple[str, int], list[tuple[LeafRecord, Any]]] = defaultdict(list)
    calls = case.calls()
    for call in calls:
        for leaf in case.leaves(call.key, call.call):
            if leaf.is_tensor and leaf.location and leaf.role.startswith("outputs"):
                storage[(leaf.location, leaf.row)].append((leaf, call))
    order_done = {(c.key, c.call): i for i, c in enumerate(case.calls_by_completion())}
    checkpoints = Checkpoints(store, case, options.checkpoint) if options.bundles else None
    goldens: dict[str, np.ndarray] = {}
    call_records = []
    bundle_dir = folder / "replay"
    for order, call in enumerate(calls):
        wanted = _want(call.key, options.modules)
        tensors_rec, values_rec = [], []
        bundle: dict[str, np.ndarray] = {}
        output_tolerance: dict[str, Any] = {}
        for leaf in case.leaves(call.key, call.call):
            if not leaf.is_tensor:
                values_rec.append({"role": leaf.role, "kind": leaf.kind, "value": leaf.decoded_value()})
                continue
            data = case.tensor(leaf) if leaf.tier == "full" else None
            record: dict[str, Any] = {"name": leaf.name, "role": leaf.role, "dtype": leaf.dtype,
                                      "shape": list(leaf.shape), "layout": layouts.get((leaf.key, leaf.call, leaf.role)),
                                      "tier": leaf.tier, "file": files["goldens"] if data is not None and wanted else None}  # fmt: skip
            if leaf.dtype == "bfloat16":
                record["stored_as"] = "float32"  # widened exactly: numpy has no bfloat16
            if leaf.tier != "full":
                record["summary"] = case.summary(leaf)
            if not leaf.role.startswith("outputs"):
                found = [out.name for out, producer in storage.get((leaf.location, leaf.row), [])
                         if producer.seq_end < call.seq_start]  # fmt: skip
                record["producers"] = found
            record["tolerance"] = tolerances.of(leaf, data)
            if leaf.role.startswith("outputs"):
                output_tolerance[leaf.role] = record["tolerance"]["isolated"]
            tensors_rec.append(record)
            if data is not None and wanted:
                goldens[leaf.name] = data
                bundle[leaf.role] = data
        bundle_path = None
        weights_info: dict[str, Any] = {"mode": "none"}
        if options.bundles and wanted and checkpoints is not None:
            params, prefix, ckpt_files = checkpoints.slice(call.key)
            size = sum(e.numel * 4 if e.dtype == "bfloat16" else e.nbytes for e in params.values())
            if params:
                weights_info = {"prefix": prefix, "checkpoint": ckpt_files, "names": sorted(params),
                                "dtypes": sorted({e.dtype for e in params.values()}), "bytes": size}  # fmt: skip
                if size <= options.weight_limit:
                    weights_info["mode"] = "embedded"
                    for rel, entry in params.items():
                        bundle[f"weights/{rel}"] = np.asarray(entry.read(), order="C")
                else:
                    weights_info["mode"] = "by-reference"
            relpath = bundle_relpath(case.name, call.key, call.call, fmt)
            metadata = {
                "schema": BUNDLE_SCHEMA, "case": case.name, "key": call.key, "call": str(call.call),
                "module": call.module, "method": call.method, "class": call.class_name, "golden": store.path.name,
                "structure": call.spec, "values": json.dumps(values_rec, default=str),
                "weights": json.dumps(weights_info), "tolerance": json.dumps(output_tolerance),
            }  # fmt: skip
            write_tensors(bundle_dir / relpath.name, bundle, metadata, fmt)
            bundle_path = str(Path("replay") / relpath.name)
        call_records.append({
            "key": call.key, "call": call.call, "module": call.module, "method": call.method,
            "class": call.class_name, "order": order, "completion": order_done[(call.key, call.call)],
            "seq_start": call.seq_start, "seq_end": call.seq_end, "structure": call.decoded_spec(),
            "tensors": tensors_rec, "values": values_rec, "replay_bundle": bundle_path,
            "weights": weights_info,
        })  # fmt: skip
    write_tensors(folder / files["goldens"], goldens, {"case": case.name, "schema": CASE_SCHEMA}, fmt)
    manifest = {
        "schema": CASE_SCHEMA,
        "case": case.name,
        "family": provenance.get("family", ""),
        "description": provenance.get("description", ""),
        "model": provenance.get("model", ""),
        "dtype": case.dtype,
        "format": fmt,
        "files": files,
        "naming": NAMING,
        "layouts": LAYOUTS,
        "metrics": {name: {"direction": d, "meaning": text} for name, (d, text) in THRESHOLDS.items()},
        "config": provenance.get("config", {}),
        # every setting the official run used beyond the inputs (after defaults and the checkpoint's generation
        # config), as the subject recorded it: a port reproduces the case from these and the inputs
        "settings": provenance.get("settings", {}),
        "provenance": {
            k: provenance.get(k)
            for k in (
                "official_package",
                "official_version",
                "torch_version",
                "transformers_version",
                "weights_sha256",
                "checkpoint",
                "seed",
                "dtype",
                "size",
                "attn_implementation",
                "case_params",
                "created_utc",
                "command",
            )
        },
        "inputs": inputs,
        "input_values": input_values,
        "outputs": outputs,
        "output_values": output_values,
        "checkpoint_problems": checkpoints.problems if checkpoints is not None else [],
        "calls": call_records,
    }
    _write_json(folder / "manifest.json", manifest)
    return manifest


def _clean(value: Any) -> Any:
    """Strict JSON: infinities and NaN become strings (as in summary.json)."""
    if isinstance(value, float) and not np.isfinite(value):
        return "nan" if np.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return _json_value(value)


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    tmp.write_text(json.dumps(_clean(data), indent=1, default=str, allow_nan=False) + "\n")
    os.replace(tmp, path)


def load_bundle(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(tensors, metadata) of a replay bundle, for a Python port's own tests."""
    handle = open_tensor_file(Path(path), ConformanceError)
    try:
        return {name: np.array(entry.read()) for name, entry in handle.entries.items()}, dict(handle.metadata)
    finally:
        handle.close()
