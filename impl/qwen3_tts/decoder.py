"""The decoder layer the talker and the code predictor share. Officially it is the same code twice
(qwen_tts/core/models/modeling_qwen3_tts.py: Qwen3TTSTalkerDecoderLayer with Qwen3TTSTalkerAttention,
Qwen3TTSDecoderLayer with Qwen3TTSAttention), and both copy transformers' Qwen3 layer; they differ only
in the RoPE: the talker's merges three position rows by sections (multimodal RoPE).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..common.attention import Attention
from ..common.layers import GatedMLP, RMSNorm
from ..common.rope import apply_multimodal_rotary_pos_emb
from ..common.transformer import DecoderLayer

if TYPE_CHECKING:
    from .code_predictor import CodePredictorConfig
    from .talker import TalkerConfig


class Qwen3TTSAttention(Attention):
    """Qwen3TTSAttention (code predictor: 1-D RoPE, cos/sin (B, T, D)) and Qwen3TTSTalkerAttention (talker:
    multimodal RoPE from cos/sin (3, B, T, D) when the config has an mrope_section): grouped-query
    attention with per-head q/k RMSNorm, eager."""

    def __init__(self, config: TalkerConfig | CodePredictorConfig, layer_idx: int) -> None:
        super().__init__(config.hidden_size, config.num_attention_heads, config.num_key_value_heads, config.head_dim,
                         layer_idx, bias=config.attention_bias, qk_norm="rms", eps=config.rms_norm_eps)  # fmt: skip
        rope = config.rope_scaling or {}
        self.mrope_section: list[int] | None = rope.get("mrope_section")
        self.mrope_interleaved = bool(rope.get("interleaved", False))

    def rotate(self, query: np.ndarray, key: np.ndarray, cos: np.ndarray, sin: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        if self.mrope_section is None:
            return super().rotate(query, key, cos, sin)
        return apply_multimodal_rotary_pos_emb(query, key, cos, sin, self.mrope_section, self.mrope_interleaved)


class Qwen3TTSDecoderLayer(DecoderLayer):
    """Qwen3TTSDecoderLayer / Qwen3TTSTalkerDecoderLayer: x + attn(norm(x)), then h + mlp(norm(h)) with
    the SwiGLU MLP (Qwen3TTSTalkerTextMLP). Returns a 1-tuple, or (hidden, attention weights) with
    output_attentions."""

    def __init__(self, config: TalkerConfig | CodePredictorConfig, layer_idx: int) -> None:
        super().__init__(self_attn=Qwen3TTSAttention(config, layer_idx),
                         mlp=GatedMLP(config.hidden_size, config.intermediate_size, config.hidden_act),
                         input_layernorm=RMSNorm(config.hidden_size, eps=config.rms_norm_eps),
                         post_attention_layernorm=RMSNorm(config.hidden_size, eps=config.rms_norm_eps))  # fmt: skip
