"""Rotary position embeddings: the default inverse frequencies, the cos/sin tables, and applying them
to queries and keys, plain (1-D positions) or multimodal (three position rows: temporal, height,
width, merged by sections, as Qwen2-VL-style models and the Qwen3-TTS talker do).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .nn import Module


def default_inv_freq(head_dim: int, theta: float, dtype: Any) -> np.ndarray:
    """transformers' default RoPE inverse frequencies 1 / theta^(2i / d), i < d / 2, computed in `dtype`
    (the official computes them in float32 at init; the float64 oracle in float64)."""
    exponent = np.arange(0, head_dim, 2, dtype=np.int64).astype(dtype) / np.asarray(head_dim, dtype=dtype)
    return (1.0 / (np.asarray(theta, dtype=dtype) ** exponent)).astype(dtype)  # (D/2,)


class RotaryEmbedding(Module):
    """Qwen3RotaryEmbedding (transformers/models/qwen3/modeling_qwen3.py) and its copies
    Qwen3TTSRotaryEmbedding, Qwen3TTSTalkerRotaryEmbedding (three position rows),
    Qwen3TTSTokenizerV2DecoderRotatoryEmbedding and MimiRotaryEmbedding: cos and sin of
    position * inv_freq, the D/2 frequencies repeated over both halves. position_ids (B, T) give (B, T, D);
    the talker's (3, B, T) give (3, B, T, D). Computed in promote_types(x.dtype, float32) ("Force float32"
    officially), returned in x's dtype; x only lends its dtype."""

    def __init__(self, head_dim: int, theta: float, attention_scaling: float = 1.0) -> None:
        self.head_dim, self.theta, self.attention_scaling = head_dim, theta, attention_scaling

    def forward(self, x: np.ndarray, position_ids: np.ndarray, **kwargs: Any) -> tuple[np.ndarray, np.ndarray]:
        dtype = np.promote_types(x.dtype, np.float32)
        inv_freq = default_inv_freq(self.head_dim, self.theta, dtype)
        freqs = np.asarray(position_ids).astype(dtype)[..., None] * inv_freq  # (..., T, D/2)
        emb = np.concatenate([freqs, freqs], axis=-1)  # (..., T, D)
        cos = np.cos(emb) * np.asarray(self.attention_scaling, dtype)
        sin = np.sin(emb) * np.asarray(self.attention_scaling, dtype)
        return cos.astype(x.dtype), sin.astype(x.dtype)


def rotate_half(x: np.ndarray) -> np.ndarray:
    """(x1, x2) -> (-x2, x1) on the two halves of the last axis."""
    half = x.shape[-1] // 2
    return np.concatenate((-x[..., half:], x[..., :half]), axis=-1)


def apply_rotary_pos_emb(q: np.ndarray, k: np.ndarray, cos: np.ndarray, sin: np.ndarray
                         ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """x cos + rotate_half(x) sin for q (B, H, T, D) and k (B, H_kv, T, D); cos/sin (B, T, D) broadcast
    over the heads."""
    cos, sin = cos[:, None], sin[:, None]  # (B, 1, T, D)
    return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin


def apply_multimodal_rotary_pos_emb(q: np.ndarray, k: np.ndarray, cos: np.ndarray, sin: np.ndarray,
                                    mrope_section: list[int], mrope_interleaved: bool = False
                                    ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """apply_multimodal_rotary_pos_emb (qwen_tts/core/models/modeling_qwen3_tts.py): merge the three rows
    of cos/sin (3, B, T, D) into one (B, 1, T, D), then x cos + rotate_half(x) sin.

    Interleaved: frequency j of the first half comes from row i for j = i, i+3, ... < 3 * section[i]
    (i = 1, 2), from row 0 otherwise; the second half repeats the first. Not interleaved: consecutive
    blocks of section sizes (repeated for both halves) cycle through rows 0, 1, 2. With the three rows
    equal (text), both are plain 1-D RoPE."""
    if mrope_interleaved:
        modality_num = len(mrope_section)

        def interleave(x: np.ndarray) -> np.ndarray:  # (3, B, T, D/2) -> (B, T, D/2)
            x_t = x[0].copy()
            for i, n in enumerate(mrope_section[1:], 1):
                x_t[..., i : n * modality_num : modality_num] = x[i, ..., i : n * modality_num : modality_num]
            return x_t

        half = cos.shape[-1] // 2
        cos = np.concatenate([interleave(cos[..., :half])] * 2, axis=-1)[:, None]  # (B, 1, T, D)
        sin = np.concatenate([interleave(sin[..., :half])] * 2, axis=-1)[:, None]  # (B, 1, T, D)
    else:
        bounds = np.cumsum(list(mrope_section) * 2)[:-1]
        # block i of the frequencies from row i % 3: (3, B, T, D) -> (B, 1, T, D)
        cos = np.concatenate([m[i % 3] for i, m in enumerate(np.split(cos, bounds, axis=-1))], axis=-1)[:, None]
        sin = np.concatenate([m[i % 3] for i, m in enumerate(np.split(sin, bounds, axis=-1))], axis=-1)[:, None]
    return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
