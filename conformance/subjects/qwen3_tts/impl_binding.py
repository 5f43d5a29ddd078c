"""The NumPy implementation (`impl/qwen3_tts`) as a check candidate. No torch here.

Isolated checks need no mapping: the impl's components live at the official module paths, so a golden
call `talker.model.layers.3.mlp#7` is replayed by looking up `layers.3.mlp` below the impl's talker and
calling it with the recorded args and kwargs (`key:method` calls the method, `:function` the impl's
version of a module-level function). Chained checks run a whole case from its recorded inputs through
the impl's mirror of the official API, with the impl's tap reporting every call to the engine.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ...compare.candidate import Candidate, NotCovered, Sink, check_call
from ...compare.provenance import imported_versions, package_label, package_provenance
from ...errors import StoreError
from ...store.reader import Case, GoldenStore
from ...store.schema import CallRecord

CODEC_PREFIX = "speech_tokenizer"
PREDICTOR_GENERATE = "talker.code_predictor:generate"
IMPL_PACKAGE = "impl.qwen3_tts"
_NP_DTYPES: dict[str, Any] = {"float32": np.float32, "float64": np.float64}


def _np_dtype(name: str) -> Any:
    """numpy's dtype of a compute precision; bfloat16 is ml_dtypes' (products accumulate in float32)."""
    if name == "bfloat16":
        import ml_dtypes

        return ml_dtypes.bfloat16
    return _NP_DTYPES[name]


def _cast(value: Any, dtype: Any) -> Any:
    """Golden float inputs in the compute dtype (a bfloat16 port receives bfloat16 activations)."""
    if isinstance(value, np.ndarray) and value.dtype.kind == "f":
        return value.astype(dtype)
    if isinstance(value, dict):
        return {k: _cast(v, dtype) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_cast(v, dtype) for v in value)
    return value


def _widen(value: Any) -> Any:
    """bfloat16 results as float32 (exact) for the engine, which reads numpy's own dtypes."""
    if isinstance(value, np.ndarray) and value.dtype.name == "bfloat16":
        return value.astype(np.float32)
    if isinstance(value, dict):
        return {k: _widen(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_widen(v) for v in value)
    return value


def checkpoint_folder(store: GoldenStore, case: Case, name: str, override: Path | None = None) -> Path:
    """Where the weights of a case live: `--checkpoint` if given, else the provenance path (relative to
    the store's directory for committed goldens)."""
    if override is not None:
        folder = override / name if (override / name / "config.json").exists() else override
        return folder
    recorded = case.provenance.get("checkpoint", {}).get(name)
    if recorded is None:
        raise StoreError(f"case {case.name!r} names no checkpoint for {name}", path=store.path)
    folder = Path(recorded)
    if not folder.is_absolute():
        folder = store.path.parent / folder
    if not (folder / "config.json").exists():
        raise StoreError(f"the checkpoint of case {case.name!r} is not at {folder} (pass --checkpoint)",
                         path=store.path)  # fmt: skip
    return folder


class ImplCandidate(Candidate):
    name = "impl"

    def __init__(self, dtype: str | None = None, checkpoint: Path | None = None) -> None:
        self.forced_dtype = dtype
        self.checkpoint = checkpoint
        self.roots: dict[str, Any] = {}
        self.functions: dict[str, Callable[..., Any]] = {}
        self._loaded: dict[tuple[str, str], Any] = {}

    @property
    def description(self) -> str:
        package = package_provenance(IMPL_PACKAGE)
        return f"impl ({package_label(package)}, NumPy {np.__version__}, {self.dtype or 'golden dtype'})"

    def provenance(self) -> dict[str, Any]:
        return {"kind": self.name, "label": self.description, "package": package_provenance(IMPL_PACKAGE),
                "conformance": __import__("conformance").__version__, "libraries": imported_versions(("numpy",)),
                "dtype": self.dtype or self.forced_dtype}  # fmt: skip

    # -- loading --------------------------------------------------------------------------------------
    def prepare(self, store: GoldenStore, case: Case) -> None:
        self.dtype = self.forced_dtype or case.dtype or "float32"
        dtype = _np_dtype(self.dtype)
        model = case.provenance.get("model", "codec")
        self.roots = {}
        codec_mod = importlib.import_module("impl.qwen3_tts.codec")
        # mirror the attention implementation the golden was recorded with (masks and weights differ)
        attn = str(case.provenance.get("attn_implementation", "eager"))
        if model == "codec":
            folder = checkpoint_folder(store, case, "speech_tokenizer", self.checkpoint)
            self.roots[CODEC_PREFIX] = self._load(("codec", str(folder), self.dtype, attn),
                                                  lambda: codec_mod.load_codec(folder, dtype, attn))  # fmt: skip
        else:
            tts_mod = importlib.import_module("impl.qwen3_tts.tts")
            folder = checkpoint_folder(store, case, model, self.checkpoint)
            tts = self._load(("tts", str(folder), self.dtype, attn), lambda: tts_mod.load_tts(folder, dtype, attn))
            self.roots[""] = tts
            self.roots[CODEC_PREFIX] = tts.speech_tokenizer
            self.functions = dict(getattr(tts_mod, "FUNCTIONS", {}))

    def _load(self, key: tuple[str, ...], build: Callable[[], Any]) -> Any:
        if key not in self._loaded:
            self._loaded[key] = build()
        return self._loaded[key]

    # -- isolated -------------------------------------------------------------------------------------
    def _resolve(self, key: str) -> Callable[..., Any] | None:
        if key.startswith(":") and key in self.functions:
            return self.functions[key]
        path, _, method = key.partition(":")
        path = "" if path == "(root)" else path
        for prefix, root in self.roots.items():
            if prefix and not (path == prefix or path.startswith(prefix + ".")):
                continue
            rest = path[len(prefix) + 1 :] if prefix and path != prefix else ("" if prefix else path)
            try:
                module = root.get(rest)
            except (AttributeError, IndexError, TypeError):
                continue
            if not method:
                return module
            target = getattr(module, method, None)
            return target if callable(target) else None
        return None

    def covers(self, call: CallRecord) -> bool:
        return self._resolve(call.key) is not None

    def run_isolated(self, case: Case, call: CallRecord, args: list[Any], kwargs: dict[str, Any]) -> Any:
        target = self._resolve(call.key)
        if target is None:
            raise NotCovered(call.key)
        check_call(target, args, kwargs)
        tokens = sampled_tokens(case, call, kwargs)
        if tokens is not None and "generator" not in kwargs:
            from impl.common.generation import ReplayTokens

            kwargs = {**kwargs, "generator": ReplayTokens(tokens)}
        if self.dtype == "bfloat16":
            dtype = _np_dtype(self.dtype)
            return _widen(target(*_cast(list(args), dtype), **_cast(dict(kwargs), dtype)))
        return target(*args, **kwargs)

    # -- chained --------------------------------------------------------------------------------------
    def can_chain(self, case: Case) -> bool:
        return case.provenance.get("family") in RUNNERS

    def run_chained(self, case: Case, sink: Sink) -> None:
        from impl.qwen3_tts import nn

        runner = RUNNERS.get(case.provenance.get("family", ""))
        if runner is None:
            raise NotCovered(case.name)
        if self.dtype == "bfloat16":
            inner = sink

            def sink(key: str, phase: str, args: tuple[Any, ...], kwargs: dict[str, Any], outputs: Any) -> None:
                inner(key, phase, _widen(args), _widen(kwargs), _widen(outputs))

        with nn.tapping(sink):
            runner(self, case)


def _run_codec_decode(candidate: ImplCandidate, case: Case) -> None:
    from impl.qwen3_tts import codec

    tokenizer = candidate.roots[CODEC_PREFIX]
    codes = case.input("codes")
    names = case.input_names()
    if "chunk_size" in names or "chunked" in names:  # sizes the case did not pass are the method's defaults
        sizes = {name: int(case.input(name)) for name in ("chunk_size", "left_context_size") if name in names}
        tokenizer.decoder.chunked_decode(np.swapaxes(codes, 1, 2), **sizes)
    else:
        codec.decode_codes(tokenizer, codes[0])


def _run_codec_encode(candidate: ImplCandidate, case: Case) -> None:
    from impl.qwen3_tts import codec

    codec.encode_waveform(candidate.roots[CODEC_PREFIX], case.input("waveform"), 24000)


def _run_speaker_encoder(candidate: ImplCandidate, case: Case) -> None:
    candidate.roots[""].extract_speaker_embedding(case.input("waveform"), 24000)


def _run_generation(candidate: ImplCandidate, case: Case) -> None:
    from impl.qwen3_tts import pipeline

    inputs = {name: case.input(name) for name in case.input_names()}
    from impl.common.generation import ReplayTokens

    tokens = replay_stream(case, bool(np.asarray(inputs.get("do_sample", False))),
                           bool(np.asarray(inputs.get("subtalker_dosample", False))))  # fmt: skip
    pipeline.run_case(candidate.roots[""], case.provenance.get("model", ""), inputs,
                      None if tokens is None else ReplayTokens(tokens))  # fmt: skip


def sampled_tokens(case: Case, call: CallRecord, kwargs: dict[str, Any]) -> np.ndarray | None:
    """The golden tokens an isolated replay of a sampling call must draw (teacher forcing of the random
    generator): a `generate` that samples replays its own tokens (the root's and the talker's: the whole
    stream), a talker step (its forward runs the code predictor's generate of the frame before) that
    predictor's tokens. None for a call that does not sample."""
    talker, predictor = bool(kwargs.get("do_sample")), bool(kwargs.get("subtalker_dosample"))
    if call.key == PREDICTOR_GENERATE:
        return replay_stream(case, talker, False, call.call) if talker else None
    if call.key.endswith(":generate"):
        return replay_stream(case, talker, predictor)
    if call.key == "talker" and call.call > 0 and predictor:
        return replay_stream(case, False, True, call.call - 1)
    return None


def replay_stream(case: Case, talker: bool, predictor: bool, predictor_call: int | None = None) -> np.ndarray | None:
    """For a sampled generation, the golden's sampled tokens (B, draws) in the order the official generate drew
    them: the talker's token of step 0, then per frame the code predictor's tokens and the talker's next token
    (each only when that generate samples); with `predictor_call`, the tokens of that one code predictor
    generate. None when nothing samples."""
    if not (talker or predictor):
        return None
    if predictor_call is not None:
        return np.asarray(case.tensor(PREDICTOR_GENERATE, predictor_call, "outputs/sequences"))
    sequences = case.tensor("talker:generate", 0, "outputs/sequences")  # (B, steps)
    predicted = [case.tensor(PREDICTOR_GENERATE, call, "outputs/sequences")
                 for call in range(sequences.shape[1]) if case.has_call(PREDICTOR_GENERATE, call)]  # fmt: skip
    stream = [sequences[:, :1]] if talker else []
    for frame, codes in enumerate(predicted):  # codes (B, G - 1) of frame `frame`
        if predictor:
            stream.append(codes)
        if talker and frame + 1 < sequences.shape[1]:
            stream.append(sequences[:, frame + 1 : frame + 2])
    return np.concatenate(stream, axis=1)


RUNNERS: dict[str, Callable[[ImplCandidate, Case], None]] = {
    "codec_decode": _run_codec_decode,
    "codec_encode": _run_codec_encode,
    "speaker_encoder": _run_speaker_encoder,
    "generation": _run_generation,
    "end_to_end": _run_generation,
}
