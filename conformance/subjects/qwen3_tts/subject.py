"""Qwen3-TTS as a subject: everything the generic rooms ask of it, through the registry (conformance.subjects).

Importing this module needs numpy and h5py only: recording, dumping and the candidates import torch, the
official package or impl/ when they are used.

* Tokens: the official `generate` returns a list of (frames, codebooks) code tensors, recorded as
  `:generate#0/outputs/0/0`; a codec encode's codes are `speech_tokenizer:encode#0/outputs/audio_codes/0`.
  Codebook 0 of frame f is chosen by the talker's `codec_head` call f (call 0 is the prefill), codebook g >= 1
  by the code predictor's `lm_head.{g-1}` call f (each head runs once per frame).
* Whole-model steps (`model_step`): the talker's forward `talker#f` computes the logits of codebook 0 of frame f
  from the golden history (KV cache and inputs) through every layer, the code predictor's forward
  `talker.code_predictor#c` those of codebook 1 + c mod (G - 1) of frame c div (G - 1). Their isolated replay
  is teacher forcing of the whole model, not only of its logits head.
* Signals: a case's `waveform` output is audio at the codec's output sample rate.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import UsageError
from ...store.reader import Case, GoldenStore
from .. import LogitsCall, SequenceAxis, Signal, Subject, TokenLayout
from .identity import NAME, OFFICIAL, TITLE
from .signals import SAMPLE_RATE

CODES = (":generate", 0, "outputs/0/0")
ENCODED = ("speech_tokenizer:encode", 0, "outputs/audio_codes/0")
CODE_AXES = ("frame", "codebook")
TOKEN_LOGITS = ("talker.codec_head", "talker.code_predictor.lm_head.*")
# whole-model steps: (module key, its logits output) -> codebook 0 (the talker) or 1.. (the code predictor)
MODEL_LOGITS = {("talker", "outputs/logits"): "talker", ("talker.code_predictor", "outputs/logits"): "code_predictor"}
KEPT = (":generate", "speech_tokenizer:decode", "speech_tokenizer.decoder:chunked_decode", ":extract_speaker_embedding",
        "speech_tokenizer:encode")  # fmt: skip
# A voice-clone reference encoded into another number of frames changes the prompt's length: these tensors hold it
PROMPT_AXES = ((":generate#*/kwargs/voice_clone_prompt/ref_code/*", 0), (":generate_icl_prompt#*/kwargs/ref_code", 0),
               (":generate_icl_prompt#*/outputs/0", 1), ("talker#0/kwargs/inputs_embeds", 1),
               ("talker#0/kwargs/position_ids", -1), ("talker#0/kwargs/attention_mask", -1),
               ("talker#0/kwargs/cache_position", 0), ("talker#0/outputs/logits", 1),
               ("talker#0/outputs/hidden_states/*", 1), ("talker#0/outputs/past_key_values/*", 2))  # fmt: skip
SAMPLE_RATE_KEYS = ("output_sample_rate", "sample_rate", "sampling_rate")


def _recorded(case: Case, location: tuple[str, int, str]) -> bool:
    key, call, role = location
    if not case.has_call(key, call):
        return False
    try:
        case.leaf(key, call, role)
    except Exception:
        return False
    return True


class Qwen3TTSSubject(Subject):
    name = NAME
    title = TITLE
    official = OFFICIAL
    token_logits = TOKEN_LOGITS

    # -- cases, recording, checkpoints, goldens, dumps ------------------------------------------------------
    def cases(self) -> Sequence[Any]:
        from .cases import CASES

        return CASES

    def recording(self, *, size: str = "tiny", checkpoint: str | Path | None = None, seed: int | None = None,
                  attn_implementation: str = "eager") -> Any:  # fmt: skip
        from .record import DEFAULT_SEED, QwenRecording

        return QwenRecording(size=size, checkpoint=checkpoint, seed=DEFAULT_SEED if seed is None else seed,
                             attn_implementation=attn_implementation)  # fmt: skip

    def record(self, out: str | Path, cases: Sequence[Any], **options: Any) -> Path:
        from .record import record

        return record(out, cases, **options)

    def checkpoints(self, folder: Path | None = None, *, size: str = "tiny", seed: int | None = None) -> Path:
        from .record import DEFAULT_SEED, default_checkpoint_dir, ensure_checkpoints

        seed = DEFAULT_SEED if seed is None else seed
        folder = folder or default_checkpoint_dir(size, seed)
        ensure_checkpoints(size, seed, folder=folder)
        return folder

    def write_checkpoint(self, out: Path, *, size: str = "tiny", seed: int | None = None, dtype: str | None = None,
                         variant: str | None = None) -> list[Path]:  # fmt: skip
        from .checkpoints import DTYPES, export_checkpoint
        from .configs import MODEL_TYPES, SIZES
        from .record import DEFAULT_SEED

        if size not in SIZES:
            raise UsageError(f"unknown size {size!r} for {self.name} ({', '.join(SIZES)})")
        if dtype is not None and dtype not in DTYPES:
            raise UsageError(f"checkpoint dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
        if variant is not None and variant not in MODEL_TYPES:
            raise UsageError(f"unknown variant {variant!r} for {self.name} ({', '.join(MODEL_TYPES)})")
        return export_checkpoint(out, size=size, seed=DEFAULT_SEED if seed is None else seed, dtype=dtype,
                                 variant=variant)  # fmt: skip

    def make_goldens(self, folder: Path, **options: Any) -> dict[str, Any]:
        from .goldens import make_goldens

        return make_goldens(folder, **options)

    def dump(self, store: GoldenStore, cases: list[str] | None, out: Path, **options: Any) -> list[Path]:
        import importlib.util

        for needed in ("torch", OFFICIAL.import_name):
            try:
                found = importlib.util.find_spec(needed) is not None
            except (ImportError, ValueError):  # ValueError: set to None in sys.modules (an import blocked)
                found = False
            if not found:
                raise UsageError(f"dump runs a torch implementation: it needs torch and an importable "
                                 f"{OFFICIAL.import_name} (the official package or a fork; see docs/forks.md)")  # fmt: skip
        from .dump import dump_cases

        return dump_cases(store, cases, out, **options)

    # -- candidates ------------------------------------------------------------------------------------------
    def candidate(self, spec: str, *, checkpoint: Path | None = None) -> Any:
        if spec == "impl" or spec.startswith("impl:"):
            dtype = spec.partition(":")[2] or None
            if dtype not in (None, "float32", "float64", "bfloat16"):
                raise UsageError(f"impl dtype must be float32, float64 or bfloat16, not {dtype!r}")
            from .impl_binding import ImplCandidate

            return ImplCandidate(dtype, checkpoint)
        if spec == "official" or spec.startswith("official:"):
            import importlib.util

            if importlib.util.find_spec("torch") is None:  # the checking side itself never imports torch
                raise UsageError("the official candidate needs torch and qwen-tts (pip install 'conformance[record]')")
            from .official_binding import OfficialCandidate, parse_spec

            return OfficialCandidate(checkpoint=checkpoint, **parse_spec(spec))
        raise UsageError(f"unknown candidate {spec!r} (impl[:float32|float64|bfloat16], official[:...], dump:PATH)")

    # -- tokens ----------------------------------------------------------------------------------------------
    def tokens(self, case: Case) -> TokenLayout | None:
        for location in (CODES, ENCODED):
            if _recorded(case, location):
                return TokenLayout(location, CODE_AXES)
        return None

    def logits_for(self, case: Case, index: tuple[int, ...]) -> LogitsCall | None:
        frame, codebook = (int(i) for i in index)
        key = "talker.codec_head" if codebook == 0 else f"talker.code_predictor.lm_head.{codebook - 1}"
        return LogitsCall(key, frame) if case.has_call(key, frame) else None

    def model_step(self, case: Case, key: str, call: int, role: str) -> tuple[int, ...] | None:
        model = MODEL_LOGITS.get((key, role))
        if model is None:
            return None
        if model == "talker":
            return call, 0
        heads = [name for name in case.keys() if name.startswith("talker.code_predictor.lm_head.")]  # noqa: SIM118
        steps = len(heads)  # G - 1 code predictor steps per frame
        return (call // steps, 1 + call % steps) if steps else None

    # -- the report ------------------------------------------------------------------------------------------
    def signals(self, case: Case) -> list[Signal]:
        if "waveform" not in case.output_names():
            return []
        return [Signal("waveform", self.sample_rate(case))]

    @staticmethod
    def sample_rate(case: Case) -> int:
        """The case's `sample_rate` output, else the codec's output rate in its recorded config (the tiny
        checkpoints keep 24 kHz), else 24 kHz."""
        try:
            if "sample_rate" in case.output_names():
                return int(np.asarray(case.output("sample_rate")).reshape(-1)[0])
        except Exception:
            pass
        found: list[int] = []

        def walk(node: Any) -> None:
            if isinstance(node, dict):
                for key, value in node.items():
                    if key in SAMPLE_RATE_KEYS and isinstance(value, int):
                        found.append(value)
                    walk(value)

        walk(case.provenance.get("config"))
        return found[0] if found else SAMPLE_RATE

    def keep(self, case: Case) -> list[str]:
        return list(KEPT)

    # -- case semantics ------------------------------------------------------------------------------------
    def sequence_axes(self, case: Case) -> list[SequenceAxis]:
        """Frames: the codes' axis 0 (generated, or a reference encoded by the codec), the waveform's samples (one
        codec frame is `len(waveform) / frames` samples)."""
        axes = [SequenceAxis("outputs/codes", 0), SequenceAxis(f"{CODES[0]}#*/outputs/*", 0),
                SequenceAxis("speech_tokenizer:encode#*/outputs/audio_codes/*", 0)]  # fmt: skip
        axes += [SequenceAxis(name, axis) for name, axis in PROMPT_AXES]
        names = case.output_names()
        if "waveform" in names:
            wave = np.asarray(case.output("waveform"))
            frames = self._frames(case)
            per_step = wave.shape[-1] // frames if frames and wave.shape[-1] % frames == 0 else 1
            axes.append(SequenceAxis("outputs/waveform", -1, per_step))
        return axes

    @staticmethod
    def _frames(case: Case) -> int | None:
        for name in ("codes",):
            if name in case.output_names():
                return int(np.asarray(case.output(name)).shape[0])
        if "codes" in case.input_names():
            return int(np.asarray(case.input("codes")).shape[-2])
        return None

    def extra_steps(self, case: Case) -> tuple[int, str] | None:
        """The official `generate` returns max_new_tokens - 1 frames when no end-of-speech token stops it (the
        prefill's forward has no codes: modeling_qwen3_tts.py, `codec_ids = None` in the prefill branch of the
        talker's forward, and `generate` keeps only the steps whose codes are not None). Ports commonly return
        max_new_tokens frames: one frame more, when the golden hit the cap, is that convention, not a divergence."""
        if "max_new_tokens" not in case.input_names():
            return None
        frames = self._frames(case)
        cap = int(np.asarray(case.input("max_new_tokens")))
        if frames is None or frames != cap - 1:
            return None
        return 1, (f"the official max_new_tokens={cap} yields {cap - 1} frames (the prefill step makes no codes); "
                   f"a port that yields {cap} follows the other convention")  # fmt: skip

    def reference_from_candidate(self, store: GoldenStore, case: Case, outputs: dict[str, Any],
                                 checkpoint: Path | None = None) -> dict[str, Any]:  # fmt: skip
        """Teacher-forced talker and code predictor on the candidate's codes, and the official decode of them
        (own_codes.py). Generation cases only; needs torch and the official package."""
        if case.provenance.get("family") not in ("generation", "end_to_end"):
            return {}
        import importlib.util

        if importlib.util.find_spec("torch") is None or importlib.util.find_spec(OFFICIAL.import_name) is None:
            raise UsageError("--reference-from-candidate re-runs the official model: it needs torch and qwen-tts "
                             "(pip install 'conformance[record]')")  # fmt: skip
        try:
            from .own_codes import reference_from_candidate
        except ImportError as exc:
            raise UsageError(f"--reference-from-candidate re-runs the official model, which cannot be imported "
                             f"here: {exc}") from None  # fmt: skip
        return reference_from_candidate(store, case, outputs, checkpoint)

    def semantics(self, case: Case) -> dict[str, str]:
        """text_layout (streaming | non_streaming), voice (custom_voice | voice_design | x_vector | in_context),
        frame_count ("max_new_tokens - 1", the official convention) for generation cases; the family otherwise."""
        out = {"family": str(case.provenance.get("family", ""))}
        values = case.provenance.get("input_values", {})
        if "non_streaming_mode" in values:
            out["text_layout"] = "non_streaming" if values["non_streaming_mode"] else "streaming"
        model = str(case.provenance.get("model", ""))
        if model == "base" and "x_vector_only_mode" in values:
            out["voice"] = "x_vector" if values["x_vector_only_mode"] else "in_context"
        elif model in ("custom_voice", "voice_design"):
            out["voice"] = model
        if "max_new_tokens" in values:
            out["frame_count"] = "max_new_tokens - 1"
        return out


SUBJECT = Qwen3TTSSubject()
