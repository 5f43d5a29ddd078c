"""The user-facing API, mirroring the official `Qwen3TTSModel` (qwen_tts/inference/qwen3_tts_model.py):
`generate_custom_voice`, `generate_voice_design`, `generate_voice_clone` and `create_voice_clone_prompt`,
text -> ids (real Qwen tokenizer) -> codes (talker + code predictor) -> waveform (the codec impl).

`run_case` runs one recorded golden case from its inputs, greedily, as the recorder ran the official API.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from . import text as text_frontend
from .tts import Qwen3TTSForConditionalGeneration

SAMPLE_RATE = 24000
# generation options a recorded case may carry as inputs (conformance's cases.GENERATION_OPTIONS)
GENERATION_OPTIONS = ("do_sample", "top_k", "top_p", "temperature", "repetition_penalty", "subtalker_dosample",
                      "subtalker_top_k", "subtalker_top_p", "subtalker_temperature", "eos_token_id")  # fmt: skip
HARD_DEFAULTS = {"do_sample": True, "top_k": 50, "top_p": 1.0, "temperature": 0.9, "repetition_penalty": 1.05,
                 "subtalker_dosample": True, "subtalker_top_k": 50, "subtalker_top_p": 1.0,
                 "subtalker_temperature": 0.9, "max_new_tokens": 2048}  # fmt: skip


@dataclass
class VoiceClonePromptItem:
    """VoiceClonePromptItem (qwen_tts/inference/qwen3_tts_model.py): one reference for voice cloning."""

    ref_code: np.ndarray | None  # (frames, codebooks)
    ref_spk_embedding: np.ndarray  # (hidden,)
    x_vector_only_mode: bool
    icl_mode: bool
    ref_text: str | None = None


def _as_list(x: Any) -> list[Any]:
    return x if isinstance(x, list) else [x]


class Qwen3TTSModel:
    """Qwen3TTSModel (qwen_tts/inference/qwen3_tts_model.py), the official wrapper's generation API, over the
    NumPy model."""

    def __init__(self, model: Qwen3TTSForConditionalGeneration, tokenizer: text_frontend.QwenTokenizer | None = None):
        self.model = model
        self.tokenizer = tokenizer or text_frontend.QwenTokenizer(model.name_or_path)
        self.generate_defaults = model.generate_config or {}

    # -- helpers ----------------------------------------------------------------------------------------------------
    def _tokenize_texts(self, texts: list[str]) -> list[np.ndarray]:
        return [self.tokenizer(t) for t in texts]

    def _languages(self, language: Any, count: int) -> list[str]:
        if isinstance(language, list):
            languages = language
        else:
            languages = [language] * count if language is not None else ["Auto"] * count
        if len(languages) == 1 and count > 1:
            languages = languages * count
        supported = {str(x).lower() for x in self.model.get_supported_languages()}
        bad = [lang for lang in languages if lang is None or str(lang).lower() not in supported]
        if bad:
            raise ValueError(f"Unsupported languages: {bad}. Supported: {sorted(supported)}")
        return languages

    def _merge_generate_kwargs(self, **kwargs: Any) -> dict[str, Any]:
        """User value if given (not None), else generation_config.json's, else the hard default."""
        merged = {k: v for k, v in kwargs.items() if k not in HARD_DEFAULTS}
        for name, default in HARD_DEFAULTS.items():
            value = kwargs.get(name)
            merged[name] = value if value is not None else self.generate_defaults.get(name, default)
        return merged

    def _decode(self, codes_list: list[np.ndarray]) -> list[np.ndarray]:
        from .codec import decode_codes

        codec = self.model.speech_tokenizer
        if codec is None:
            raise RuntimeError("the model has no codec loaded (use tts.load_tts, not load_model)")
        if len(codes_list) == 1:
            return [decode_codes(codec, codes_list[0])]
        # the official Qwen3TTSTokenizer.decode: one batch, right-padded with -1, each cut to its own length
        frames = max(len(c) for c in codes_list)
        padded = np.full((len(codes_list), frames, codes_list[0].shape[-1]), -1, dtype=np.int64)
        for i, codes in enumerate(codes_list):
            padded[i, : len(codes)] = codes
        return [np.asarray(w, dtype=np.float32) for w in codec.decode(padded, return_dict=True)["audio_values"]]

    def _require(self, model_type: str, what: str) -> None:
        if self.model.tts_model_type != model_type:
            raise ValueError(f"a {self.model.tts_model_type} model does not support {what}")

    # -- the three modes ----------------------------------------------------------------------------------------------
    def generate_custom_voice(self, text: Any, speaker: Any, language: Any = None, instruct: Any = None,
                              non_streaming_mode: bool = True, **kwargs: Any) -> tuple[list[np.ndarray], int]:  # fmt: skip
        self._require("custom_voice", "generate_custom_voice")
        texts = _as_list(text)
        languages = self._languages(language, len(texts))
        speakers = _as_list(speaker)
        if self.model.tts_model_size in "0b6":  # the 0.6B model ignores instruct (official: a substring test)
            instruct = None
        if isinstance(instruct, list):
            instructs = instruct
        else:
            instructs = [instruct] * len(texts) if instruct is not None else [""] * len(texts)
        if len(speakers) == 1 and len(texts) > 1:
            speakers = speakers * len(texts)
        if len(instructs) == 1 and len(texts) > 1:
            instructs = instructs * len(texts)
        if not len(texts) == len(languages) == len(speakers) == len(instructs):
            raise ValueError("Batch size mismatch between text, language, speaker and instruct")
        supported = {s.lower() for s in self.model.get_supported_speakers()}
        bad = [s for s in speakers if s not in (None, "") and str(s).lower() not in supported]
        if bad:
            raise ValueError(f"Unsupported speakers: {bad}. Supported: {sorted(supported)}")
        input_ids = self._tokenize_texts([text_frontend.build_assistant_text(t) for t in texts])
        instruct_ids = [None if not ins else self._tokenize_texts([text_frontend.build_instruct_text(ins)])[0]
                        for ins in instructs]  # fmt: skip
        codes_list, _ = self.model.generate(input_ids=input_ids, instruct_ids=instruct_ids, languages=languages,
                                            speakers=speakers, non_streaming_mode=non_streaming_mode,
                                            **self._merge_generate_kwargs(**kwargs))  # fmt: skip
        self.last_codes = codes_list
        return self._decode(codes_list), SAMPLE_RATE

    def generate_voice_design(self, text: Any, instruct: Any, language: Any = None, non_streaming_mode: bool = True,
                              **kwargs: Any) -> tuple[list[np.ndarray], int]:  # fmt: skip
        self._require("voice_design", "generate_voice_design")
        texts = _as_list(text)
        languages = self._languages(language, len(texts))
        instructs = _as_list(instruct)
        if len(instructs) == 1 and len(texts) > 1:
            instructs = instructs * len(texts)
        if not len(texts) == len(languages) == len(instructs):
            raise ValueError("Batch size mismatch between text, language and instruct")
        input_ids = self._tokenize_texts([text_frontend.build_assistant_text(t) for t in texts])
        instruct_ids = [None if not ins else self._tokenize_texts([text_frontend.build_instruct_text(ins)])[0]
                        for ins in instructs]  # fmt: skip
        codes_list, _ = self.model.generate(input_ids=input_ids, instruct_ids=instruct_ids, languages=languages,
                                            non_streaming_mode=non_streaming_mode,
                                            **self._merge_generate_kwargs(**kwargs))  # fmt: skip
        self.last_codes = codes_list
        return self._decode(codes_list), SAMPLE_RATE

    def create_voice_clone_prompt(self, ref_audio: Any, ref_text: Any = None,
                                  x_vector_only_mode: Any = False) -> list[VoiceClonePromptItem]:  # fmt: skip
        """Reference codes (codec encode) and the x-vector of each reference (audio, sample rate)."""
        from .codec import encode_waveform

        self._require("base", "create_voice_clone_prompt")
        audios = _as_list(ref_audio)
        ref_texts = ref_text if isinstance(ref_text, list) else [ref_text] * len(audios)
        xvecs = x_vector_only_mode if isinstance(x_vector_only_mode, list) else [x_vector_only_mode] * len(audios)
        if not len(audios) == len(ref_texts) == len(xvecs):
            raise ValueError("Batch size mismatch between ref_audio, ref_text and x_vector_only_mode")
        normalized = []
        for audio in audios:
            if not (isinstance(audio, tuple) and len(audio) == 2):
                raise TypeError("pass reference audio as (waveform, sample_rate)")
            wav = np.asarray(audio[0]).astype(np.float32)
            normalized.append((np.mean(wav, axis=-1).astype(np.float32) if wav.ndim > 1 else wav, int(audio[1])))
        ref_codes = [encode_waveform(self.model.speech_tokenizer, wav, sr) for wav, sr in normalized]
        items = []
        for (wav, sr), code, rtext, xvec_only in zip(normalized, ref_codes, ref_texts, xvecs):
            if not xvec_only and not rtext:
                raise ValueError("ref_text is required when x_vector_only_mode=False (ICL mode)")
            if sr != self.model.speaker_encoder_sample_rate:
                raise NotImplementedError("resampling the reference (official: librosa.resample) is not implemented")
            embedding = self.model.extract_speaker_embedding(audio=wav, sr=self.model.speaker_encoder_sample_rate)
            items.append(VoiceClonePromptItem(ref_code=None if xvec_only else code, ref_spk_embedding=embedding,
                                              x_vector_only_mode=bool(xvec_only), icl_mode=not xvec_only,
                                              ref_text=rtext))  # fmt: skip
        return items

    def generate_voice_clone(self, text: Any, language: Any = None, ref_audio: Any = None, ref_text: Any = None,
                             x_vector_only_mode: Any = False, voice_clone_prompt: list[VoiceClonePromptItem] | None = None,
                             non_streaming_mode: bool = False, **kwargs: Any) -> tuple[list[np.ndarray], int]:  # fmt: skip
        self._require("base", "generate_voice_clone")
        texts = _as_list(text)
        languages = self._languages(language, len(texts))
        items = voice_clone_prompt or self.create_voice_clone_prompt(ref_audio, ref_text, x_vector_only_mode)
        if len(items) == 1 and len(texts) > 1:
            items = items * len(texts)
        if len(items) != len(texts):
            raise ValueError("Batch size mismatch between prompt and text")
        prompt = {"ref_code": [it.ref_code for it in items], "ref_spk_embedding": [it.ref_spk_embedding for it in items],
                  "x_vector_only_mode": [it.x_vector_only_mode for it in items],
                  "icl_mode": [it.icl_mode for it in items]}  # fmt: skip
        input_ids = self._tokenize_texts([text_frontend.build_assistant_text(t) for t in texts])
        ref_ids = [None if not it.ref_text else self._tokenize_texts([text_frontend.build_ref_text(it.ref_text)])[0]
                   for it in items]  # fmt: skip
        codes_list, _ = self.model.generate(input_ids=input_ids, ref_ids=ref_ids, voice_clone_prompt=prompt,
                                            languages=languages, non_streaming_mode=non_streaming_mode,
                                            **self._merge_generate_kwargs(**kwargs))  # fmt: skip
        self.last_codes = codes_list
        # the reference frames are decoded in front of the new ones, then cut off proportionally
        full = [
            codes if ref is None else np.concatenate([ref, codes], axis=0)
            for ref, codes in zip(prompt["ref_code"], codes_list)
        ]
        wavs = self._decode(full)
        out = []
        for ref, codes, wav in zip(prompt["ref_code"], full, wavs):
            if ref is None:
                out.append(wav)
            else:
                out.append(wav[int(ref.shape[0] / max(codes.shape[0], 1) * wav.shape[0]) :])
        return out, SAMPLE_RATE


def run_case(tts_root: Qwen3TTSForConditionalGeneration, model_type: str, inputs: dict[str, Any],
             generator: Any = None) -> dict[str, Any]:  # fmt: skip
    """One golden case from its recorded inputs through the official API's path, greedy unless the case recorded
    sampling options (then `generator` draws the tokens: a numpy Generator, or generation.ReplayTokens to feed
    the golden's sampled tokens back).
    Returns {"codes": (frames, codebooks), "waveform": float32 samples, "sample_rate": 24000}."""
    api = Qwen3TTSModel(tts_root)
    greedy = {"do_sample": False, "subtalker_dosample": False}
    common = {"non_streaming_mode": bool(inputs["non_streaming_mode"]), "max_new_tokens": int(inputs["max_new_tokens"]),
              **greedy}  # fmt: skip
    for name in GENERATION_OPTIONS:  # the options a case recorded (greedy and the config's values otherwise)
        if name in inputs:
            value = np.asarray(inputs[name]).item()
            common[name] = value
    if generator is not None:
        common["generator"] = generator
    model_type = model_type or tts_root.tts_model_type
    if model_type == "custom_voice":
        wavs, sr = api.generate_custom_voice(text=inputs["text"], speaker=inputs["speaker"], language=inputs["language"],
                                             instruct=inputs.get("instruct"), **common)  # fmt: skip
    elif model_type == "voice_design":
        wavs, sr = api.generate_voice_design(text=inputs["text"], instruct=inputs["instruct"], language=inputs["language"],
                                             **common)  # fmt: skip
    elif model_type == "base":
        ref_audio = (np.asarray(inputs["ref_audio"]), SAMPLE_RATE)
        wavs, sr = api.generate_voice_clone(text=inputs["text"], language=inputs["language"], ref_audio=ref_audio,
                                            ref_text=inputs.get("ref_text"),
                                            x_vector_only_mode=bool(inputs.get("x_vector_only_mode", False)), **common)  # fmt: skip
    else:
        raise ValueError(f"unknown model type {model_type!r}")
    return {"codes": api.last_codes[0], "waveform": wavs[0], "sample_rate": sr}
