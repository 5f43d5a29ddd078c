"""A clean float64 oracle for the official Qwen3-TTS code.

`.double()` does not give a float64 model: the official code computes in float32 inside both RMSNorm
classes (`hidden_states.to(torch.float32)`), in every rotary embedding ("Force float32", and the
inverse frequencies are computed in float32 at init), in `eager_attention_forward` and Mimi's attention
(`softmax(..., dtype=torch.float32)`), in Mimi's codebook search (`.float()` before `cdist`) and in
`mel_spectrogram` (float32 mel basis; `create_voice_clone_prompt` also casts the audio to float32).
Plain `.double()` then differs from true float64 by about half of float32's own error, which makes it a
poor reference for measuring that error.

`clean_precision(target)` swaps those functions for versions that compute in
`promote_types(input dtype, target)`. With target float32 the swapped functions call the originals, so
float32 results are bit-identical (a test checks it); with target float64 every step is float64.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .checkpoints import official

_TARGET: list[torch.dtype] = []


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    target = _TARGET[-1] if _TARGET else torch.float32
    return torch.promote_types(torch.promote_types(dtype, torch.float32), target)


def _is_plain(dtype: torch.dtype) -> bool:
    return _compute_dtype(dtype) == torch.float32


def _inv_freq(config: Any, dtype: torch.dtype, device: Any) -> torch.Tensor:
    """Default RoPE inverse frequencies computed in `dtype` (the official code uses float32)."""
    base = config.rope_theta
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    dim = int(head_dim * getattr(config, "partial_rotary_factor", 1.0))
    exponent = torch.arange(0, dim, 2, dtype=torch.int64, device=device).to(dtype) / dim
    return 1.0 / (base**exponent)


def _pristine(function: Any) -> Any:
    """The official function even while a recorder has wrapped the module attribute."""
    while getattr(function, "_conformance_wrapper", False):
        function = function.__wrapped__
    return function


def _patched_forwards(o: Any) -> list[tuple[Any, str, Any]]:
    tts, codec, mimi = o.tts_modeling, o.codec_modeling, o.mimi
    originals = {
        "tts_rms": tts.Qwen3TTSRMSNorm.forward,
        "codec_rms": codec.Qwen3TTSTokenizerV2DecoderRMSNorm.forward,
        "tts_rope": tts.Qwen3TTSRotaryEmbedding.forward,
        "talker_rope": tts.Qwen3TTSTalkerRotaryEmbedding.forward,
        "codec_rope": codec.Qwen3TTSTokenizerV2DecoderRotatoryEmbedding.forward,
        "mimi_rope": mimi.MimiRotaryEmbedding.forward,
        "tts_attn": _pristine(tts.eager_attention_forward),
        "codec_attn": _pristine(codec.eager_attention_forward),
        "mimi_attn": mimi.MimiAttention.forward,
        "mel": _pristine(tts.mel_spectrogram),
        "mimi_quantize": mimi.MimiEuclideanCodebook.quantize,
    }

    def rms_forward(original: Any) -> Any:
        def forward(self: Any, hidden_states: torch.Tensor) -> torch.Tensor:
            if _is_plain(hidden_states.dtype):
                return original(self, hidden_states)
            input_dtype = hidden_states.dtype
            hidden_states = hidden_states.to(_compute_dtype(input_dtype))
            variance = hidden_states.pow(2).mean(-1, keepdim=True)
            hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
            return self.weight * hidden_states.to(input_dtype)

        return forward

    def rope_forward(original: Any, multimodal: bool) -> Any:
        def forward(self: Any, x: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            if _is_plain(x.dtype) or self.rope_type != "default":
                return original(self, x, position_ids)
            dtype = _compute_dtype(x.dtype)
            with torch.no_grad():
                inv_freq = _inv_freq(self.config, dtype, x.device)
                if multimodal:  # position_ids: (3, batch, positions)
                    inv = inv_freq[None, None, :, None].expand(3, position_ids.shape[1], -1, 1)
                    freqs = (inv @ position_ids[:, :, None, :].to(dtype)).transpose(2, 3)
                else:
                    inv = inv_freq[None, :, None].expand(position_ids.shape[0], -1, 1)
                    freqs = (inv @ position_ids[:, None, :].to(dtype)).transpose(1, 2)
                emb = torch.cat((freqs, freqs), dim=-1)
                cos = emb.cos() * self.attention_scaling
                sin = emb.sin() * self.attention_scaling
            return cos.to(dtype=x.dtype), sin.to(dtype=x.dtype)

        return forward

    def eager_attention(original: Any) -> Any:
        def attention(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                      attention_mask: Any, scaling: float, dropout: float = 0.0, **kwargs: Any) -> Any:  # fmt: skip
            if _is_plain(query.dtype):
                return original(module, query, key, value, attention_mask, scaling, dropout, **kwargs)
            key_states = tts.repeat_kv(key, module.num_key_value_groups)
            value_states = tts.repeat_kv(value, module.num_key_value_groups)
            attn_weights = torch.matmul(query, key_states.transpose(2, 3)) * scaling
            if attention_mask is not None:
                attn_weights = attn_weights + attention_mask[:, :, :, : key_states.shape[-2]]
            attn_weights = F.softmax(attn_weights, dim=-1, dtype=_compute_dtype(query.dtype)).to(query.dtype)
            attn_weights = F.dropout(attn_weights, p=dropout, training=module.training)
            attn_output = torch.matmul(attn_weights, value_states).transpose(1, 2).contiguous()
            return attn_output, attn_weights

        return attention

    def mimi_attention(original: Any) -> Any:
        def forward(self: Any, hidden_states: torch.Tensor, attention_mask: Any = None, position_ids: Any = None,
                    past_key_values: Any = None, output_attentions: bool = False, use_cache: bool = False,
                    cache_position: Any = None, **kwargs: Any) -> Any:  # fmt: skip
            if "past_key_value" in kwargs:
                past_key_values = kwargs.pop("past_key_value")
            if _is_plain(hidden_states.dtype):
                return original(self, hidden_states, attention_mask=attention_mask, position_ids=position_ids,
                                past_key_values=past_key_values, output_attentions=output_attentions,
                                use_cache=use_cache, cache_position=cache_position)  # fmt: skip
            bsz, q_len, _ = hidden_states.size()
            q = self.q_proj(hidden_states).view(bsz, q_len, self.num_heads, self.head_dim).transpose(1, 2)
            k = self.k_proj(hidden_states).view(bsz, q_len, self.num_key_value_heads, self.head_dim).transpose(1, 2)
            v = self.v_proj(hidden_states).view(bsz, q_len, self.num_key_value_heads, self.head_dim).transpose(1, 2)
            cos, sin = self.rotary_emb(v, position_ids)
            q, k = mimi.apply_rotary_pos_emb(q, k, cos, sin)
            if past_key_values is not None:
                cache_kwargs = {"sin": sin, "cos": cos, "cache_position": cache_position}
                k, v = past_key_values.update(k, v, self.layer_idx, cache_kwargs)
            k = mimi.repeat_kv(k, self.num_key_value_groups)
            v = mimi.repeat_kv(v, self.num_key_value_groups)
            attn_weights = torch.matmul(q, k.transpose(2, 3)) * self.scaling
            if attention_mask is not None:
                attn_weights = attn_weights + attention_mask[:, :, :, : k.shape[-2]]
            attn_weights = F.softmax(attn_weights, dim=-1, dtype=_compute_dtype(q.dtype)).to(q.dtype)
            attn_output = torch.matmul(attn_weights, v).transpose(1, 2).contiguous().view(bsz, q_len, -1)
            attn_output = self.o_proj(attn_output)
            return attn_output, (attn_weights if output_attentions else None)

        return forward

    def mel(original: Any) -> Any:
        def mel_spectrogram(y: torch.Tensor, n_fft: int, num_mels: int, sampling_rate: int, hop_size: int,
                            win_size: int, fmin: int, fmax: int | None = None, center: bool = False) -> torch.Tensor:  # fmt: skip
            if _is_plain(y.dtype):
                return original(y, n_fft, num_mels, sampling_rate, hop_size, win_size, fmin, fmax, center)
            dtype = _compute_dtype(y.dtype)
            y = y.to(dtype)
            basis = o.tts_modeling.librosa_mel_fn(sr=sampling_rate, n_fft=n_fft, n_mels=num_mels, fmin=fmin,
                                                  fmax=fmax, dtype=np.float64)  # fmt: skip
            mel_basis = torch.from_numpy(basis).to(device=y.device, dtype=dtype)
            window = torch.hann_window(win_size, dtype=dtype, device=y.device)
            padding = (n_fft - hop_size) // 2
            y = F.pad(y.unsqueeze(1), (padding, padding), mode="reflect").squeeze(1)
            spec = torch.stft(y, n_fft, hop_length=hop_size, win_length=win_size, window=window, center=center,
                              pad_mode="reflect", normalized=False, onesided=True, return_complex=True)  # fmt: skip
            spec = torch.sqrt(torch.view_as_real(spec).pow(2).sum(-1) + 1e-9)
            return o.tts_modeling.dynamic_range_compression_torch(torch.matmul(mel_basis, spec))

        return mel_spectrogram

    def quantize(original: Any) -> Any:
        def forward(self: Any, hidden_states: torch.Tensor) -> torch.Tensor:
            if _is_plain(hidden_states.dtype):
                return original(self, hidden_states)
            dtype = _compute_dtype(hidden_states.dtype)
            dists = torch.cdist(hidden_states[None].to(dtype), self.embed[None].to(dtype), p=2)[0]
            return dists.argmin(dim=-1)

        return forward

    return [
        (tts.Qwen3TTSRMSNorm, "forward", rms_forward(originals["tts_rms"])),
        (codec.Qwen3TTSTokenizerV2DecoderRMSNorm, "forward", rms_forward(originals["codec_rms"])),
        (tts.Qwen3TTSRotaryEmbedding, "forward", rope_forward(originals["tts_rope"], False)),
        (tts.Qwen3TTSTalkerRotaryEmbedding, "forward", rope_forward(originals["talker_rope"], True)),
        (codec.Qwen3TTSTokenizerV2DecoderRotatoryEmbedding, "forward", rope_forward(originals["codec_rope"], False)),
        (mimi.MimiRotaryEmbedding, "forward", rope_forward(originals["mimi_rope"], False)),
        (tts, "eager_attention_forward", eager_attention(originals["tts_attn"])),
        (codec, "eager_attention_forward", eager_attention(originals["codec_attn"])),
        (mimi.MimiAttention, "forward", mimi_attention(originals["mimi_attn"])),
        (tts, "mel_spectrogram", mel(originals["mel"])),
        (mimi.MimiEuclideanCodebook, "quantize", quantize(originals["mimi_quantize"])),
    ]


_PATCHES: list[tuple[Any, str, Any]] | None = None


@contextlib.contextmanager
def clean_precision(target: torch.dtype = torch.float64) -> Iterator[None]:
    """Within this block the official float32-forcing spots compute in promote_types(input, target)."""
    global _PATCHES
    if _PATCHES is None:
        _PATCHES = _patched_forwards(official())
    outermost = not _TARGET
    saved = []
    if outermost:
        for owner, name, replacement in _PATCHES:
            saved.append((owner, name, owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)))
            setattr(owner, name, replacement)
    _TARGET.append(target)
    try:
        yield
    finally:
        _TARGET.pop()
        for owner, name, original in reversed(saved):
            setattr(owner, name, original)


def clean_mel_spectrogram(y: torch.Tensor, **kwargs: Any) -> torch.Tensor:
    """The official mel spectrogram computed at the clean target precision (for the oracle)."""
    with clean_precision(torch.float64):
        return official().tts_modeling.mel_spectrogram(y, **kwargs)


def is_finite_float(value: float) -> bool:
    return math.isfinite(value)
