"""A subject for any torch model: the kit a model family's package builds its subject from (a built-in subject, or a
user's own package registered by entry point), so that it writes only what is specific to its model.

    class MySubject(TorchSubject):
        name, title = "my_model", "My model"
        official = OfficialPackage("my-model", "1.2.0", "my_model")  # whose code the goldens are recorded from
        methods = (("", "generate", False),)  # methods besides forward that compute something: (path, method,
                                              # re-run by the float64 oracle? not for argmax decisions)

        def cases(self): return CASES          # TorchCase(name, description, run(model, io)), in recording order
        def load(self, folder, dtype): ...     # the factory: the official model from a checkpoint folder
        def build_checkpoint(self, folder, *, seed, size): ...  # seeded random weights (optional)

    SUBJECT = MySubject()

What the kit brings, each a method a subject may override:

* recording through the generic session (conformance/capture/session.py): the model of a checkpoint folder (or of
  the seeded one the kit builds and caches), hooked at its own module paths, each case run through its `run`,
  provenance with the checkpoint folder (relative to the golden when beside it, as committed goldens keep it),
  the weights' hashes and the folder's JSON configs;
* the `official` candidate (`official[:float32|float64][:perturb=PARAMETER[@SCALE]]`): the torch model replayed on
  golden inputs call by call, and run whole cases under a tap;
* `conformance dump` of whatever implementation of the package is importable, in the port contract;
* the project's committed goldens (`make_goldens`: checkpoint, float32 store with noise records, float64 store).

Tokens, signals and report panels stay the Subject protocol's own methods (conformance/subjects/__init__.py).
Everything here imports torch lazily: listing a subject's cases needs neither torch nor numpy.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..compare.candidate import Candidate, NotCovered, Sink, check_call
from ..errors import ConformanceError, StoreError, UsageError
from ..store.reader import Case, GoldenStore
from ..store.schema import CallRecord
from . import Subject

if TYPE_CHECKING:
    from ..capture.io import CaseIO

DTYPES = ("float32", "float64", "bfloat16")
CONFIG_FILES = ("config.json", "generation_config.json")  # recorded in each case's provenance when present
MARKER = ".complete.json"  # written last by the checkpoint builder: a folder without it is rebuilt


@dataclass(frozen=True)
class TorchCase:
    """One named case: `run(model, io)` declares every input it feeds the model with `io.input(name, value)` (numpy
    arrays and plain values: a check replays the golden's), calls the model through its own API and declares what
    it keeps with `io.output(name, value)`."""

    name: str
    description: str
    run: Callable[[Any, CaseIO], None]
    family: str = "case"
    model: str = "model"  # the name its checkpoint folder is recorded under in the provenance
    params: dict[str, Any] = field(default_factory=dict)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(functools.partial(handle.read, 1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every weights file of a checkpoint folder, by name."""
    found = sorted(p for p in Path(folder).rglob("*") if p.suffix in (".safetensors", ".bin", ".pt") and p.is_file())
    return {str(p.relative_to(folder)): file_sha256(p) for p in found}


def relative_to_store(folder: Path, store: Path) -> str:
    """The checkpoint folder relative to the golden's directory when it lies beside it (committed goldens carry
    their checkpoints), else absolute: a checker finds the weights from the golden alone."""
    with contextlib.suppress(ValueError):
        return str(Path(folder).resolve().relative_to(Path(store).resolve().parent))
    return str(Path(folder).resolve())


def checkpoint_of(store: GoldenStore, case: Case, override: Path | None = None) -> Path:
    """The checkpoint folder of a golden case: `override` (--checkpoint) if given, else the one its provenance
    names (relative to the store's directory for committed goldens)."""
    if override is not None:
        folder = Path(override)
    else:
        recorded = case.provenance.get("checkpoint", {}).get(str(case.provenance.get("model", "model")))
        if recorded is None:
            raise StoreError(f"case {case.name!r} names no checkpoint folder (pass --checkpoint)", path=store.path)
        folder = Path(recorded)
        folder = folder if folder.is_absolute() else store.path.parent / folder
    if not folder.is_dir():
        raise StoreError(f"the checkpoint of case {case.name!r} is not at {folder} (pass --checkpoint)",
                         path=store.path)  # fmt: skip
    return folder


class TorchSubject(Subject):
    """A subject whose official model is a torch module: override `cases`, `load` and (to record without a
    checkpoint folder) `build_checkpoint`; the rest has working defaults."""

    seed: int = 0  # of the seeded checkpoints, and torch's seed before each case runs
    sizes: tuple[str, ...] = ("tiny",)  # the sizes build_checkpoint makes (`record --size`)
    # methods besides forward that compute a component: (module path, "" the root; method; re-run by the oracle)
    methods: tuple[tuple[str, str, bool], ...] = ()

    # -- what a subject writes ----------------------------------------------------------------------------------
    def cases(self) -> Sequence[Any]:
        """The subject's TorchCases, in recording order."""
        return ()

    def load(self, folder: Path, dtype: str) -> Any:
        """The official model (a torch.nn.Module, in eval mode) from a checkpoint folder, computing in `dtype`."""
        raise self._unavailable("model factory (TorchSubject.load)")

    def build_checkpoint(self, folder: Path, *, seed: int, size: str) -> None:
        """Write seeded random weights of a size into `folder`, in the layout `load` reads."""
        raise self._unavailable("checkpoint builder: record from a checkpoint folder (--checkpoint)")

    def precision(self, dtype: str) -> contextlib.AbstractContextManager[Any]:
        """A context in which the model computes in `dtype` for real: where the official code forces float32
        (norms, softmaxes), a subject swaps in versions computing in float64 for its float64 goldens."""
        return contextlib.nullcontext()

    def to_torch(self, value: Any, name: str, dtype: Any) -> Any:
        """A golden input (numpy arrays, plain values, nested) as the value the official module takes: arrays
        become tensors (floating ones in the candidate's dtype), in torch's own memory as in the recorded run."""
        import numpy as np
        import torch

        if isinstance(value, np.ndarray):
            tensor = torch.from_numpy(np.ascontiguousarray(value)).reshape(value.shape)
            return tensor.to(dtype, copy=True) if tensor.is_floating_point() else tensor.clone()
        if isinstance(value, dict):
            return {k: self.to_torch(v, k, dtype) for k, v in value.items()}
        if isinstance(value, (tuple, list)):
            return type(value)(self.to_torch(v, name, dtype) for v in value)
        return value

    def config(self, folder: Path) -> dict[str, Any]:
        """What a case's provenance records of the checkpoint's configuration: its JSON config files."""
        return {name: json.loads((folder / name).read_text()) for name in CONFIG_FILES if (folder / name).exists()}

    def libraries(self) -> dict[str, str]:
        """Versions of the libraries the official model runs on beyond torch (recorded in the store)."""
        return {}

    # -- checkpoints ----------------------------------------------------------------------------------------
    def checkpoint_dir(self, size: str, seed: int) -> Path:
        cache = Path(os.environ.get("CONFORMANCE_CACHE", Path.home() / ".cache" / "conformance"))
        return cache / "checkpoints" / f"{self.name}-{size}-seed{seed}"

    def checkpoints(self, folder: Path | None = None, *, size: str = "tiny", seed: int | None = None) -> Path:
        seed = self.seed if seed is None else seed
        folder = Path(folder) if folder is not None else self.checkpoint_dir(size, seed)
        marker = folder / MARKER
        if marker.exists() and json.loads(marker.read_text()) == {"size": size, "seed": seed}:
            return folder
        folder.mkdir(parents=True, exist_ok=True)
        self.build_checkpoint(folder, seed=seed, size=size)
        marker.write_text(json.dumps({"size": size, "seed": seed}))
        return folder

    # -- recording ------------------------------------------------------------------------------------------
    def recording(self, **options: Any) -> TorchRecording:
        """Options: `checkpoint` (a folder; default the seeded one of `size` and `seed`, built when missing)."""
        if options.get("attn_implementation", "eager") != "eager":
            raise UsageError(f"subject {self.name!r} loads its model one way: --attn-implementation is not an "
                             "option of it")  # fmt: skip
        seed, size, checkpoint = options.get("seed"), str(options.get("size", "tiny")), options.get("checkpoint")
        if checkpoint is None and size not in self.sizes:
            raise UsageError(f"subject {self.name!r} builds {', '.join(self.sizes)} checkpoints, not {size!r} (record "
                             "your own with --checkpoint)")  # fmt: skip
        if checkpoint is not None and not Path(checkpoint).is_dir():
            raise UsageError("checkpoint folder not found", path=checkpoint)
        return TorchRecording(self, size=size, checkpoint=checkpoint, seed=self.seed if seed is None else int(seed))

    def record(self, out: str | Path, cases: Sequence[Any], **options: Any) -> Path:
        from ..capture import session

        keys = ("size", "checkpoint", "seed", "attn_implementation")
        recording = self.recording(**{k: options.pop(k) for k in keys if k in options})
        return session.record(out, [(recording, list(cases))], **options)

    def make_goldens(self, folder: Path, **options: Any) -> dict[str, Any]:
        """The committed goldens, as `python -m conformance.project goldens` keeps them: the seeded tiny
        checkpoint in `checkpoints/<name>-tiny/`, `<name>-tiny-float32.h5` (with its noise records) and
        `<name>-tiny-float64.h5`, paired through the manifest entry this returns."""
        from ..capture import session

        if options.get("size", "tiny") != "tiny":
            raise UsageError(f"subject {self.name!r} keeps tiny goldens only, not {options['size']!r}")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        seed, threads = int(options.get("seed", self.seed)), int(options.get("threads", 1))
        checkpoint = self.checkpoints(folder / "checkpoints" / f"{self.name}-tiny", size="tiny", seed=seed)
        cases = list(self.cases())
        stores = []
        for dtype in ("float32", "float64"):
            path = folder / f"{self.name}-tiny-{dtype}.h5"
            started = time.time()
            self.record(path, cases, checkpoint=checkpoint, seed=seed, dtype=dtype, threads=threads,
                        oracle=dtype == "float32", command="python -m conformance.project goldens",
                        reference64=False,  # the manifest pairs the two stores
                        on_case=lambda name, i, n, dtype=dtype: print(f"[{self.name} {dtype}] {i + 1}/{n} {name}",
                                                                      flush=True))  # fmt: skip
            stores.append({"path": path.name, "dtype": dtype, "bytes": path.stat().st_size, "sha256": file_sha256(path),
                           "cases": [case.name for case in cases],
                           "oracle": "isolated-float64" if dtype == "float32" else "none",
                           "seconds": round(time.time() - started, 1)})  # fmt: skip
        stores[0]["float64_reference"] = stores[1]["path"]
        return {
            "title": self.title,
            "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "command": "nox -s goldens",
            "threads": threads,
            "checkpoint": {"path": str(checkpoint.relative_to(folder)), "seed": seed, "size": "tiny",
                           "files": weights_hashes(checkpoint)},
            "stores": stores,
            "software": session.software([self.recording(checkpoint=checkpoint)]),
        }  # fmt: skip

    # -- candidates and dumps -------------------------------------------------------------------------------
    def candidate(self, spec: str, *, checkpoint: Path | None = None) -> Candidate:
        if spec == "official" or spec.startswith("official:"):
            return TorchOfficial(self, checkpoint=checkpoint, **parse_official_spec(spec))
        return super().candidate(spec, checkpoint=checkpoint)

    def dump(self, store: GoldenStore, cases: list[str] | None, out: Path, **options: Any) -> list[Path]:
        return dump_cases(self, store, cases, out, **options)

    def keep(self, case: Case) -> list[str]:
        return [f"{path}:{method}" for path, method, _ in self.methods]

    def case_named(self, name: str) -> TorchCase | None:
        found: TorchCase | None = next((case for case in self.cases() if case.name == name), None)
        return found


class TorchRecording:
    """A TorchSubject's half of the recording session (conformance.capture.session.Recording): the model of one
    checkpoint folder, given or built from the seed."""

    def __init__(self, owner: TorchSubject, *, size: str, checkpoint: str | Path | None, seed: int) -> None:
        if owner.official is None:
            raise UsageError(f"subject {owner.name!r} names no official package (TorchSubject.official)")
        self.owner = owner
        self.subject = owner.name
        self.official = owner.official
        self.seed = seed
        self.requested_size = size
        self.size = size if checkpoint is None else "checkpoint"
        self.folder = Path(checkpoint) if checkpoint is not None else owner.checkpoint_dir(size, seed)
        self.build = checkpoint is None
        self.label = str(self.folder)

    def prepare(self, cases: Sequence[TorchCase]) -> None:
        if self.build:
            self.owner.checkpoints(self.folder, size=self.requested_size, seed=self.seed)
        elif not self.folder.is_dir():
            raise UsageError("checkpoint folder not found", path=self.folder)
        marker = self.folder / MARKER  # a seeded folder built by the kit knows its size
        if not self.build and marker.exists():
            self.size = str(json.loads(marker.read_text()).get("size", "checkpoint"))

    def runnable(self, case: TorchCase) -> str | None:
        return None

    def load(self, dtype: str) -> Any:
        return self.owner.load(self.folder, dtype)

    def roots(self, models: Any, case: TorchCase) -> dict[str, Any]:
        return {"": models}

    def excluded(self, case: TorchCase) -> list[str]:
        return []

    def methods(self, roots: dict[str, Any]) -> list[Any]:
        return method_specs(self.owner)

    def functions(self) -> list[Any]:
        return []

    def oracle_functions(self) -> dict[str, Callable[..., Any]]:
        return {}

    def precision(self, dtype: str) -> contextlib.AbstractContextManager[Any]:
        return self.owner.precision(dtype)

    def run(self, models: Any, case: TorchCase, io: CaseIO) -> None:
        case.run(models, io)

    def provenance(self, models: Any, case: TorchCase, roots: dict[str, Any], out: Path) -> dict[str, Any]:
        return {"checkpoint": {case.model: relative_to_store(self.folder, out)},
                "weights_sha256": {case.model: weights_hashes(self.folder)},
                "config": {case.model: self.owner.config(self.folder)}}  # fmt: skip

    def software(self) -> dict[str, Any]:
        from ..capture.session import official_version

        return {**self.owner.libraries(), self.official.distribution: official_version(self.official)}


# -- the official candidate ---------------------------------------------------------------------------------------


def parse_official_spec(spec: str) -> dict[str, Any]:
    """`official[:float32|float64|bfloat16][:perturb=PARAMETER[@SCALE]]` as TorchOfficial's options."""
    options: dict[str, Any] = {"dtype": "float32", "perturb": None, "scale": 1e-3}
    for part in spec.split(":")[1:]:
        if part in DTYPES:
            options["dtype"] = part
        elif part.startswith("perturb="):
            name, _, scale = part[len("perturb=") :].partition("@")
            options["perturb"] = name
            if scale:
                try:
                    options["scale"] = float(scale)
                except ValueError:
                    raise UsageError(f"bad perturbation scale {scale!r} in {spec!r}") from None
        else:
            raise UsageError(f"unknown option {part!r} in candidate spec {spec!r} "
                             "(official[:float32|float64|bfloat16][:perturb=<parameter>[@scale]])")  # fmt: skip
    return options


def method_specs(owner: TorchSubject) -> list[Any]:
    """The recorder's specs of the methods besides forward a subject records."""
    from ..capture.recorder import MethodSpec

    return [MethodSpec(path, method, oracle) for path, method, oracle in owner.methods]


class TorchOfficial(Candidate):
    """The subject's torch model as a check candidate: isolated calls on golden inputs, whole cases under a tap.
    `perturb` scales one parameter by (1 + scale), so a check must blame the module that owns it."""

    name = "official"

    def __init__(self, owner: TorchSubject, dtype: str = "float32", perturb: str | None = None, scale: float = 1e-3,
                 checkpoint: Path | None = None) -> None:  # fmt: skip
        self.owner = owner
        self.dtype = self.compute = dtype
        self.perturb, self.scale = perturb, scale
        self.checkpoint = checkpoint
        self.models: dict[str, Any] = {}
        self.model: Any = None

    @property
    def import_name(self) -> str:
        return self.owner.official.import_name if self.owner.official else self.owner.name

    @property
    def description(self) -> str:
        from ..compare.provenance import imported_versions, package_label, package_provenance

        libraries = [f"{lib} {v}" for lib, v in imported_versions(("torch",)).items() if v]
        text = f"{package_label(package_provenance(self.import_name))} ({', '.join([*libraries, self.compute])})"
        return text + (f", {self.perturb} scaled by 1{self.scale:+g}" if self.perturb else "")

    def provenance(self) -> dict[str, Any]:
        from ..compare.provenance import imported_versions, package_label, package_provenance

        package = package_provenance(self.import_name)
        libraries = imported_versions(("torch", "numpy"))
        out: dict[str, Any] = {
            "kind": self.name, "label": self.description, "package": package, "libraries": libraries,
            "dtype": self.dtype,
            "compared_with_golden": {
                "official_package": package.get("distribution") or f"{package_label(package)} (no distribution)",
                "official_version": package.get("version"), "torch": libraries["torch"]},
        }  # fmt: skip
        if self.perturb:
            out["perturbation"] = {"parameter": self.perturb, "scale": self.scale}
        return out

    def prepare(self, store: GoldenStore, case: Case) -> None:
        import torch

        torch.set_num_threads(int(case.provenance.get("threads", 1)))  # bit for bit only at the recorded count
        folder = checkpoint_of(store, case, self.checkpoint)
        if str(folder) not in self.models:
            model = self.owner.load(folder, self.compute)
            if self.perturb:
                parameters = dict(model.named_parameters())
                if self.perturb not in parameters:
                    raise UsageError(f"no parameter {self.perturb!r} in the official model of subject "
                                     f"{self.owner.name!r}")  # fmt: skip
                with torch.no_grad():
                    parameters[self.perturb].mul_(1 + self.scale)
            self.models[str(folder)] = model
        self.model = self.models[str(folder)]

    def _resolve(self, key: str) -> Any:
        path, _, method = key.partition(":")
        path = "" if path == "(root)" else path
        try:
            module = self.model.get_submodule(path) if path else self.model
        except AttributeError:
            return None
        return getattr(module, method, None) if method else module

    def covers(self, call: CallRecord) -> bool:
        return self._resolve(call.key) is not None

    def run_isolated(self, case: Case, call: CallRecord, args: list[Any], kwargs: dict[str, Any]) -> Any:
        import torch

        from ..capture.recorder import to_numpy_tree
        from ..store.tree import numpy_roles

        target = self._resolve(call.key)
        if target is None:
            raise NotCovered(call.key)
        dtype = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16}[self.compute]
        keep = numpy_roles(call.decoded_spec())  # inputs the official code took as numpy arrays stay numpy
        torch_args = [a if f"args/{i}" in keep else self.owner.to_torch(a, "", dtype) for i, a in enumerate(args)]
        torch_kwargs = {k: v if f"kwargs/{k}" in keep else self.owner.to_torch(v, k, dtype) for k, v in kwargs.items()}
        check_call(target, torch_args, torch_kwargs)
        with torch.no_grad(), self.owner.precision(self.compute):
            return to_numpy_tree(target(*torch_args, **torch_kwargs))

    def can_chain(self, case: Case) -> bool:
        return self.owner.case_named(case.name) is not None

    def run_chained(self, case: Case, sink: Sink) -> None:
        import torch

        from ..capture.io import RecordedIO
        from ..capture.recorder import TorchTap

        spec = self.owner.case_named(case.name)
        if spec is None:
            raise NotCovered(case.name)
        io = RecordedIO(case, str(case.provenance.get("size", "tiny")))
        torch.manual_seed(int(case.provenance.get("seed", self.owner.seed)))
        with (self.owner.precision(self.compute), torch.no_grad(),
              TorchTap({"": self.model}, sink, methods=method_specs(self.owner))):  # fmt: skip
            spec.run(self.model, io)


# -- dumps --------------------------------------------------------------------------------------------------------


def dump_cases(owner: TorchSubject, store: GoldenStore, names: list[str] | None, out: Path, *,
               checkpoint: Path | None = None, dtype: str = "float32", modules: list[str] | None = None,
               inputs: bool = False, on_case: Callable[[str, Path], None] | None = None) -> list[Path]:  # fmt: skip
    """Run the importable implementation on the recorded inputs of each case (default: all) of `store` and write
    `out/<case>.safetensors` in the port contract (golden names, no map needed). Returns the files written."""
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        raise UsageError("dump runs a torch implementation: it needs torch")
    import torch

    from ..capture.dump import dump_case
    from ..capture.io import RecordedIO
    from ..compare.provenance import package_provenance

    names = names or list(store.cases)
    for name in names:
        if name not in store.cases:
            raise UsageError(f"no case {name!r} in the golden store (cases: {', '.join(store.cases)})", path=store.path)
        if owner.case_named(name) is None:
            raise UsageError(f"case {name!r} has no runner here: dump runs the cases `conformance list-cases` knows",
                             path=store.path)  # fmt: skip
    candidate = TorchOfficial(owner, dtype, checkpoint=checkpoint)
    written = []
    for name in names:
        case = store.case(name)
        spec = owner.case_named(name)
        assert spec is not None
        path = out / f"{name}.safetensors"
        try:
            candidate.prepare(store, case)
            io = RecordedIO(case, str(case.provenance.get("size", "tiny")))
            metadata = {"candidate": {**package_provenance(candidate.import_name), "dtype": dtype},
                        "golden": str(store.path), "golden_recording_id": store.recording_id}  # fmt: skip
            torch.manual_seed(int(case.provenance.get("seed", owner.seed)))
            with owner.precision(dtype):
                dump_case({"": candidate.model}, functools.partial(spec.run, candidate.model, io), path, case=name,
                          include=modules, methods=method_specs(owner), inputs=inputs,
                          metadata=metadata)  # fmt: skip
        except ConformanceError:
            raise
        except Exception as exc:
            message = " ".join(str(exc).split())[:300]
            raise UsageError(f"{candidate.description} raised {type(exc).__name__} on case {name}: {message}",
                             path=path) from exc  # fmt: skip
        written.append(path)
        if on_case is not None:
            on_case(name, path)
    return written


__all__ = ["TorchCase", "TorchOfficial", "TorchRecording", "TorchSubject", "checkpoint_of", "weights_hashes"]
