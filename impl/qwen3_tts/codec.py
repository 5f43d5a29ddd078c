"""The Qwen3-TTS 12 Hz speech codec (`Qwen3TTSTokenizerV2Model`) in NumPy.

    root = load_codec(Path(".../speech_tokenizer"), np.float32)   # bound at "speech_tokenizer"
    wav = decode_codes(root, codes)              # codes (T, Q) -> float32 waveform, 24 kHz
    codes = encode_waveform(root, wav, 24000)    # waveform -> codes (T, Q)

The module tree mirrors the official one (`root.decoder.pre_transformer.layers.0.self_attn`, ...): see
codec_decoder.py (decoder) and codec_encoder.py (Mimi encoder). Everything computes in the dtype given
to `load_codec` (float32 or float64); the spots where the official code forces float32 (RMSNorm, rotary
embeddings, attention softmax, codebook distances) compute in that dtype too, so float64 is a clean
float64 oracle. With ml_dtypes' bfloat16 it computes like the official model cast to bfloat16: every
result rounded to bfloat16, products accumulated in float32, the float32 spots in float32
(promote_types(bfloat16, float32)).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..common.config import Config
from ..common.nn import Module, tapped
from ..common.weights import load_checkpoint_tensors, load_config, load_weights
from .codec_decoder import DecoderConfig, Qwen3TTSTokenizerV2Decoder
from .codec_encoder import MimiConfig, Qwen3TTSTokenizerV2Encoder

ROOT_PATH = "speech_tokenizer"


@dataclass
class CodecConfig(Config):
    """Qwen3TTSTokenizerV2Config (qwen_tts/core/tokenizer_12hz/configuration_qwen3_tts_tokenizer_v2.py)."""

    encoder_config: Any = None  # dict from config.json, MimiConfig after __post_init__
    decoder_config: Any = None  # dict from config.json, DecoderConfig after __post_init__
    encoder_valid_num_quantizers: int = 16  # codebooks of the encoder's codes that the TTS uses
    input_sample_rate: int = 24000
    output_sample_rate: int = 24000
    decode_upsample_rate: int = 1920  # waveform samples per frame
    encode_downsample_rate: int = 1920
    attn_implementation: str = "sdpa"  # of both transformers (not in config.json: how the model was loaded)

    def __post_init__(self) -> None:
        if not isinstance(self.encoder_config, MimiConfig):
            self.encoder_config = MimiConfig.from_dict(self.encoder_config or {},
                                                       attn_implementation=self.attn_implementation)  # fmt: skip
        if not isinstance(self.decoder_config, DecoderConfig):
            self.decoder_config = DecoderConfig.from_dict(self.decoder_config or {},
                                                          attn_implementation=self.attn_implementation)  # fmt: skip


class Qwen3TTSTokenizerV2Model(Module):
    """Qwen3TTSTokenizerV2Model (`speech_tokenizer`): the Mimi encoder (waveform -> codes) and the 12 Hz
    decoder (codes -> waveform)."""

    def __init__(self, config: CodecConfig, dtype: Any = np.float32) -> None:
        self.config = config
        self.dtype = np.dtype(dtype)
        self.encoder_valid_num_quantizers = config.encoder_valid_num_quantizers
        self.input_sample_rate = config.input_sample_rate
        self.output_sample_rate = config.output_sample_rate
        self.decode_upsample_rate = config.decode_upsample_rate
        self.encode_downsample_rate = config.encode_downsample_rate
        self.unused_weights: list[str] = []  # checkpoint tensors the model has no place for
        self.encoder = Qwen3TTSTokenizerV2Encoder(config.encoder_config)
        self.decoder = Qwen3TTSTokenizerV2Decoder(config.decoder_config)

    @tapped
    def encode(self, input_values: np.ndarray, padding_mask: np.ndarray | None = None,
               return_dict: bool | None = None) -> Any:  # fmt: skip
        """Waveforms (B, L) and their padding mask (B, L) -> per item codes (frames, valid quantizers),
        frames = ceil(unpadded length / encode_downsample_rate)."""
        return_dict = True if return_dict is None else return_dict
        encoded = self.encoder.encode(input_values=input_values[:, None], return_dict=True)  # (B, 1, L) in
        audio_codes = encoded["audio_codes"][:, : self.encoder_valid_num_quantizers]
        if padding_mask is None:
            raise TypeError("encode needs the padding mask (the official code zips over it)")
        audio_codes = [
            np.ascontiguousarray(code[..., : -(-int(mask.sum()) // self.encode_downsample_rate)].T)  # (frames, Q)
            for code, mask in zip(audio_codes, padding_mask)
        ]
        return {"audio_codes": audio_codes} if return_dict else (audio_codes,)

    @tapped
    def decode(self, audio_codes: np.ndarray, return_dict: bool | None = None) -> Any:
        """Codes (B, T, Q), right-padded with -1 -> per item waveforms of (unpadded frames * upsample) samples."""
        return_dict = True if return_dict is None else return_dict
        audio_lengths = (audio_codes[..., 0] > -1).sum(1) * self.decode_upsample_rate  # only codebook 0 counts
        audio_codes = np.maximum(audio_codes, 0)  # padding frames decode as code 0, then get cut off
        audio_values = self.decoder.chunked_decode(np.swapaxes(audio_codes, 1, 2))[:, 0]  # (B, Q, T) in, (B, samples)
        audio_values = [a[:length] for a, length in zip(audio_values, audio_lengths)]
        return {"audio_values": audio_values} if return_dict else (audio_values,)


def load_codec(
    folder: Path | str, dtype: Any = np.float32, attn_implementation: str = "eager"
) -> Qwen3TTSTokenizerV2Model:
    """The codec of a checkpoint folder (the official `speech_tokenizer/` layout: config.json +
    model.safetensors), computing in `dtype`, bound at the official path "speech_tokenizer".
    attn_implementation "eager" (what the goldens record) makes attention modules return (output, weights)
    with additive float masks; "sdpa" (the official loader's default) returns (output, None) with boolean
    masks."""
    folder = Path(folder)
    dtype = np.dtype(dtype)
    if dtype not in (np.dtype(np.float32), np.dtype(np.float64)) and dtype.name != "bfloat16":
        raise ValueError(f"the codec computes in float32 or float64, not {dtype}")
    config = CodecConfig.from_dict(load_config(folder), attn_implementation=attn_implementation)
    root = Qwen3TTSTokenizerV2Model(config, dtype).bind(ROOT_PATH)
    root.unused_weights = load_weights(root, load_checkpoint_tensors(folder, dtype), dtype, source=str(folder))
    return root


def decode_codes(root: Qwen3TTSTokenizerV2Model, codes: np.ndarray) -> np.ndarray:
    """`Qwen3TTSTokenizer.decode([{"audio_codes": codes}])[0][0]`: codes (T, Q) -> float32 waveform."""
    codes = np.asarray(codes, dtype=np.int64)
    decoded = root.decode(codes[None], return_dict=True)  # a batch of one: (1, T, Q)
    return decoded["audio_values"][0].astype(np.float32)  # the wrapper returns float32 whatever the model dtype


def encode_waveform(root: Qwen3TTSTokenizerV2Model, wav: np.ndarray, sr: int) -> np.ndarray:
    """`Qwen3TTSTokenizer.encode(wav, sr=sr).audio_codes[0]`: mono waveform -> codes (T, Q) int64.
    The feature extractor (EncodecFeatureExtractor) of one waveform adds no padding: mask all ones."""
    wav = np.asarray(wav)
    if wav.ndim > 1:
        wav = np.mean(wav, axis=-1)
    if int(sr) != root.input_sample_rate:
        raise NotImplementedError(
            f"resampling {sr} Hz to {root.input_sample_rate} Hz (the official wrapper uses librosa) is not implemented"
        )
    wav = wav.astype(np.float32)
    input_values = wav[None].astype(root.dtype)  # (1, L), cast to the model dtype like `inputs.to(model.dtype)`
    padding_mask = np.ones((1, wav.shape[0]), dtype=np.int32)
    encoded = root.encode(input_values, padding_mask, return_dict=True)
    return encoded["audio_codes"][0]
