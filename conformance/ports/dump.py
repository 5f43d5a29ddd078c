"""A port's tensor dump as a check candidate (chained mode): `conformance check --candidate dump:PATH --map MAP`.

PATH is one tensor file (.safetensors, .npz, .h5/.hdf5) or a folder of them. A folder with entries named
after cases (`PATH/<case>/...` or `PATH/<case>.safetensors`) holds one dump per case; otherwise the whole
PATH is the dump of one case, named by the map's `case`, the files' metadata (`case` in safetensors
`__metadata__` or an HDF5 root attribute) or the file or folder name. An undeclared dump is checked
against the one case of the run (`--cases`).

Every dump tensor is routed through the map (see mapping.py) to golden tensors `key#call/role`, then
checked at open time: its shape after the rule's transforms must be the golden's and its dtype kind
(float or discrete) too, otherwise the dump is malformed (exit 2, one line). The check replays the
golden calls in execution order through the engine's sink, with the dump's tensors standing for the
candidate's, so every golden tensor the dump lacks is reported as not covered and every dump tensor that
matched nothing is listed in the case's `unmatched` list; a dump of a case none of whose tensors matches
a golden one is bad input (wrong case or missing map), not a port that covers nothing. Blame uses the
golden producers of each input (blame.py) and points at the module's replay bundle: under the export
folder named by the map's `export_dir` or the CONFORMANCE_EXPORT_DIR environment variable, else as a path
inside any export folder. The candidate's provenance is what the dump files' metadata say (safetensors
`__metadata__`, HDF5 root attributes) and the sha256 of every file the check read.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..compare.candidate import Candidate, GoldenSlice, Sink
from ..compare.engine import PRECISION_HINT
from ..compare.outputs import length_difference, sequence_axis
from ..compare.results import NOT_COVERED, CaseResult
from ..errors import DumpError, MappingError, UsageError
from ..store.reader import Case, GoldenStore
from ..store.schema import LeafRecord, split_name
from .blame import dump_blame
from .export import replay_bundle_path
from .formats import REDUCED, TENSOR_SUFFIXES, TensorEntry, TensorFile, is_float, open_tensor_file, tensor_files
from .mapping import Mapping, ShapeError, Transform, load_mapping

# Dump metadata keys that state what produced the dump, as the golden provenance fields they compare with.
STATED_FIELDS = {"official_package": "official_package", "official_version": "official_version",
                 "transformers": "transformers", "transformers_version": "transformers",
                 "torch": "torch", "torch_version": "torch"}  # fmt: skip


@dataclass
class MappedTensor:
    """A golden tensor as the dump gives it: a dump tensor (one part of it when split) and its transforms."""

    target: str
    source: str
    entry: TensorEntry
    transform: Transform
    part: int
    rule: str

    def read(self) -> np.ndarray | GoldenSlice:
        array = self.transform.apply(self.entry.read(), self.part)
        if self.transform.golden_index is not None:  # part of the golden tensor: judged against golden[slice]
            return GoldenSlice(array, self.transform.golden_index, str(self.transform.golden_slice))
        return array


@dataclass
class Plan:
    """What the dump holds for one case, resolved against its golden."""

    case: str
    where: str
    files: list[TensorFile]
    values: dict[tuple[str, int, str], MappedTensor] = field(default_factory=dict)
    outputs: dict[str, MappedTensor] = field(default_factory=dict)  # the case's final outputs, by output name
    unmatched: list[tuple[str, str]] = field(default_factory=list)  # (dump name, why)
    ignored: list[tuple[str, str, str]] = field(default_factory=list)  # (dump name, rule, reason)
    tensors: int = 0

    def close(self) -> None:
        for handle in self.files:
            handle.close()


def shape_hint(shape: tuple[int, ...], golden: tuple[int, ...]) -> str:
    """Which transform would explain a shape mismatch, if any."""
    numel, golden_numel = int(np.prod(shape, dtype=np.int64)), int(np.prod(golden, dtype=np.int64))
    if len(shape) == len(golden) and sorted(shape) == sorted(golden):
        used: set[int] = set()
        order = []
        for size in golden:
            index = next(i for i, s in enumerate(shape) if s == size and i not in used)
            used.add(index)
            order.append(index)
        return f"permute = {order} would explain it"
    if numel == golden_numel:
        return f"reshape = {list(golden)} would explain it"
    if len(shape) == len(golden):
        differ = [i for i, (a, b) in enumerate(zip(shape, golden)) if a != b]
        if len(differ) == 1 and golden[differ[0]] and shape[differ[0]] % golden[differ[0]] == 0:
            parts = shape[differ[0]] // golden[differ[0]]
            return f"split = {differ[0]} into {parts} targets would explain it"
    return f"no permute, split or reshape explains it ({numel} elements vs {golden_numel})"


class DumpCandidate(Candidate):
    name = "dump"
    default_modes = ("chained",)

    def __init__(self, path: Path, mapping: Path | None = None, export_dir: Path | None = None,
                 black_box: bool = False) -> None:  # fmt: skip
        self.path = Path(path)
        self.force_black_box = black_box
        if not self.path.exists():
            raise DumpError("no such file or folder", path=self.path)
        if self.path.is_file() and self.path.suffix.lower() not in TENSOR_SUFFIXES:
            raise DumpError(f"not a tensor file (expected one of {', '.join(TENSOR_SUFFIXES)})", path=self.path)
        if self.path.is_dir() and next(tensor_files(self.path), None) is None:
            raise DumpError(f"no tensor files ({', '.join(TENSOR_SUFFIXES)}) in this folder", path=self.path)
        self.map: Mapping = load_mapping(mapping)
        env = os.environ.get("CONFORMANCE_EXPORT_DIR")
        self.export_dir = export_dir or self.map.export_dir or (Path(env) if env else None)
        self.bound_case: str | None = None
        self.plan: Plan | None = None
        self.files_read: dict[str, dict[str, Any]] = {}  # path -> format, bytes, sha256, metadata

    @property
    def description(self) -> str:
        return f"dump {self.path}" + (f" mapped by {self.map.path}" if self.map.path else "")

    # -- finding the case's files -------------------------------------------------------------------------
    def _case_files(self, store: GoldenStore, case: Case) -> tuple[list[Path], str, bool] | None:
        """(files, where, declared) of the dump for this case; None when the dump has another case's tensors."""
        if self.path.is_dir():
            per_case = {n for n in store.cases if (self.path / n).is_dir()
                        or any((self.path / f"{n}{ext}").is_file() for ext in TENSOR_SUFFIXES)}  # fmt: skip
            if per_case:
                if case.name not in per_case:
                    return None
                folder = self.path / case.name
                if folder.is_dir():
                    files = list(tensor_files(folder))
                    if not files:
                        raise DumpError(f"no tensor files ({', '.join(TENSOR_SUFFIXES)}) in this folder", path=folder)
                    return files, str(folder), True
                return [self.path / f"{case.name}{ext}" for ext in TENSOR_SUFFIXES
                        if (self.path / f"{case.name}{ext}").is_file()], str(self.path), True  # fmt: skip
            return list(tensor_files(self.path)), str(self.path), False
        return [self.path], str(self.path), False

    def _declared_case(self, store: GoldenStore, files: list[TensorFile]) -> str | None:
        declared: dict[str, str] = {}
        if self.map.case:
            declared[self.map.case] = f"the map {self.map.path}"
        for handle in files:
            named = handle.metadata.get("case")
            if named:
                declared.setdefault(named, f"the metadata of {handle.path}")
        if len(declared) > 1:
            (a, where_a), (b, where_b) = list(declared.items())[:2]
            raise DumpError(f"the dump names two cases: {a!r} ({where_a}) and {b!r} ({where_b})", path=self.path)
        if declared:
            name, where = next(iter(declared.items()))
            if name not in store.cases:
                raise DumpError(f"{where} names case {name!r}, which the golden store does not have "
                                f"(cases: {', '.join(store.cases)})", path=self.path)  # fmt: skip
            return name
        stem = self.path.stem if self.path.is_file() else self.path.name
        return stem if stem in store.cases else None

    # -- Candidate ------------------------------------------------------------------------------------------
    def prepare(self, store: GoldenStore, case: Case) -> None:
        self.release()
        found = self._case_files(store, case)
        if found is None:
            return
        paths, where, per_case = found
        files: list[TensorFile] = []
        try:
            for path in paths:
                files.append(open_tensor_file(path))
            if not per_case:
                declared = self._declared_case(store, files)
                if declared is not None and declared != case.name:
                    for handle in files:
                        handle.close()
                    return
                if declared is None:
                    if self.bound_case is not None and self.bound_case != case.name:
                        raise UsageError(f"the dump does not say which case it holds and the check covers several "
                                         f"({self.bound_case}, {case.name}): pass --cases CASE, or set case = \"...\" "
                                         f"in the map or the dump's metadata", path=self.path)  # fmt: skip
                    self.bound_case = case.name
            self.plan = self._resolve(case, Plan(case.name, where, files))
            self._matches_something(self.plan)
            for handle in files:
                self._note_file(handle)
        except BaseException:
            for handle in files:
                handle.close()
            self.plan = None
            raise

    def _matches_something(self, plan: Plan) -> None:
        """A dump none of whose tensors reaches a golden tensor of its case is not a port that covers nothing:
        it is the wrong case, or its names need a map. Bad input, even with --allow-partial."""
        if plan.values or plan.outputs:
            return
        found = [f"{plan.tensors} tensor(s)"]
        if plan.unmatched:
            name, why = plan.unmatched[0]
            found.append(f"{len(plan.unmatched)} matched nothing (first: {name}: {why})")
        if plan.ignored:
            found.append(f"{len(plan.ignored)} ignored by the map")
        raise DumpError(f"the dump matches no golden tensor of case {plan.case}: wrong case or missing map? "
                        f"({'; '.join(found)})", path=plan.where)  # fmt: skip

    # -- black box: the case's final outputs --------------------------------------------------------------------
    def case_outputs(self, case: Case) -> dict[str, Any] | None:
        if self.plan is None or self.plan.case != case.name or not self.plan.outputs:
            return None
        return {name: mapped.read() for name, mapped in self.plan.outputs.items()}

    def black_box(self, case: Case) -> bool:
        """Black box: the dump gives the case's final outputs and no module tensor (or --black-box)."""
        if self.plan is None or self.plan.case != case.name or not self.plan.outputs:
            return False
        return self.force_black_box or not self.plan.values

    def not_applicable(self, case: Case, semantics: dict[str, str]) -> str | None:
        for name, supported in self.map.profile.items():
            value = semantics.get(name)
            if value is not None and value not in supported:
                return (f"the port profile ({self.map.path}) supports {name} = {', '.join(supported)}; "
                        f"the case's {name} is {value}")  # fmt: skip
        return None

    def _note_file(self, handle: TensorFile) -> None:
        key = str(handle.path)
        if key in self.files_read:
            return
        digest = hashlib.sha256()
        with open(handle.path, "rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
        self.files_read[key] = {"path": key, "format": handle.format, "bytes": handle.path.stat().st_size,
                                "sha256": digest.hexdigest(), "metadata": dict(handle.metadata)}  # fmt: skip

    def provenance(self) -> dict[str, Any]:
        """What the dump says it is (its files' metadata), and the hash of every file the check read."""
        stated: dict[str, str] = {}
        merged: dict[str, str] = {}
        for info in self.files_read.values():
            for name, value in info["metadata"].items():
                merged.setdefault(name, value)
                if name in STATED_FIELDS:
                    stated.setdefault(STATED_FIELDS[name], value)
        out: dict[str, Any] = {"kind": self.name, "label": self.description, "path": str(self.path),
                               "map": str(self.map.path) if self.map.path else None, "metadata": merged,
                               "files": list(self.files_read.values())}  # fmt: skip
        if stated:
            out["compared_with_golden"] = stated
        return out

    def _resolve(self, case: Case, plan: Plan) -> Plan:
        entries: dict[str, TensorEntry] = {}
        for handle in plan.files:
            for name, entry in handle.entries.items():
                if name in entries:
                    raise DumpError(f"the tensor is in both {entries[name].path} and {entry.path}", path=entry.path,
                                    tensor=name)  # fmt: skip
                entries[name] = entry
        plan.tensors = len(entries)
        leaves = {(leaf.key, leaf.call, leaf.role): leaf for leaf in case.leaves()}
        axes = self._sequence_axes(case)
        sources: dict[tuple[str, int, str], str] = {}
        for route in self.map.route_all(sorted(entries)):
            entry = entries[route.name]
            if route.kind == "ignored":
                plan.ignored.append((route.name, route.rule, route.reason))
                continue
            if route.kind == "unmatched":
                plan.unmatched.append((route.name, route.reason))
                continue
            for part, target in enumerate(route.targets):
                label = route.name if len(route.targets) == 1 else f"{route.name} (part {part} of {len(route.targets)})"
                try:
                    key, call, role = split_name(target)
                except ValueError:
                    raise MappingError(f"{route.rule} maps {route.name!r} to {target!r}, which is not a golden tensor "
                                       f"name (key#call/role)", path=self.map.path or "<map>") from None  # fmt: skip
                output = (
                    role[len("outputs/") :] if key == "case" and call == 0 and role.startswith("outputs/") else None
                )
                if output is not None and (key, call, role) not in leaves:
                    if output not in case.output_names():
                        plan.unmatched.append((label, f"mapped to {target} by {route.rule}, but case {case.name} has "
                                                      f"no output {output!r} (outputs: "
                                                      f"{', '.join(case.output_names()) or 'none'})"))  # fmt: skip
                        continue
                    if output in plan.outputs:
                        raise MappingError(f"duplicate target: output {output} is mapped from both "
                                           f"{plan.outputs[output].source} and {label} ({route.rule})",
                                           path=self.map.path or "<map>")  # fmt: skip
                    self._check_output(case, entry, route.transform, part, output, label)
                    plan.outputs[output] = MappedTensor(target, route.name, entry, route.transform, part, route.rule)
                    continue
                leaf = leaves.get((key, call, role))
                if leaf is None or not leaf.is_tensor:
                    plan.unmatched.append((label, self._absent(case, key, call, role, leaf, target, route.rule)))
                    continue
                index = (key, call, role)
                if index in sources:
                    raise MappingError(f"duplicate target: golden tensor {target} is mapped from both {sources[index]} "
                                       f"and {label} ({route.rule})", path=self.map.path or "<map>")  # fmt: skip
                sources[index] = f"{label} ({route.rule})"
                self._check(entry, route.transform, part, leaf, label, axes)
                plan.values[index] = MappedTensor(target, route.name, entry, route.transform, part, route.rule)
        return plan

    @staticmethod
    def _absent(case: Case, key: str, call: int, role: str, leaf: LeafRecord | None, target: str, rule: str) -> str:
        how = f"mapped to {target}" + (f" by {rule}" if rule != "golden name" else "")
        if leaf is not None:
            return f"{how}, which the golden holds as a {leaf.kind} value, not a tensor"
        if not any(record.key == key for record in case.calls()):
            return f"{how}, but the golden has no module {key!r}"
        if not case.has_call(key, call):
            return f"{how}, but the golden has only {len(case.call_records(key))} call(s) of {key}"
        return f"{how}, but that call has no tensor {role!r}"

    @staticmethod
    def _sequence_axes(case: Case) -> list[Any]:
        """The sequence axes the case's subject declares (none when it is not installed here)."""
        try:
            from .. import subjects

            subject = subjects.for_case(case)
        except Exception:
            return []
        return list(subject.sequence_axes(case)) if subject is not None else []

    @staticmethod
    def _check(entry: TensorEntry, transform: Transform, part: int, leaf: LeafRecord, label: str,
               axes: list[Any] | None = None) -> None:  # fmt: skip
        after = "" if transform.identity else f" after {transform.describe()}"
        try:
            shape = transform.shape_of(entry.shape, part)
        except ShapeError as exc:
            raise DumpError(f"mapped to {leaf.name}: {exc}", path=entry.path, tensor=label) from None
        try:
            golden = transform.golden_shape(tuple(leaf.shape))
        except ShapeError as exc:
            raise DumpError(f"mapped to {leaf.name}: {exc}", path=entry.path, tensor=label) from None
        seq = sequence_axis(axes or [], leaf.name)
        if seq is not None and length_difference(golden, tuple(shape), seq.axis):
            shape = golden  # another length along a sequence axis: a divergence the check judges (engine)
        if tuple(shape) != golden:
            dumped = f"{after} (dumped as {list(entry.shape)})" if after else ""
            which = f"golden {leaf.name}{transform.golden_slice or ''}"
            raise DumpError(f"shape {list(shape)}{dumped} but {which} is {list(golden)}: "
                            f"{shape_hint(tuple(shape), golden)}", path=entry.path, tensor=label)  # fmt: skip
        dtype = transform.dtype_of(entry.dtype)
        if is_float(dtype) != is_float(leaf.dtype):
            kind = "floating-point" if is_float(leaf.dtype) else "discrete"
            raise DumpError(f"wrong dtype: {dtype}{after} for golden {leaf.name}, which is {leaf.dtype} ({kind}); "
                            f"add dtype = \"{leaf.dtype}\" to the rule if the values are meant to be converted",
                            path=entry.path, tensor=label)  # fmt: skip

    @staticmethod
    def _check_output(case: Case, entry: TensorEntry, transform: Transform, part: int, output: str,
                      label: str) -> None:  # fmt: skip
        """A final output must have the golden's rank and number kind; its length along a sequence axis (another
        number of generated frames) is a divergence the check judges, not a malformed dump."""
        golden = case.output(output)
        try:
            shape = tuple(transform.shape_of(entry.shape, part))
        except ShapeError as exc:
            raise DumpError(f"mapped to output {output}: {exc}", path=entry.path, tensor=label) from None
        if not isinstance(golden, np.ndarray):  # a recorded value (a sample rate): one element
            if int(np.prod(shape, dtype=np.int64)) != 1:
                raise DumpError(f"output {output} is one value ({golden!r}) in the golden, the dump has shape "
                                f"{list(shape)}", path=entry.path, tensor=label)  # fmt: skip
            return
        if len(shape) != golden.ndim:
            raise DumpError(f"output {output}: shape {list(shape)} but the golden's is {list(golden.shape)}: "
                            f"{shape_hint(shape, tuple(golden.shape))}", path=entry.path, tensor=label)  # fmt: skip
        dtype = transform.dtype_of(entry.dtype)
        if is_float(dtype) != (golden.dtype.kind == "f"):
            raise DumpError(f"wrong dtype: {dtype} for output {output}, which is {golden.dtype.name}; add dtype = "
                            f"\"{golden.dtype.name}\" to the rule if the values are meant to be converted",
                            path=entry.path, tensor=label)  # fmt: skip

    def can_chain(self, case: Case) -> bool:
        return self.plan is not None and self.plan.case == case.name

    def run_chained(self, case: Case, sink: Sink) -> None:
        assert self.plan is not None
        values = self.plan.values
        events = sorted([(c.seq_start, 0, c) for c in case.calls()] + [(c.seq_end, 1, c) for c in case.calls()],
                        key=lambda e: (e[0], e[1]))  # fmt: skip

        def build(node: Any, key: str, call: int) -> Any:
            if isinstance(node, dict) and "leaf" in node:
                found = values.get((key, call, node["leaf"]))
                return found.read() if found is not None else None
            if isinstance(node, dict) and "tuple" in node:
                return tuple(build(x, key, call) for x in node["tuple"])
            if isinstance(node, dict) and "list" in node:
                return [build(x, key, call) for x in node["list"]]
            if isinstance(node, dict) and "dict" in node:
                return {k: build(v, key, call) for k, v in node["dict"].items()}
            return None

        for _, phase, record in events:
            spec = record.decoded_spec()
            if phase == 0:
                args = build(spec.get("args", {"tuple": []}), record.key, record.call)
                kwargs = build(spec.get("kwargs", {"dict": {}}), record.key, record.call)
                sink(record.key, "call", tuple(args or ()), dict(kwargs or {}), None)
            else:
                outputs = build(spec["outputs"], record.key, record.call) if "outputs" in spec else None
                sink(record.key, "return", (), {}, outputs)

    def review(self, case: Case, result: CaseResult, mode: str) -> None:
        plan = self.plan
        if mode == "outputs" and plan is not None and plan.case == case.name and self.black_box(case):
            result.unmatched = [{"name": name, "reason": why} for name, why in plan.unmatched]
            ignored = f", {len(plan.values)} module tensor(s) left unjudged (--black-box)" if plan.values else ""
            result.notes.append(f"dump {plan.where}: {plan.tensors} tensor(s); the case outputs "
                                f"{', '.join(plan.outputs)} mapped{ignored}, {len(plan.unmatched)} matched nothing")  # fmt: skip
            return
        if mode != "chained" or plan is None or plan.case != case.name:
            return
        notes = [f"dump {plan.where}: {len(plan.files)} file(s), {plan.tensors} tensor(s); {len(plan.values)} golden "
                 f"tensor(s) and {len(plan.outputs)} case output(s) mapped, {len(plan.ignored)} ignored, "
                 f"{len(plan.unmatched)} matched nothing"
                 + (" (listed as unmatched)" if plan.unmatched else "")]  # fmt: skip
        result.unmatched = [{"name": name, "reason": why} for name, why in plan.unmatched]
        by_rule: dict[tuple[str, str], list[str]] = {}
        for name, rule, reason in plan.ignored:
            by_rule.setdefault((rule, reason), []).append(name)
        for (rule, reason), names in by_rule.items():
            notes.append(f"ignored {len(names)} dump tensor(s) by {rule} ({reason}): {', '.join(names)}")
        chained = [t for t in result.tensors if t.mode == "chained"]
        lacking_out = [t for t in chained if t.status == NOT_COVERED and not t.is_input]
        lacking_in = [t for t in chained if t.status == NOT_COVERED and t.is_input]
        if lacking_out or lacking_in:
            notes.append(f"the dump lacks {len(lacking_out)} golden output tensor(s) and {len(lacking_in)} input "
                         "tensor(s), listed as not covered (inputs are optional: blame checks them through the "
                         "outputs that produced them)")  # fmt: skip
        blame = dump_blame(case, result, mode)
        if blame is not None:
            blame.replay_bundle = self.replay_bundle(case.name, blame.key, blame.call)
            if self.export_dir is None:
                notes.append(f"replay bundle of the blamed module: {blame.replay_bundle}, in the folder "
                             f"`conformance export --cases {case.name} -o DIR` writes (set export_dir in the map to "
                             "print its full path)")  # fmt: skip
        result.blame[mode] = blame
        notes.extend(self._precision_notes(plan, chained))
        result.notes.extend(notes)

    @staticmethod
    def _precision_notes(plan: Plan, chained: list[Any]) -> list[str]:
        """The precision a dump's floating-point tensors were written in, inferred from their dtypes: when narrower
        than the golden's and the check judged them against float32 noise, a note says how to judge them at their
        own precision (never a silent relaxation: the precision judged at is asked for, docs/precision.md)."""
        dtypes = Counter(mapped.entry.dtype for mapped in plan.values.values() if mapped.entry.dtype in REDUCED)
        if not dtypes:
            return []
        dtype, count = dtypes.most_common(1)[0]
        floats = sum(1 for mapped in plan.values.values() if is_float(mapped.entry.dtype))
        judged = {t.precision for t in chained if t.precision}
        if judged:
            return [f"the dump holds {dtype} tensors ({count} of {floats} floating-point tensors): judged at "
                    f"{', '.join(sorted(judged))}"]  # fmt: skip
        return [f"{PRECISION_HINT}: the dump holds {dtype} tensors ({count} of {floats} floating-point tensors), judged against the "
                f"golden's float32 noise; a port that runs at {dtype} is judged on the official model's own {dtype} "
                f"error with --precision {dtype} (docs/precision.md)"]  # fmt: skip

    def replay_bundle(self, case: str, key: str, call: int) -> str:
        """Where `conformance export` puts (or put) the replay bundle of one module call."""
        return replay_bundle_path(case, key, call, self.export_dir)

    def release(self) -> None:
        if self.plan is not None:
            self.plan.close()
        self.plan = None
