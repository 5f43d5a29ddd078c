"""The root model, Qwen3TTSForConditionalGeneration, bound at path "": prompt construction for every
generation mode, the speaker x-vector, and loading a checkpoint folder in the official layout.

Prompt layout built by `generate` (modeling_qwen3_tts.py, `Qwen3TTSForConditionalGeneration.generate`),
each row the sum of a text-side and a codec-side embedding:

    [instruct text]                                  (voice design / instruct; text side only)
    role: text(<|im_start|>assistant\\n)              (input_ids[:, :3]; text side only)
    tts_pad + codec(think|nothink, think_bos, [language], think_eos)
    tts_pad + speaker embedding                       (speaker id, or the x-vector in voice clone)
    tts_bos + codec(pad)
    then, per mode:
      streaming:      text(first token) + codec(bos); the rest of the text (input_ids[:, 4:-5]) + tts_eos
                      is fed one row per generated frame ("trailing text"), then tts_pad
      non-streaming:  text(input_ids[:, 3:-5]) + tts_eos, each + codec(pad); then tts_pad + codec(bos);
                      trailing text is tts_pad only
      voice clone ICL: text(ref + text) + tts_eos and codec(bos, reference frames) (each frame the sum of
                      its codebook embeddings), overlapped (streaming) or one after the other
                      (non-streaming) by `generate_icl_prompt`

input_ids are `<|im_start|>assistant\\nTEXT<|im_end|>\\n<|im_start|>assistant\\n`: [:3] is the role and
[3:-5] the text (the last five tokens are <|im_end|> \\n <|im_start|> assistant \\n).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..common.config import Config
from ..common.nn import Module, tapped
from ..common.weights import load_checkpoint_tensors, load_config, load_weights
from .speaker import SpeakerEncoder, SpeakerEncoderConfig, mel_spectrogram
from .talker import TalkerConfig, TalkerForConditionalGeneration

# `:mel_spectrogram` resolves to the root's dtype-aware `mel_spectrogram` method (see there): a free
# function cannot know that a float64 model computes the mel of float32 audio in float64.
FUNCTIONS: dict[str, Any] = {}


@dataclass
class TTSConfig(Config):
    """Qwen3TTSConfig (qwen_tts/core/models/configuration_qwen3_tts.py), the fields used."""

    talker_config: Any = None  # dict from config.json, TalkerConfig after __post_init__
    speaker_encoder_config: Any = None  # dict from config.json, SpeakerEncoderConfig after __post_init__
    tokenizer_type: str | None = None  # the codec kind ("qwen3_tts_tokenizer_12hz")
    tts_model_size: str | None = None  # "0b6", "1b7" (the 0.6B model ignores instructions)
    tts_model_type: str | None = None  # "custom_voice", "voice_design" or "base" (voice clone)
    im_start_token_id: int = 151644  # text ids of the chat template and the TTS control tokens
    im_end_token_id: int = 151645
    tts_pad_token_id: int = 151671  # text side of rows that carry codec tags only
    tts_bos_token_id: int = 151672
    tts_eos_token_id: int = 151673

    def __post_init__(self) -> None:
        if not isinstance(self.talker_config, TalkerConfig):
            self.talker_config = TalkerConfig.from_dict(self.talker_config or {})
        if not isinstance(self.speaker_encoder_config, SpeakerEncoderConfig):
            self.speaker_encoder_config = SpeakerEncoderConfig.from_dict(self.speaker_encoder_config or {})


class Qwen3TTSForConditionalGeneration(Module):
    """Qwen3TTSForConditionalGeneration (qwen_tts/core/models/modeling_qwen3_tts.py), the whole TTS model:
    `talker`, `speaker_encoder` (base models only) and `speech_tokenizer` (the codec)."""

    def __init__(self, config: TTSConfig, dtype: Any = np.float32) -> None:
        self.dtype = np.dtype(dtype)
        self.config = config
        self.talker = TalkerForConditionalGeneration(config.talker_config)
        self.tts_model_type = config.tts_model_type
        self.tts_model_size = config.tts_model_size
        self.tokenizer_type = config.tokenizer_type
        self.speaker_encoder = (
            SpeakerEncoder(self.config.speaker_encoder_config) if self.tts_model_type == "base" else None
        )
        self.speech_tokenizer: Module | None = None
        self.generate_config: dict[str, Any] | None = None
        self.name_or_path: Path | None = None
        self.unused_weights: list[str] = []  # checkpoint tensors the model has no place for
        self.supported_speakers = list((self.config.talker_config.spk_id or {}).keys())
        self.supported_languages = ["auto"] + [lang for lang in (self.config.talker_config.codec_language_id or {})
                                               if "dialect" not in lang]  # fmt: skip
        self.speaker_encoder_sample_rate = self.config.speaker_encoder_config.sample_rate

    def get_supported_speakers(self) -> list[str]:
        return self.supported_speakers

    def get_supported_languages(self) -> list[str]:
        return self.supported_languages

    # -- speaker x-vector --------------------------------------------------------------------------------------
    def mel_spectrogram(self, y: np.ndarray, *args: Any, **kwargs: Any) -> np.ndarray:
        """`mel_spectrogram` at this model's precision: the float64 oracle computes the mel of float32 audio in
        float64, the float32 model in float32."""
        y = np.asarray(y)
        return mel_spectrogram(y.astype(np.promote_types(y.dtype, self.dtype)), *args, **kwargs)

    @tapped
    def extract_speaker_embedding(self, audio: np.ndarray, sr: int) -> np.ndarray:
        """x-vector of 24 kHz audio: log-mel (1024-point FFT, hop 256, 128 bins up to 12 kHz) -> ECAPA-TDNN."""
        if sr != 24000:
            raise ValueError("Only support 24kHz audio")
        audio = np.asarray(audio)
        mels = mel_spectrogram(audio.astype(np.promote_types(audio.dtype, self.dtype))[None], n_fft=1024, num_mels=128,
                               sampling_rate=24000, hop_size=256, win_size=1024, fmin=0, fmax=12000)  # fmt: skip
        return self.speaker_encoder(np.swapaxes(mels, 1, 2).astype(self.dtype))[0]  # (1, frames, mels) in, (enc_dim,)

    def generate_speaker_prompt(self, voice_clone_prompt: dict[str, Any]) -> list[np.ndarray]:
        return [np.asarray(e).astype(self.dtype) for e in voice_clone_prompt["ref_spk_embedding"]]

    # -- prompts ------------------------------------------------------------------------------------------------
    def _text(self, ids: np.ndarray) -> np.ndarray:
        """text_projection(text_embedding(ids)): one call of each, as every official text piece is embedded."""
        return self.talker.text_projection(self.talker.get_text_embeddings()(ids))

    def _codec(self, ids: Any) -> np.ndarray:
        return self.talker.get_input_embeddings()(np.asarray(ids, dtype=np.int64))

    @tapped
    def generate_icl_prompt(self, text_id: np.ndarray, ref_id: np.ndarray, ref_code: np.ndarray,
                            tts_pad_embed: np.ndarray, tts_eos_embed: np.ndarray,
                            non_streaming_mode: bool) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """Voice-clone in-context prompt: text(ref + text) + tts_eos against codec(bos, reference frames).
        Returns (prompt rows, trailing text)."""
        talker_config = self.config.talker_config
        text_embed = self._text(np.concatenate([ref_id, text_id], axis=-1))
        text_embed = np.concatenate([text_embed, tts_eos_embed], axis=1)
        ref_code = np.asarray(ref_code, dtype=np.int64)
        codec_embed = []
        for i in range(talker_config.num_code_groups):
            if i == 0:
                codec_embed.append(self.talker.get_input_embeddings()(ref_code[:, :1]))
            else:
                codec_embed.append(self.talker.code_predictor.get_input_embeddings()[i - 1](ref_code[:, i : i + 1]))
        codec_embed = np.concatenate(codec_embed, axis=1).sum(axis=1)[None]  # each frame: sum over codebooks
        codec_embed = np.concatenate([self._codec([[talker_config.codec_bos_id]]), codec_embed], axis=1)
        text_lens, codec_lens = text_embed.shape[1], codec_embed.shape[1]
        if non_streaming_mode:
            icl_input_embed = text_embed + self._codec([[talker_config.codec_pad_id] * text_lens])
            icl_input_embed = np.concatenate([icl_input_embed, codec_embed + tts_pad_embed], axis=1)
            return icl_input_embed, tts_pad_embed
        if text_lens > codec_lens:
            return text_embed[:, :codec_lens] + codec_embed, text_embed[:, codec_lens:]
        text_embed = np.concatenate([text_embed] + [tts_pad_embed] * (codec_lens - text_lens), axis=1)
        return text_embed + codec_embed, tts_pad_embed

    @tapped
    def generate(self, input_ids: list[np.ndarray] | None = None, instruct_ids: list[np.ndarray | None] | None = None,
                 ref_ids: list[np.ndarray | None] | None = None, voice_clone_prompt: dict[str, Any] | None = None,
                 languages: list[str] | None = None, speakers: list[str | None] | None = None,
                 non_streaming_mode: bool = False, max_new_tokens: int = 4096, do_sample: bool = True, top_k: int = 50,
                 top_p: float = 1.0, temperature: float = 0.9, subtalker_dosample: bool = True,
                 subtalker_top_k: int = 50, subtalker_top_p: float = 1.0, subtalker_temperature: float = 0.9,
                 eos_token_id: int | None = None, repetition_penalty: float = 1.05,
                 generator: np.random.Generator | None = None,
                 **kwargs: Any) -> tuple[list[np.ndarray], list[np.ndarray]]:  # fmt: skip
        """Build each item's prompt, left-pad the batch, run the talker's generate, cut at EOS. Returns
        (codes per item (frames, codebooks), talker hidden states per item (frames, hidden))."""
        config, talker_config = self.config, self.config.talker_config
        eos_token_id = eos_token_id if eos_token_id is not None else talker_config.codec_eos_token_id
        # the top 1024 codec ids (the codebook-0 range ends at 2048) are never generated, except the config's EOS
        suppress_tokens = [i for i in range(talker_config.vocab_size - 1024, talker_config.vocab_size)
                           if i != talker_config.codec_eos_token_id]  # fmt: skip
        talker_kwargs: dict[str, Any] = {
            "max_new_tokens": max_new_tokens, "min_new_tokens": 2, "do_sample": do_sample, "top_k": top_k,
            "top_p": top_p, "temperature": temperature, "subtalker_dosample": subtalker_dosample,
            "subtalker_top_k": subtalker_top_k, "subtalker_top_p": subtalker_top_p,
            "subtalker_temperature": subtalker_temperature, "eos_token_id": eos_token_id,
            "repetition_penalty": repetition_penalty, "suppress_tokens": suppress_tokens, "output_hidden_states": True,
            "return_dict_in_generate": True,
        }  # fmt: skip
        if generator is not None:
            talker_kwargs["generator"] = generator
        talker_input_embeds: list[list[np.ndarray]] = [[] for _ in range(len(input_ids))]
        voice_clone_spk_embeds = (
            self.generate_speaker_prompt(voice_clone_prompt) if voice_clone_prompt is not None else None
        )
        if instruct_ids is not None:
            for index, instruct_id in enumerate(instruct_ids):
                if instruct_id is not None:
                    talker_input_embeds[index].append(self._text(instruct_id))
        trailing_text_hiddens = []
        speakers = [None] * len(input_ids) if speakers is None else speakers
        tts_pad_embed = None
        for index, (input_id, language, speaker) in enumerate(zip(input_ids, languages, speakers)):
            input_id = np.asarray(input_id, dtype=np.int64)
            if voice_clone_spk_embeds is None:
                if speaker == "" or speaker is None:
                    speaker_embed = None
                elif speaker.lower() not in talker_config.spk_id:
                    raise NotImplementedError(f"Speaker {speaker} not implemented")
                else:
                    speaker_embed = self._codec(talker_config.spk_id[speaker.lower()])
            elif voice_clone_prompt["x_vector_only_mode"][index] or voice_clone_prompt["icl_mode"][index]:
                speaker_embed = voice_clone_spk_embeds[index]
            else:
                speaker_embed = None
            if language is None:
                raise ValueError("language is required")
            if language.lower() == "auto":
                language_id = None
            elif language.lower() not in talker_config.codec_language_id:
                raise NotImplementedError(f"Language {language} not implemented")
            else:
                language_id = talker_config.codec_language_id[language.lower()]
            # a dialect speaker overrides Chinese / auto with its dialect's language id
            if (language.lower() in ("chinese", "auto") and speaker not in ("", None)
                    and talker_config.spk_is_dialect[speaker.lower()] is not False):  # fmt: skip
                language_id = talker_config.codec_language_id[talker_config.spk_is_dialect[speaker.lower()]]
            special = self._text(
                np.array([[config.tts_bos_token_id, config.tts_eos_token_id, config.tts_pad_token_id]])
            )
            tts_bos_embed, tts_eos_embed, tts_pad_embed = special[:, 0:1], special[:, 1:2], special[:, 2:3]
            if language_id is None:
                prefill = [
                    [talker_config.codec_nothink_id, talker_config.codec_think_bos_id, talker_config.codec_think_eos_id]
                ]
            else:
                prefill = [[talker_config.codec_think_id, talker_config.codec_think_bos_id, language_id,
                            talker_config.codec_think_eos_id]]  # fmt: skip
            codec_0 = self._codec(prefill)
            codec_1 = self._codec([[talker_config.codec_pad_id, talker_config.codec_bos_id]])
            pieces = [codec_0] if speaker_embed is None else [codec_0, speaker_embed.reshape(1, 1, -1)]  # (1, 1, C)
            codec_input_embedding = np.concatenate([*pieces, codec_1], axis=1)
            role = self._text(input_id[:, :3])  # <|im_start|>assistant\n
            # tts_pad for each codec tag, tts_bos against codec pad
            text_side = np.concatenate([np.broadcast_to(tts_pad_embed, (1, codec_input_embedding.shape[1] - 2,
                                                                        tts_pad_embed.shape[-1])), tts_bos_embed], axis=1)  # fmt: skip
            talker_input_embed = np.concatenate([role, text_side + codec_input_embedding[:, :-1]], axis=1)
            icl = (voice_clone_prompt is not None and voice_clone_prompt["ref_code"] is not None
                   and voice_clone_prompt["icl_mode"][index])  # fmt: skip
            if icl:
                icl_input_embed, trailing_text_hidden = self.generate_icl_prompt(
                    text_id=input_id[:, 3:-5], ref_id=np.asarray(ref_ids[index], dtype=np.int64)[:, 3:-2],
                    ref_code=voice_clone_prompt["ref_code"][index], tts_pad_embed=tts_pad_embed,
                    tts_eos_embed=tts_eos_embed, non_streaming_mode=non_streaming_mode,
                )  # fmt: skip
                talker_input_embed = np.concatenate([talker_input_embed, icl_input_embed], axis=1)
            else:
                # the first text token against codec bos
                first = self._text(input_id[:, 3:4]) + codec_input_embedding[:, -1:]
                talker_input_embed = np.concatenate([talker_input_embed, first], axis=1)
                if non_streaming_mode:
                    talker_input_embed = talker_input_embed[:, :-1]  # the first token goes in with the rest
                    text = np.concatenate([self._text(input_id[:, 3:-5]), tts_eos_embed], axis=1)
                    text = text + self._codec([[talker_config.codec_pad_id] * (input_id[:, 3:-5].shape[1] + 1)])
                    talker_input_embed = np.concatenate(
                        [talker_input_embed, text, tts_pad_embed + self._codec([[talker_config.codec_bos_id]])], axis=1
                    )
                    trailing_text_hidden = tts_pad_embed
                else:
                    trailing_text_hidden = np.concatenate([self._text(input_id[:, 4:-5]), tts_eos_embed], axis=1)
            talker_input_embeds[index].append(talker_input_embed)
            trailing_text_hiddens.append(trailing_text_hidden)
        sequences = [np.concatenate(parts, axis=1)[0] for parts in talker_input_embeds]

        # batch: left-pad the prompts with zeros (masked), right-pad trailing texts with tts_pad
        lengths = [len(s) for s in sequences]
        width = max(lengths)
        embeds = np.zeros((len(sequences), width, sequences[0].shape[-1]), dtype=sequences[0].dtype)
        attention_mask = np.zeros((len(sequences), width), dtype=np.int64)
        for b, seq in enumerate(sequences):
            embeds[b, width - len(seq) :] = seq
            attention_mask[b, width - len(seq) :] = 1
        trailing = [t[0] for t in trailing_text_hiddens]
        trailing_len = max(len(t) for t in trailing)
        trailing_padded = np.empty((len(trailing), trailing_len, trailing[0].shape[-1]), dtype=trailing[0].dtype)
        trailing_padded[:] = tts_pad_embed.reshape(-1)  # (C,) into every row
        for b, t in enumerate(trailing):
            trailing_padded[b, : len(t)] = t

        talker_result = self.talker.generate(inputs_embeds=embeds, attention_mask=attention_mask,
                                             trailing_text_hidden=trailing_padded, tts_pad_embed=tts_pad_embed,
                                             **talker_kwargs)  # fmt: skip
        steps = talker_result["hidden_states"]
        frames = [hid[-1] for hid in steps if hid[-1] is not None]
        group = talker_config.num_code_groups
        talker_codes = np.stack(frames, axis=1) if frames else np.zeros((len(sequences), 0, group), dtype=np.int64)
        talker_hidden_states = np.concatenate([hid[0][-1][:, -1:] for hid in steps], axis=1)[:, :-1]
        is_stop = talker_codes[:, :, 0] == talker_config.codec_eos_token_id
        first_stop = np.argmax(is_stop, axis=1) if is_stop.shape[1] else np.zeros(len(is_stop), dtype=np.int64)
        lengths_out = np.where(is_stop.any(axis=1), first_stop, talker_codes.shape[1])
        codes_list = [talker_codes[i, :n] for i, n in enumerate(lengths_out)]
        hidden_list = [talker_hidden_states[i, :n] for i, n in enumerate(lengths_out)]
        return codes_list, hidden_list


# -- loading ------------------------------------------------------------------------------------------------------


def load_model(folder: str | Path, dtype: Any = np.float32) -> Qwen3TTSForConditionalGeneration:
    """The TTS model of a checkpoint folder (config.json, model.safetensors, generation_config.json) without
    its codec, bound at path "". Weights follow impl.common.weights' rule (the speaker encoder of a
    CustomVoice or VoiceDesign checkpoint, which the official model does not build, ends in unused_weights)."""
    folder = Path(folder)
    model = Qwen3TTSForConditionalGeneration(TTSConfig.from_dict(load_config(folder)), dtype).bind("")
    model.unused_weights = load_weights(model, load_checkpoint_tensors(folder, dtype), dtype, source=str(folder))
    if (folder / "generation_config.json").exists():
        model.generate_config = json.loads((folder / "generation_config.json").read_text())
    model.name_or_path = folder
    return model.bind("")


def load_tts(folder: str | Path, dtype: Any = np.float32,
             codec_attn_implementation: str = "eager") -> Qwen3TTSForConditionalGeneration:  # fmt: skip
    """The TTS model with its codec (`speech_tokenizer`, loaded from folder/speech_tokenizer), bound at ""."""
    from . import codec

    model = load_model(folder, dtype)
    model.speech_tokenizer = codec.load_codec(Path(folder) / "speech_tokenizer", dtype, codec_attn_implementation)
    return model.bind("")
