"""The recording session: a subject's official model, hooked, runs each case and every call streams into a
golden store (generic: the subject supplies only its half, a `Recording`).

For every case the session seeds torch, hooks the roots the subject names (with the methods and module-level
functions it wraps), runs the case through the subject's runner and writes every call, the case's inputs and
outputs and its provenance (generic fields, then the subject's own). Around that:

* the isolated float64 oracle (on by default for float32 and bfloat16): each hooked call is re-run on a float64
  twin of the model with the same inputs, upcast, to measure the call's own rounding noise (capture/oracle.py);
* the determinism check: the case runs a second time under a checksumming tap, and the provenance says whether
  the official model computed every recorded tensor bit for bit again;
* the float64 twin: a float32 or bfloat16 store gets the same cases recorded in clean float64 beside it
  (`reference64_path(out)`), the reference that calibrates chained thresholds. The store names its twin, and
  both files are put in place only once both are complete;
* precision twins (`twins`: bfloat16, float16, quantized weights; conformance/precisions.py): the oracle re-runs
  every hooked call on each twin too, and each case runs once more on each twin, compared tensor by tensor with
  the float64 twin recording: the store keeps each twin's noise records, isolated and chained
  (capture/twins.py).

Cases of several subjects can go into one store (`parts`: one Recording and its cases per subject).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from .. import __version__
from ..errors import UsageError
from ..precisions import Precision
from ..store.reader import GoldenStore
from ..store.schema import REFERENCE64_ATTR, checksum
from ..store.writer import AsyncCaseWriter, GoldenWriter, StoragePolicy, remove_stale_partials
from .io import CaseIO
from .oracle import IsolatedOracle, OracleTwin
from .recorder import ChecksumTap, FunctionSpec, MethodSpec, Recorder, versioned_tensors
from .twins import ChainedNoiseTap, apply_weight_format

DTYPES = ("float32", "float64", "bfloat16")
TORCH_DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16,
                "float16": torch.float16}  # fmt: skip


class Recording(Protocol):
    """A subject's half of a recording session, for one set of recording options (built by
    `Subject.recording(...)`). Cases are the subject's own objects: the session reads their `name`, `family`,
    `description`, `model` and `params`, and hands them back to the recording's methods."""

    subject: str  # the subject's name, recorded in every case's provenance
    official: Any  # conformance.subjects.OfficialPackage: the package recorded (provenance, software)
    size: str  # the size label recorded in the provenance ("tiny", "full", "checkpoint"...)
    seed: int  # torch's seed before each case runs
    label: str  # where the models come from, for messages (a checkpoint folder)

    def prepare(self, cases: Sequence[Any]) -> None:
        """Find or build what these cases need (checkpoints) before anything is recorded."""

    def runnable(self, case: Any) -> str | None:
        """Why `case` cannot be recorded from these models (skipped with that message), or None."""

    def load(self, dtype: str) -> Any:
        """The official models in `dtype` (loaded lazily when the session asks for a case's roots)."""

    def roots(self, models: Any, case: Any) -> dict[str, torch.nn.Module]:
        """{golden path prefix: module} to hook for `case` ("" keeps the module's own paths)."""

    def excluded(self, case: Any) -> list[str]:
        """Module keys below the roots left unhooked for `case` (globs)."""

    def methods(self, roots: dict[str, torch.nn.Module]) -> list[MethodSpec]:
        """Methods other than `forward` that compute a component, below these roots."""

    def functions(self) -> list[FunctionSpec]:
        """Module-level functions to record (`:name`)."""

    def oracle_functions(self) -> dict[str, Callable[..., Any]]:
        """The float64 oracle's versions of those functions, by key (`:name`), when they differ."""

    def precision(self, dtype: str) -> contextlib.AbstractContextManager[Any]:
        """A context in which the models compute in `dtype` for real (float64: wherever the official code forces
        float32, the subject swaps in a version computing in float64)."""

    def run(self, models: Any, case: Any, io: CaseIO) -> None:
        """Run `case` on `models` through the official API, declaring its inputs and outputs on `io`."""

    def provenance(self, models: Any, case: Any, roots: dict[str, torch.nn.Module], out: Path) -> dict[str, Any]:
        """The subject's own provenance fields of a recorded case (checkpoint folders relative to `out`'s
        directory, weight hashes, configs, the implementation choices the models were loaded with...)."""

    def software(self) -> dict[str, Any]:
        """The subject's entries of the store's `software` attribute: the official package's version, the
        libraries its models run on beyond torch (transformers...)."""


Part = tuple[Recording, Sequence[Any]]


def reference64_path(out: str | Path) -> Path:
    """Where a recording's float64 twin goes: `golden.h5` -> `golden.float64.h5`, beside it."""
    out = Path(out)
    suffix = out.suffix if out.suffix in (".h5", ".hdf5") else ""
    return out.with_name(f"{out.name[: len(out.name) - len(suffix)]}.float64{suffix or '.h5'}")


def official_version(official: Any) -> str:
    """The installed version of the official distribution (what was really recorded)."""
    try:
        return importlib.metadata.version(official.distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def software(recordings: Iterable[Recording] = ()) -> dict[str, Any]:
    """What a recording ran on: the machine, the generic libraries, then each subject's own (its official package,
    the libraries its models run on); the store's `software` attribute and the goldens manifest record it."""
    import h5py

    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    out: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": cpu,
        "numpy": np.__version__,
        "h5py": h5py.__version__,
        "torch": torch.__version__,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }
    for recording in recordings:
        out.update(recording.software())
    out["conformance"] = __version__
    return out


def record(
    out: str | Path,
    parts: Sequence[Part],
    *,
    dtype: str = "float32",
    threads: int = 1,
    modules: list[str] | None = None,
    oracle: bool | str | None = None,
    command: str = "",
    storage: StoragePolicy | None = None,
    on_case: Callable[[str, int, int], None] | None = None,
    on_call: Callable[[str], None] | None = None,
    on_skip: Callable[[str, str], None] | None = None,
    determinism: bool = True,
    reference64: bool = True,
    twins: Sequence[Precision] = (),
    twins_reference: str | Path | None = None,
) -> Path:
    """Record each part's cases into the golden store `out` (written atomically). Returns the path written.

    oracle: re-run every hooked call on a float64 twin to measure its own noise (default: on unless `dtype` is
    float64); "sampled": only calls 0, 1, 2, 4, 8... of each module (capture/oracle.py). determinism: run each case a second time under a checksumming tap and store whether every recorded
    tensor came out bit-identical (`determinism` in the case provenance). reference64: a float32 or bfloat16
    recording also records the same cases in clean float64 beside it (`reference64_path(out)`).
    on_case(case name, index, total), on_skip(case name, why), on_call(module key): progress callbacks.
    twins: precision twins whose noise is recorded beside the float32 noise (isolated: with the oracle; chained:
    against the float64 twin, so with `reference64`, or against `twins_reference`: an existing clean float64
    recording of the same cases, as the committed goldens pair theirs through the manifest).
    """
    if twins and (dtype != "float32" or oracle is False):
        raise UsageError("precision twins are recorded with a float32 golden and its float64 oracle (drop "
                         "--no-oracle, record float32)")  # fmt: skip
    if dtype not in DTYPES:
        raise UsageError(f"unknown dtype {dtype!r} ({', '.join(DTYPES)})")
    torch.set_num_threads(threads)
    use_oracle = (dtype != "float64") if oracle is None else (bool(oracle) and dtype != "float64")
    sample_oracle = oracle == "sampled"
    runnable: list[Part] = []
    for recording, cases in parts:
        recording.prepare(cases)
        kept = []
        for case in cases:
            why = recording.runnable(case)
            if why is None:
                kept.append(case)
            elif on_skip is not None:
                on_skip(case.name, why)
        if kept:
            runnable.append((recording, kept))
    if not runnable:
        labels = ", ".join(dict.fromkeys(recording.label for recording, _ in parts))
        raise UsageError("none of the requested cases can run on this checkpoint", path=labels)
    reference = None
    if reference64 and dtype != "float64":
        reference = _record_float64_twin(out, runnable, threads=threads, modules=modules, command=command,
                                         storage=storage, on_case=on_case, determinism=determinism)  # fmt: skip
    total = sum(len(cases) for _, cases in runnable)
    ran_on = software(recording for recording, _ in runnable)
    with _discarded_on_error(reference), GoldenWriter(out, command=command, software=ran_on, policy=storage,
                                                       publish=reference is None) as writer:  # fmt: skip
        if reference is not None:
            writer.set_attribute(REFERENCE64_ATTR, reference.link)
        index = 0
        against = reference.staged if reference is not None else twins_reference
        reference_store = GoldenStore(against) if against is not None and twins else None
        try:
            for recording, cases in runnable:
                models = recording.load(dtype)
                twin = recording.load("float64") if use_oracle else None
                precision_models = {p.name: recording.load(p.compute) for p in twins}
                for case in cases:
                    if on_case:
                        on_case(case.name, index, total)
                    index += 1
                    _record_case(writer, recording, models, twin, case, Path(out), dtype=dtype, threads=threads,
                                 modules=modules, command=command, on_call=on_call, determinism=determinism,
                                 sample_oracle=sample_oracle, twins=[(p, precision_models[p.name]) for p in twins],
                                 reference=reference_store)  # fmt: skip
        finally:
            if reference_store is not None:
                reference_store.close()
    if reference is not None:
        reference.publish_with(writer)
    return Path(out)


def _record_case(writer: GoldenWriter, recording: Recording, models: Any, twin: Any, case: Any, out: Path, *,
                 dtype: str, threads: int, modules: list[str] | None, command: str,
                 on_call: Callable[[str], None] | None, determinism: bool,
                 sample_oracle: bool = False, twins: Sequence[tuple[Precision, Any]] = (),
                 reference: GoldenStore | None = None) -> None:  # fmt: skip
    torch.manual_seed(recording.seed)
    roots = recording.roots(models, case)
    provenance: dict[str, Any] = {
        "subject": recording.subject,
        "case": case.name,
        "family": case.family,
        "description": case.description,
        "model": case.model,
        "dtype": dtype,
        "size": recording.size,
        "seed": recording.seed,
        "case_params": dict(getattr(case, "params", {}) or {}),
        "threads": threads,
        "device": "cpu",
        "official_package": recording.official.distribution,
        "official_version": official_version(recording.official),
        "torch_version": torch.__version__,
        "modules": modules or ["*"],
        "oracle": ("isolated-float64-sampled" if sample_oracle else "isolated-float64") if twin is not None else "none",
        "command": command,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    provenance.update(recording.provenance(models, case, roots, out))
    with writer.case(case.name, provenance) as case_writer:
        methods = recording.methods(roots)
        isolated = None
        if twin is not None:
            skip_keys = {spec.key for spec in methods if not spec.oracle}  # discrete (generate, encode): not re-run
            isolated = IsolatedOracle(recording.roots(twin, case), precision=lambda: recording.precision("float64"),
                                      functions=recording.oracle_functions(),
                                      skip=lambda key: key in skip_keys, sample=sample_oracle,
                                      twins=[_oracle_twin(recording, p, m, case) for p, m in twins])  # fmt: skip
        io = CaseIO(recording.size)
        started = time.time()
        background = AsyncCaseWriter(case_writer)
        try:
            with recording.precision(dtype), torch.no_grad(), versioned_tensors():
                recorder = Recorder(background, roots, include=modules, exclude=recording.excluded(case),
                                    methods=methods, functions=recording.functions(), oracle=isolated,
                                    on_call=on_call, keep_checksums=determinism)  # fmt: skip
                with recorder:
                    recording.run(models, case, io)
        finally:
            background.close()
        case_writer.provenance["seconds"] = round(time.time() - started, 3)
        if determinism:
            torch.manual_seed(recording.seed)
            case_writer.provenance["determinism"] = determinism_check(recording, models, case, dtype,
                                                                      recorder.checksums(), io, modules)  # fmt: skip
        if twins:
            case_writer.provenance["precision_twins"] = _chained_twins(case_writer, recording, case, twins, reference,
                                                                       dtype=dtype, modules=modules)  # fmt: skip
        case_writer.provenance["calls_recorded"] = recorder.calls_recorded
        if isolated is not None and isolated.failures:
            case_writer.provenance["oracle_failures"] = isolated.failures
        case_writer.provenance["inputs"] = sorted(io.inputs)
        if io.settings:
            case_writer.provenance["settings"] = io.settings
        for name, value in io.inputs.items():
            case_writer.add_input(name, value)
        for name, value in io.outputs.items():
            case_writer.add_output(name, value)


def _twin_roots(recording: Recording, precision: Precision, models: Any, case: Any) -> dict[str, torch.nn.Module]:
    roots = recording.roots(models, case)
    apply_weight_format(roots, precision)
    return roots


def _oracle_twin(recording: Recording, precision: Precision, models: Any, case: Any) -> OracleTwin:
    """The isolated oracle's twin at `precision`: the subject's models in its compute dtype, weights stored in its
    format, the recorded free functions called as the official code defines them."""

    def called(spec: FunctionSpec) -> Callable[..., Any]:
        return lambda *args, **kwargs: getattr(spec.namespace, spec.name)(*args, **kwargs)

    return OracleTwin(precision.name, _twin_roots(recording, precision, models, case), TORCH_DTYPES[precision.compute],
                      lambda: recording.precision(precision.compute),
                      {spec.key: called(spec) for spec in recording.functions() if spec.oracle})  # fmt: skip


def _chained_twins(case_writer: Any, recording: Recording, case: Any, twins: Sequence[tuple[Precision, Any]],
                   reference: GoldenStore | None, *, dtype: str, modules: list[str] | None) -> dict[str, Any]:  # fmt: skip
    """Run `case` once more on each precision twin, hooked, and store each tensor's noise against the float64 twin
    recording (mode `chained:<precision>`). Returns the provenance entry: per twin, what it is and how its
    chained noise was measured."""
    out: dict[str, Any] = {}
    for precision, models in twins:
        entry: dict[str, Any] = {"compute": precision.compute, "weights": precision.weights or precision.compute}
        out[precision.name] = entry
        if reference is None or case.name not in reference.cases:
            entry["chained"] = "not measured: no float64 twin recording (recorded with --no-reference64)"
            continue
        started = time.time()
        torch.manual_seed(recording.seed)
        roots = _twin_roots(recording, precision, models, case)
        tap = ChainedNoiseTap(roots, reference.case(case.name), precision.name, dtype, include=modules,
                              exclude=recording.excluded(case), methods=recording.methods(roots),
                              functions=recording.functions())  # fmt: skip
        try:
            with recording.precision(precision.compute), torch.no_grad(), versioned_tensors(), tap:
                recording.run(models, case, CaseIO(recording.size))
        except Exception as exc:  # a twin that cannot run the case leaves its chained noise unmeasured, said why
            entry["chained"] = f"failed: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
            continue
        for key, call, role, status, metrics in tap.rows:
            case_writer.add_oracle(key, call, role, tap.mode, status, metrics)
        entry["chained"] = "measured against the float64 twin"
        entry["chained_records"] = len(tap.rows)
        entry["decisions_diverged"] = tap.diverged
        entry["seconds"] = round(time.time() - started, 3)
    return out


def determinism_check(recording: Recording, models: Any, case: Any, dtype: str,
                      recorded: dict[tuple[str, int, str], Any], first: CaseIO,
                      modules: list[str] | None = None) -> dict[str, Any]:  # fmt: skip
    """Run `case` a second time on the same models, hooked by a tap that only checksums, and compare every tensor
    leaf bit for bit with what was recorded (`recorded`: the recorder's checksums) and the case's outputs with
    the first run's. The official model's own nondeterminism (a race between threads, an uninitialised buffer)
    would otherwise be blamed on the first candidate checked against it."""
    started = time.time()
    roots = recording.roots(models, case)
    io = CaseIO(first.size)
    tap = ChecksumTap(roots, include=modules, exclude=recording.excluded(case), methods=recording.methods(roots),
                      functions=recording.functions())  # fmt: skip
    with recording.precision(dtype), torch.no_grad(), versioned_tensors(), tap:
        recording.run(models, case, io)
    differing = [f"{key}#{call}/{role}" for (key, call, role), mine in recorded.items()
                 if tap.prints.get((key, call, role)) != mine]  # fmt: skip
    recorded_calls = {(key, call) for key, call, _ in recorded}
    extra = [f"{key}#{call}" for key, call in tap.calls if (key, call) not in recorded_calls]
    for name in sorted(set(first.outputs) | set(io.outputs)):
        mine, theirs = first.outputs.get(name), io.outputs.get(name)
        if isinstance(mine, np.ndarray) and isinstance(theirs, np.ndarray):
            same = mine.shape == theirs.shape and mine.dtype == theirs.dtype and checksum(mine) == checksum(theirs)
        else:
            same = type(mine) is type(theirs) and mine == theirs
        if not same:
            differing.append(f"(case output) {name}")
    return {
        "runs": 2,
        "bitwise_identical": not differing and not extra,
        "tensors_compared": len(recorded),
        "differing_count": len(differing),
        "differing": differing[:20],  # the first ones, in recording order
        "extra_calls": extra[:20],
        "seconds": round(time.time() - started, 3),
    }


# -- the float64 twin ----------------------------------------------------------------------------------------


@dataclass
class PendingReference:
    """A complete float64 twin at its staging name, waiting for the float32 store it belongs to."""

    staged: Path
    path: Path
    recording_id: str

    @property
    def link(self) -> dict[str, str]:
        """What the float32 store's root attribute says about its twin (the check verifies both)."""
        return {"path": self.path.name, "recording_id": self.recording_id}

    def publish_with(self, writer: GoldenWriter) -> None:
        """Put the twin in place, then the store that names it: the store never names a missing twin."""
        try:
            os.replace(self.staged, self.path)
        except BaseException:
            writer.abort()
            self.discard()
            raise
        writer.publish()

    def discard(self) -> None:
        self.staged.unlink(missing_ok=True)


@contextlib.contextmanager
def _discarded_on_error(reference: PendingReference | None) -> Iterator[None]:
    try:
        yield
    except BaseException:
        if reference is not None:
            reference.discard()
        raise


def _record_float64_twin(out: str | Path, parts: Sequence[Part], *, threads: int, modules: list[str] | None,
                         command: str, storage: StoragePolicy | None,
                         on_case: Callable[[str, int, int], None] | None,
                         determinism: bool = True) -> PendingReference:  # fmt: skip
    """Record the same cases with the same weights and inputs in clean float64, at a staging name that is the
    writer's own partial-file name for the twin: a recorder killed before publishing leaves nothing that the
    next recording does not clean up. Without this reference a check of the float32 store has no chained noise
    and falls back to the looser, scaled isolated noise (compare/engine.py)."""
    path = reference64_path(out)
    remove_stale_partials(path)
    staged = path.with_name(f"{path.name}.partial-{os.getpid()}")

    def labelled(name: str, index: int, total: int) -> None:
        if on_case is not None:
            on_case(f"{name} (float64 reference)", index, total)

    record(staged, parts, dtype="float64", threads=threads, modules=modules, oracle=False, command=command,
           storage=storage, on_case=labelled, reference64=False, determinism=determinism)  # fmt: skip
    with GoldenStore(staged) as store:
        recording_id = store.recording_id
    return PendingReference(staged, path, recording_id)


__all__ = ["DTYPES", "CaseIO", "Recording", "determinism_check", "record", "reference64_path", "software"]
