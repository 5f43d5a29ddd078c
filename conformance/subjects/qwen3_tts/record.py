"""Record Qwen3-TTS cases from the official model into a golden store.

`record()` loads the official models (tiny or full-size seeded checkpoints, or a user's local
checkpoint folder) through the official `from_pretrained` path, hooks them, runs each case, and streams
every call into the store. With the oracle on (the default for float32 and bfloat16), each hooked call
is also re-run on a clean float64 twin with the same inputs to measure its own rounding noise.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ...capture.oracle import IsolatedOracle
from ...capture.recorder import FunctionSpec, MethodSpec, Recorder, versioned_tensors
from ...errors import UsageError
from ...store.schema import REFERENCE64_ATTR
from ...store.writer import AsyncCaseWriter, GoldenWriter, StoragePolicy
from . import checkpoints, configs
from .cases import CaseIO, CaseSpec
from .official import OFFICIAL_PACKAGE, official_version

DEFAULT_SEED = 20260125
SUBJECT = "qwen3_tts"
CODEC_PREFIX = "speech_tokenizer"

# Methods other than forward that compute a component, per official class: (method, re-run by the oracle).
# Discrete ones (generate, encode, quantize: their outputs are argmax decisions) are recorded but not re-run.
METHODS: dict[str, tuple[tuple[str, bool], ...]] = {
    "Qwen3TTSForConditionalGeneration": (
        ("generate", False),
        ("extract_speaker_embedding", True),
        ("generate_icl_prompt", True),
    ),
    "Qwen3TTSTalkerForConditionalGeneration": (("generate", False),),
    "Qwen3TTSTalkerCodePredictorModelForConditionalGeneration": (("generate", False),),
    "Qwen3TTSTokenizerV2Model": (("decode", True), ("encode", False)),
    "Qwen3TTSTokenizerV2Decoder": (("chunked_decode", True),),
    "SplitResidualVectorQuantizer": (("decode", True),),
    "ResidualVectorQuantizer": (("decode", True),),
    "ResidualVectorQuantization": (("decode", True),),
    "VectorQuantization": (("decode", True),),
    "EuclideanCodebook": (("decode", True),),
    "Qwen3TTSTokenizerV2Encoder": (("encode", False),),
    "MimiSplitResidualVectorQuantizer": (("encode", False), ("decode", True)),
    "MimiResidualVectorQuantizer": (("encode", False), ("decode", True)),
    "MimiVectorQuantization": (("encode", False), ("decode", True)),
    "MimiEuclideanCodebook": (("encode", False), ("decode", True), ("quantize", False)),
}
DTYPES = ("float32", "float64", "bfloat16")
# The codec keys a case hooking only the codec's encoder side ("codec_encoder") leaves out: its root forward,
# decode and decoder, and the layers inside the encoder's convolution stack, whose activations are 80% of the
# encoder's bytes (the codec_encode case records them; here the stack is one module, enough to blame it).
CODEC_ENCODER_ONLY_EXCLUDES = (CODEC_PREFIX, f"{CODEC_PREFIX}:decode", f"{CODEC_PREFIX}.decoder",
                               f"{CODEC_PREFIX}.decoder.*", f"{CODEC_PREFIX}.decoder:*",
                               f"{CODEC_PREFIX}.encoder.encoder.*")  # fmt: skip


@dataclass(frozen=True)
class CheckpointSource:
    """Where the official models come from: a built checkpoint set, or a user's local folder."""

    tts_dirs: dict[str, Path]
    codec_dir: Path | None
    label: str

    def has(self, model: str) -> bool:
        return self.codec_dir is not None if model == "codec" else model in self.tts_dirs

    @staticmethod
    def from_path(path: str | Path) -> CheckpointSource:
        root = Path(path)
        if not root.is_dir():
            raise UsageError("checkpoint folder not found", path=root)
        sets = {t: root / t for t in configs.MODEL_TYPES if (root / t / "config.json").exists()}
        codec = root / "speech_tokenizer"
        if sets or ((codec / "config.json").exists() and not (root / "config.json").exists()):
            return CheckpointSource(sets, codec if (codec / "config.json").exists() else None, str(path))
        config_path = root / "config.json"
        if not config_path.exists():
            raise UsageError("not a checkpoint folder (no config.json)", path=root)
        config = json.loads(config_path.read_text())
        if config.get("model_type") == "qwen3_tts_tokenizer_12hz":
            return CheckpointSource({}, root, str(path))
        if config.get("model_type") != "qwen3_tts":
            raise UsageError(f"config.json has model_type {config.get('model_type')!r}, not qwen3_tts", path=root)
        codec = root / "speech_tokenizer"
        return CheckpointSource({config.get("tts_model_type", "base"): root},
                                codec if (codec / "config.json").exists() else None, str(path))  # fmt: skip


def default_checkpoint_dir(size: str, seed: int) -> Path:
    cache = Path(os.environ.get("CONFORMANCE_CACHE", Path.home() / ".cache" / "conformance"))
    return cache / "checkpoints" / f"{SUBJECT}-{size}-seed{seed}"


def ensure_checkpoints(size: str, seed: int, folder: Path | None = None,
                       models: tuple[str, ...] = (*configs.MODEL_TYPES, "codec")) -> CheckpointSource:  # fmt: skip
    """Build the seeded checkpoint set unless it is already there (built sets are deterministic)."""
    folder = folder or default_checkpoint_dir(size, seed)
    marker = folder / ".complete.json"
    wanted_tts = tuple(m for m in configs.MODEL_TYPES if m in models)
    state = json.loads(marker.read_text()) if marker.exists() else {}
    have = set(state.get("models", []))
    missing = [m for m in models if m not in have]
    if missing:
        with_codec = "codec" in missing or not (folder / "speech_tokenizer").exists()
        tts_types = wanted_tts if any(m in missing for m in wanted_tts) else ()
        checkpoints.build_checkpoints(size, seed, folder, model_types=tts_types, with_codec=with_codec)
        have |= set(models)
        marker.write_text(json.dumps({"size": size, "seed": seed, "models": sorted(have)}))
    return CheckpointSource.from_path(folder)


class OfficialModels:
    """Official models of one precision, loaded lazily from a checkpoint source and kept for reuse."""

    def __init__(self, source: CheckpointSource, dtype: str, attn_implementation: str) -> None:
        import torch

        self.source = source
        self.dtype_name = dtype
        self.dtype = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16}[dtype]
        self.attn = attn_implementation
        self._tts: dict[str, Any] = {}
        self._codec: Any = None

    def tts(self, model_type: str) -> Any:
        if model_type not in self._tts:
            if model_type not in self.source.tts_dirs:
                raise UsageError(f"this checkpoint has no {model_type} model", path=self.source.label)
            self._tts[model_type] = checkpoints.load_tts(self.source.tts_dirs[model_type], self.dtype, self.attn)
        return self._tts[model_type]

    def codec(self) -> Any:
        if self._codec is None:
            if self.source.codec_dir is None:
                raise UsageError("this checkpoint has no speech_tokenizer/ (codec)", path=self.source.label)
            self._codec = checkpoints.load_codec(self.source.codec_dir, self.dtype, self.attn)
        return self._codec

    def roots(self, case: CaseSpec) -> dict[str, Any]:
        roots: dict[str, Any] = {}
        if case.model == "codec":
            roots[CODEC_PREFIX] = self.codec().model
            return roots
        wrapper = self.tts(case.model)
        if "tts" in case.hooks:
            roots[""] = wrapper.model
        if "codec" in case.hooks or "codec_encoder" in case.hooks:
            roots[CODEC_PREFIX] = wrapper.model.speech_tokenizer.model
        return roots

    @staticmethod
    def excluded(case: CaseSpec) -> list[str]:
        """Module keys of the hooked roots left unhooked: with "codec_encoder", the codec's decoder side (the
        waveform's decode is large and checked by the codec cases; only the encoder feeds the talker)."""
        if "codec_encoder" in case.hooks and "codec" not in case.hooks:
            return list(CODEC_ENCODER_ONLY_EXCLUDES)
        return []

    def folders(self, case: CaseSpec) -> dict[str, Path]:
        if case.model == "codec":
            return {"speech_tokenizer": self.source.codec_dir} if self.source.codec_dir else {}
        return {case.model: self.source.tts_dirs[case.model]}


def method_specs(roots: dict[str, Any]) -> list[MethodSpec]:
    specs = []
    for prefix, root in roots.items():
        for name, module in root.named_modules():
            for method, oracle in METHODS.get(type(module).__name__, ()):
                path = ".".join(p for p in (prefix, name) if p)
                specs.append(MethodSpec(path, method, oracle))
    return specs


def function_specs() -> list[FunctionSpec]:
    o = checkpoints.official()
    return [FunctionSpec(o.tts_modeling, "mel_spectrogram", True)]


def software() -> dict[str, Any]:
    import h5py
    import numpy
    import torch
    import transformers

    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": cpu,
        "numpy": numpy.__version__,
        "h5py": h5py.__version__,
        "torch": torch.__version__,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "transformers": transformers.__version__,
        OFFICIAL_PACKAGE: official_version(),
        "conformance": __import__("conformance").__version__,
    }


def _config_json(folder: Path) -> dict[str, Any]:
    out = {}
    for name in ("config.json", "generation_config.json", "speech_tokenizer/config.json"):
        path = folder / name
        if path.exists():
            out[name] = json.loads(path.read_text())
    return out


def _provenance_path(folder: Path, store: Path) -> str:
    """The checkpoint folder relative to the store's directory when it lies beside it (committed goldens
    carry their checkpoints), else absolute: a checker finds the weights from the store alone."""
    with contextlib.suppress(ValueError):
        return str(folder.resolve().relative_to(store.resolve().parent))
    return str(folder.resolve())


@contextlib.contextmanager
def _precision(dtype: str) -> Iterator[None]:
    if dtype == "float64":
        import torch

        from .precision import clean_precision

        with clean_precision(torch.float64):
            yield
    else:
        yield


def record(
    out: str | Path,
    cases: list[CaseSpec],
    *,
    dtype: str = "float32",
    size: str = "tiny",
    checkpoint: str | Path | None = None,
    seed: int = DEFAULT_SEED,
    threads: int = 1,
    modules: list[str] | None = None,
    oracle: bool | None = None,
    attn_implementation: str = "eager",
    command: str = "",
    storage: StoragePolicy | None = None,
    on_case: Callable[[CaseSpec, int, int], None] | None = None,
    on_call: Callable[[str], None] | None = None,
    on_skip: Callable[[CaseSpec, str], None] | None = None,
    determinism: bool = True,
    reference64: bool = True,
) -> Path:
    """Record `cases` into the golden store `out` (written atomically). Returns the path written.

    determinism: run each case a second time under a checksumming tap and store in the case provenance whether
    every recorded tensor came out bit-identical (`determinism_check`); off for very large runs.

    reference64: a float32 or bfloat16 recording also records the same cases in clean float64 beside it
    (`reference64_path(out)`), the reference that calibrates chained thresholds. The store names its twin,
    and both files are put in place only once both are complete (see `_record_float64_twin`).
    """
    import torch

    if dtype not in DTYPES:
        raise UsageError(f"unknown dtype {dtype!r} ({', '.join(DTYPES)})")
    torch.set_num_threads(threads)
    if checkpoint is not None:
        source = CheckpointSource.from_path(checkpoint)
        marker = Path(checkpoint) / ".complete.json"  # a seeded set built by this tool knows its size
        size_label = json.loads(marker.read_text()).get("size", "checkpoint") if marker.exists() else "checkpoint"
    else:
        needed = tuple(
            sorted({c.model for c in cases} | ({"codec"} if any("codec" in c.hooks for c in cases) else set()))
        )
        source = ensure_checkpoints(size, seed, models=needed)
        size_label = size
    use_oracle = (dtype != "float64") if oracle is None else (oracle and dtype != "float64")
    models = OfficialModels(source, dtype, attn_implementation)
    twin = OfficialModels(source, "float64", attn_implementation) if use_oracle else None
    runnable = []
    for case in cases:
        if not source.has(case.model) or ("codec" in case.hooks and source.codec_dir is None):
            if on_skip:
                on_skip(case, f"the checkpoint has no {case.model} model")
            continue
        runnable.append(case)
    if not runnable:
        raise UsageError("none of the requested cases can run on this checkpoint", path=source.label)
    reference = None
    if reference64 and dtype != "float64":
        reference = _record_float64_twin(out, runnable, checkpoint=checkpoint, size=size, seed=seed, threads=threads,
                                         modules=modules, attn_implementation=attn_implementation, command=command,
                                         storage=storage, on_case=on_case, determinism=determinism)  # fmt: skip
    with _discarded_on_error(reference), GoldenWriter(out, command=command, software=software(), policy=storage,
                                                       publish=reference is None) as writer:  # fmt: skip
        if reference is not None:
            writer.set_attribute(REFERENCE64_ATTR, reference.link)
        for index, case in enumerate(runnable):
            if on_case:
                on_case(case, index, len(runnable))
            torch.manual_seed(seed)
            folders = models.folders(case)
            provenance: dict[str, Any] = {
                "subject": SUBJECT,
                "case": case.name,
                "family": case.family,
                "description": case.description,
                "model": case.model,
                "dtype": dtype,
                "size": size_label,
                "seed": seed,
                "case_params": case.params,
                "threads": threads,
                "device": "cpu",
                "attn_implementation": attn_implementation,
                "official_package": OFFICIAL_PACKAGE,
                "official_version": official_version(),
                "torch_version": torch.__version__,
                "transformers_version": __import__("transformers").__version__,
                "checkpoint": {name: _provenance_path(folder, Path(out)) for name, folder in folders.items()},
                "weights_sha256": {name: checkpoints.weights_hashes(folder) for name, folder in folders.items()},
                "config": {name: _config_json(folder) for name, folder in folders.items()},
                "hooks": list(case.hooks),
                "modules": modules or ["*"],
                "oracle": "isolated-float64" if twin else "none",
                "command": command,
                "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            with writer.case(case.name, provenance) as case_writer:
                roots = models.roots(case)
                case_writer.provenance["attn_implementation_loaded"] = {
                    prefix or "tts": checkpoints.attention_implementations(root) for prefix, root in roots.items()
                }
                isolated = None
                if twin is not None:
                    from .precision import clean_mel_spectrogram, clean_precision

                    skip_keys = {spec.key for spec in method_specs(roots) if not spec.oracle}
                    isolated = IsolatedOracle(
                        twin.roots(case),
                        precision=lambda: clean_precision(torch.float64),
                        functions={":mel_spectrogram": clean_mel_spectrogram},
                        skip=lambda key, skip_keys=skip_keys: key in skip_keys,  # type: ignore[misc]
                    )
                io = CaseIO(size_label)
                started = time.time()
                background = AsyncCaseWriter(case_writer)
                try:
                    with _precision(dtype), torch.no_grad(), versioned_tensors():
                        recorder = Recorder(background, roots, include=modules, exclude=models.excluded(case),
                                            methods=method_specs(roots), functions=function_specs(), oracle=isolated,
                                            on_call=on_call, keep_checksums=determinism)  # fmt: skip
                        with recorder:
                            case.run(models, io)
                finally:
                    background.close()
                case_writer.provenance["seconds"] = round(time.time() - started, 3)
                if determinism:
                    torch.manual_seed(seed)
                    case_writer.provenance["determinism"] = determinism_check(
                        models, case, dtype, recorder.checksums(), io, modules
                    )
                case_writer.provenance["calls_recorded"] = recorder.calls_recorded
                if isolated is not None and isolated.failures:
                    case_writer.provenance["oracle_failures"] = isolated.failures
                case_writer.provenance["inputs"] = sorted(io.inputs)
                for name, value in io.inputs.items():
                    case_writer.add_input(name, value)
                for name, value in io.outputs.items():
                    case_writer.add_output(name, value)
    if reference is not None:
        reference.publish_with(writer)
    return Path(out)


def determinism_check(models: OfficialModels, case: CaseSpec, dtype: str,
                      recorded: dict[tuple[str, int, str], Any], first: CaseIO,
                      modules: list[str] | None = None) -> dict[str, Any]:  # fmt: skip
    """Run `case` a second time on the same models, hooked by a tap that only checksums, and compare every tensor
    leaf bit for bit with what was recorded (`recorded`: the recorder's checksums) and the case's outputs with
    the first run's. The official model's own nondeterminism (a race between threads, an uninitialised buffer)
    would otherwise be blamed on the first candidate checked against it."""
    import numpy as np
    import torch

    from ...capture.recorder import ChecksumTap
    from ...store.schema import checksum

    started = time.time()
    roots = models.roots(case)
    io = CaseIO(first.size)
    tap = ChecksumTap(roots, include=modules, exclude=models.excluded(case), methods=method_specs(roots),
                      functions=function_specs())  # fmt: skip
    with _precision(dtype), torch.no_grad(), versioned_tensors(), tap:
        case.run(models, io)
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


def reference64_path(out: str | Path) -> Path:
    """Where a recording's float64 twin goes: `golden.h5` -> `golden.float64.h5`, beside it."""
    out = Path(out)
    suffix = out.suffix if out.suffix in (".h5", ".hdf5") else ""
    return out.with_name(f"{out.name[: len(out.name) - len(suffix)]}.float64{suffix or '.h5'}")


@dataclass
class PendingReference:
    """A complete float64 twin at its staging name, waiting for the float32 store it belongs to."""

    staged: Path
    path: Path
    recording_id: str

    @property
    def link(self) -> dict[str, str]:
        """What the float32 store's root attribute says about its twin (find_reference checks both)."""
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


def _record_float64_twin(out: str | Path, cases: list[CaseSpec], *, checkpoint: str | Path | None, size: str,
                         seed: int, threads: int, modules: list[str] | None, attn_implementation: str, command: str,
                         storage: StoragePolicy | None, on_case: Callable[[CaseSpec, int, int], None] | None,
                         determinism: bool = True) -> PendingReference:  # fmt: skip
    """Record the same cases with the same weights and inputs in clean float64, at a staging name that is the
    writer's own partial-file name for the twin: a recorder killed before publishing leaves nothing that the
    next recording does not clean up. Without this reference a check of the float32 store has no chained
    noise and falls back to the looser, scaled isolated noise (compare/engine.py)."""
    from ...store.reader import GoldenStore
    from ...store.writer import remove_stale_partials

    path = reference64_path(out)
    remove_stale_partials(path)
    staged = path.with_name(f"{path.name}.partial-{os.getpid()}")

    def labelled(case: CaseSpec, index: int, total: int) -> None:
        if on_case is not None:
            on_case(replace(case, name=f"{case.name} (float64 reference)"), index, total)

    record(staged, cases, dtype="float64", checkpoint=checkpoint, size=size, seed=seed, threads=threads,
           modules=modules, oracle=False, attn_implementation=attn_implementation, command=command, storage=storage,
           on_case=labelled, reference64=False, determinism=determinism)  # fmt: skip
    with GoldenStore(staged) as store:
        recording_id = store.recording_id
    return PendingReference(staged, path, recording_id)
