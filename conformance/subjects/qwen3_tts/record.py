"""Qwen3-TTS's half of the recording session (conformance/capture/session.py): where the official models come
from, which modules, methods and functions are hooked, how a case runs and what its provenance adds.

`QwenRecording` loads the official models (tiny or full-size seeded checkpoints, or a user's local checkpoint
folder) through the official `from_pretrained` path; `record()` runs the generic session on it: every call of
every hooked module streams into the store, with the isolated float64 oracle, the determinism check and the
float64 twin.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ...capture import session
from ...capture.io import CaseIO
from ...capture.recorder import FunctionSpec, MethodSpec
from ...errors import UsageError
from ...precisions import Precision
from ...store.writer import StoragePolicy
from . import checkpoints, configs
from .cases import CaseSpec
from .identity import NAME, OFFICIAL
from .official import OFFICIAL_PACKAGE, official_version

DEFAULT_SEED = 20260125
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
# The codec keys a case hooking only the codec's encoder side ("codec_encoder") leaves out: its root forward,
# decode and decoder, and the layers inside the encoder's convolution stack, whose activations are 80% of the
# encoder's bytes (the codec_encode case records them; here the stack is one module, enough to blame it).
CODEC_ENCODER_ONLY_EXCLUDES = (CODEC_PREFIX, f"{CODEC_PREFIX}:decode", f"{CODEC_PREFIX}.decoder",
                               f"{CODEC_PREFIX}.decoder.*", f"{CODEC_PREFIX}.decoder:*",
                               f"{CODEC_PREFIX}.encoder.encoder.*")  # fmt: skip

# The processed next-token scores of every generation step (sampling.py), hooked only in cases listing "logits".
PROCESSED_LOGITS = ("talker.logits_processor", "talker.code_predictor.logits_processor")
# A case listing "decoder_outline" records the codec decoder's chunked_decode but not the modules it runs: 300
# frames of every layer's activations would be 80 MB.
DECODER_OUTLINE_EXCLUDES = (CODEC_PREFIX, f"{CODEC_PREFIX}.decoder", f"{CODEC_PREFIX}.decoder.*")
# A case listing "outline" records the root's and the talker's generate calls only (its codes).
GENERATION_OUTLINE_EXCLUDES = ("(root)", "talker", "talker.*", "speaker_encoder", "speaker_encoder.*",
                               ":extract_speaker_embedding", ":generate_icl_prompt", ":mel_spectrogram")  # fmt: skip


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
    return cache / "checkpoints" / f"{NAME}-{size}-seed{seed}"


def ensure_checkpoints(size: str, seed: int, folder: Path | None = None,
                       models: tuple[str, ...] = (*configs.MODEL_TYPES, "codec")) -> CheckpointSource:  # fmt: skip
    """Build the seeded checkpoint set unless it is already there (built sets are deterministic). A set built by
    an older layout (its .complete.json names no layout, or another) or from other config values is rebuilt from
    scratch."""
    folder = folder or default_checkpoint_dir(size, seed)
    marker = folder / ".complete.json"
    wanted_tts = tuple(m for m in configs.MODEL_TYPES if m in models)
    state = json.loads(marker.read_text()) if marker.exists() else {}
    if state and (state.get("layout") != checkpoints.LAYOUT
                  or state.get("configs") != checkpoints.marker(size, seed, "float32")["configs"]):  # fmt: skip
        shutil.rmtree(folder)
        state = {}
    have = set(state.get("models", []))
    missing = [m for m in models if m not in have]
    if missing:
        with_codec = "codec" in missing or not (folder / "speech_tokenizer").exists()
        tts_types = wanted_tts if any(m in missing for m in wanted_tts) else ()
        dtype = state.get("dtype", checkpoints.default_dtype(size))
        checkpoints.build_checkpoints(size, seed, folder, model_types=tts_types, with_codec=with_codec, dtype=dtype)
        have |= set(models)
        marker.write_text(json.dumps(checkpoints.marker(size, seed, dtype, tuple(have))))
    return CheckpointSource.from_path(folder)


class OfficialModels:
    """Official models of one precision, loaded lazily from a checkpoint source and kept for reuse."""

    def __init__(self, source: CheckpointSource, dtype: str, attn_implementation: str) -> None:
        self.source = source
        self.dtype_name = dtype
        self.dtype = session.TORCH_DTYPES[dtype]
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
        waveform's decode is large and checked by the codec cases; only the encoder feeds the talker); without
        "logits", the processed scores of every step (sampling.py: as large as the logits, recorded only by the
        option cases that list "logits")."""
        excluded = [
            key for flag, key in zip(("logits", "subtalker_logits"), PROCESSED_LOGITS) if flag not in case.hooks
        ]
        if "decoder_outline" in case.hooks:  # a long decode: chunked_decode, not the modules it runs
            excluded += DECODER_OUTLINE_EXCLUDES
        if "outline" in case.hooks:  # a codes-only generation: the generate calls, not the modules they run
            excluded += GENERATION_OUTLINE_EXCLUDES
        if "codec_encoder" in case.hooks and "codec" not in case.hooks:
            excluded += CODEC_ENCODER_ONLY_EXCLUDES
        return excluded

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
        from .precision import clean_precision

        with clean_precision(torch.float64):
            yield
    else:
        yield


class QwenRecording:
    """What the recording session needs of Qwen3-TTS for one set of options: a seeded checkpoint set of a size
    (built when missing) or a local checkpoint folder, the attention implementation to load the models with."""

    subject = NAME
    official = OFFICIAL

    def __init__(self, *, size: str = "tiny", checkpoint: str | Path | None = None, seed: int = DEFAULT_SEED,
                 attn_implementation: str = "eager") -> None:  # fmt: skip
        self.requested_size = size
        self.checkpoint = checkpoint
        self.seed = seed
        self.attn = attn_implementation
        self.source: CheckpointSource | None = None
        self.size = size
        self.label = str(checkpoint) if checkpoint is not None else f"seeded {size} checkpoints"

    def prepare(self, cases: Sequence[CaseSpec]) -> None:
        if self.checkpoint is not None:
            self.source = CheckpointSource.from_path(self.checkpoint)
            marker = Path(self.checkpoint) / ".complete.json"  # a seeded set built by this tool knows its size
            self.size = json.loads(marker.read_text()).get("size", "checkpoint") if marker.exists() else "checkpoint"
        else:
            hooked_codec = {"codec"} if any("codec" in c.hooks for c in cases) else set()
            needed = tuple(sorted({c.model for c in cases} | hooked_codec))
            self.source = ensure_checkpoints(self.requested_size, self.seed, models=needed)
        self.label = self.source.label

    def _source(self) -> CheckpointSource:
        if self.source is None:
            raise RuntimeError("QwenRecording.prepare(cases) must run first")
        return self.source

    def runnable(self, case: CaseSpec) -> str | None:
        source = self._source()
        if not source.has(case.model) or ("codec" in case.hooks and source.codec_dir is None):
            return f"the checkpoint has no {case.model} model"
        return None

    def load(self, dtype: str) -> OfficialModels:
        return OfficialModels(self._source(), dtype, self.attn)

    def roots(self, models: OfficialModels, case: CaseSpec) -> dict[str, Any]:
        return models.roots(case)

    def excluded(self, case: CaseSpec) -> list[str]:
        return OfficialModels.excluded(case)

    def methods(self, roots: dict[str, Any]) -> list[MethodSpec]:
        return method_specs(roots)

    def functions(self) -> list[FunctionSpec]:
        return function_specs()

    def oracle_functions(self) -> dict[str, Callable[..., Any]]:
        from .precision import clean_mel_spectrogram

        return {":mel_spectrogram": clean_mel_spectrogram}

    def precision(self, dtype: str) -> contextlib.AbstractContextManager[Any]:
        return _precision(dtype)

    def run(self, models: OfficialModels, case: CaseSpec, io: CaseIO) -> None:
        if case.model == "codec":
            case.run(models, io)
            return
        from .settings import watch

        with watch(models.tts(case.model).model) as spy:  # what every generate call received (settings.py)
            case.run(models, io)
        io.settings.update(spy.settings())

    def provenance(self, models: OfficialModels, case: CaseSpec, roots: dict[str, Any], out: Path) -> dict[str, Any]:
        folders = models.folders(case)
        return {
            "attn_implementation": self.attn,
            "transformers_version": __import__("transformers").__version__,
            "checkpoint": {name: _provenance_path(folder, out) for name, folder in folders.items()},
            "weights_sha256": {name: checkpoints.weights_hashes(folder) for name, folder in folders.items()},
            "config": {name: _config_json(folder) for name, folder in folders.items()},
            "hooks": list(case.hooks),
            "attn_implementation_loaded": {
                prefix or "tts": checkpoints.attention_implementations(root) for prefix, root in roots.items()
            },
        }

    def software(self) -> dict[str, Any]:
        import transformers

        return {"transformers": transformers.__version__, OFFICIAL_PACKAGE: official_version()}


def record(
    out: str | Path,
    cases: Sequence[CaseSpec],
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
    on_case: Callable[[str, int, int], None] | None = None,
    on_call: Callable[[str], None] | None = None,
    on_skip: Callable[[str, str], None] | None = None,
    determinism: bool = True,
    reference64: bool = True,
    twins: Sequence[Precision] = (),
    twins_reference: str | Path | None = None,
) -> Path:
    """Record Qwen3-TTS `cases` into the golden store `out` (and, for float32 and bfloat16, its float64 twin
    `session.reference64_path(out)`): the generic session (conformance.capture.session.record) on a
    QwenRecording. Returns the path written."""
    recording = QwenRecording(size=size, checkpoint=checkpoint, seed=seed, attn_implementation=attn_implementation)
    return session.record(out, [(recording, list(cases))], dtype=dtype, threads=threads, modules=modules,
                          oracle=oracle, command=command, storage=storage, on_case=on_case, on_call=on_call,
                          on_skip=on_skip, determinism=determinism, reference64=reference64, twins=twins,
                          twins_reference=twins_reference)  # fmt: skip
