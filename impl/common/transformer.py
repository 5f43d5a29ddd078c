"""The pre-norm decoder layer and the decoder stack every transformer here is made of.

Shapes: B batch, T new positions, S key positions (past + new), C model width.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .attention import cache_seq_length, causal_mask, new_cache
from .layers import LayerScale
from .nn import Module


class DecoderLayer(Module):
    """h = x + attn(norm1(x)); out = h + mlp(norm2(h)), each branch optionally layer-scaled.

    Mirrors Qwen3DecoderLayer (transformers/models/qwen3/modeling_qwen3.py: returns the hidden states),
    Qwen3TTSDecoderLayer and Qwen3TTSTalkerDecoderLayer (qwen_tts/core/models/modeling_qwen3_tts.py, the
    same code twice: return a 1-tuple, or (hidden, attention weights) with output_attentions),
    Qwen3TTSTokenizerV2DecoderTransformerLayer (layer scales; returns the hidden states) and
    MimiTransformerLayer (LayerNorms, a plain MLP, layer scales; returns a tuple)."""

    def __init__(self, self_attn: Module, mlp: Module, input_layernorm: Module, post_attention_layernorm: Module,
                 layer_scale_dim: int | None = None, returns_tuple: bool = True) -> None:  # fmt: skip
        self.self_attn = self_attn
        self.mlp = mlp
        self.input_layernorm = input_layernorm
        self.post_attention_layernorm = post_attention_layernorm
        self.self_attn_layer_scale: Module | None = None
        self.mlp_layer_scale: Module | None = None
        if layer_scale_dim is not None:
            self.self_attn_layer_scale, self.mlp_layer_scale = LayerScale(layer_scale_dim), LayerScale(layer_scale_dim)
        self.returns_tuple = returns_tuple

    def forward(self, hidden_states: np.ndarray, attention_mask: np.ndarray | None = None, position_ids: Any = None,
                past_key_values: dict | None = None, output_attentions: bool | None = False,
                use_cache: bool | None = False, cache_position: np.ndarray | None = None,
                position_embeddings: tuple[np.ndarray, np.ndarray] | None = None, **kwargs: Any) -> Any:  # fmt: skip
        residual = hidden_states  # (B, T, C)
        hidden_states, weights = self.self_attn(
            hidden_states=self.input_layernorm(hidden_states), attention_mask=attention_mask, position_ids=position_ids,
            past_key_values=past_key_values, output_attentions=output_attentions, use_cache=use_cache,
            cache_position=cache_position, position_embeddings=position_embeddings, **kwargs,
        )  # fmt: skip
        if self.self_attn_layer_scale is not None:
            hidden_states = self.self_attn_layer_scale(hidden_states)
        hidden_states = residual + hidden_states
        residual = hidden_states
        hidden_states = self.mlp(self.post_attention_layernorm(hidden_states))
        if self.mlp_layer_scale is not None:
            hidden_states = self.mlp_layer_scale(hidden_states)
        hidden_states = residual + hidden_states  # (B, T, C)
        if not self.returns_tuple:
            return hidden_states
        return (hidden_states, weights) if output_attentions else (hidden_states,)


def cache_positions(past_key_values: dict | None, length: int, use_cache: bool,
                    cache_position: np.ndarray | None) -> tuple[dict | None, np.ndarray]:  # fmt: skip
    """What a Qwen3-family model forward does first: a new cache when caching without one, and the
    absolute positions of the T new tokens (after the cached ones) unless given."""
    if use_cache and past_key_values is None:
        past_key_values = new_cache()
    if cache_position is None:
        past = cache_seq_length(past_key_values)
        cache_position = np.arange(past, past + length, dtype=np.int64)  # (T,)
    return past_key_values, cache_position


class DecoderStack(Module):
    """The body of Qwen3Model.forward (and of its copies Qwen3TTSTalkerModel,
    Qwen3TTSTalkerCodePredictorModel, Qwen3TTSTokenizerV2DecoderTransformerModel; MimiTransformerModel
    without a final norm, its attention making its own RoPE tables): causal mask over past + new
    positions, the RoPE tables once, every layer, the final norm. Subclasses create `layers` (and `norm`,
    `rotary_emb`) and call `decode`."""

    layers: list[DecoderLayer]
    norm: Module | None = None
    rotary_emb: Module | None = None

    def decode(self, inputs_embeds: np.ndarray, attention_mask: np.ndarray | None, position_ids: np.ndarray,
               past_key_values: dict | None, cache_position: np.ndarray, use_cache: bool | None = True,
               output_attentions: bool = False, output_hidden_states: bool | None = False,
               layer_position_ids: Any = None, sliding_window: int | None = None,
               boolean_mask: bool = False) -> dict[str, Any]:  # fmt: skip
        """inputs_embeds (B, T, C) -> {"last_hidden_state": (B, T, C), "past_key_values", and with
        output_hidden_states / output_attentions each layer's input (and the final output) / weights}.
        attention_mask: the 2-D padding mask (B, S), or a 4-D mask already prepared. position_ids feed
        the RoPE tables; the layers get `layer_position_ids` (default: the same)."""
        batch, length = inputs_embeds.shape[:2]
        if attention_mask is not None and np.ndim(attention_mask) == 4:
            mask = attention_mask
        else:
            kv_length = cache_seq_length(past_key_values) + length  # S: past + new
            mask = causal_mask(batch, cache_position, kv_length, attention_mask, sliding_window, inputs_embeds.dtype,
                               boolean_mask)  # fmt: skip
        hidden_states = inputs_embeds
        position_embeddings = None
        if self.rotary_emb is not None:
            position_embeddings = self.rotary_emb(hidden_states, position_ids)  # cos, sin: (B, T, D) or (3, B, T, D)
        all_hidden: list[np.ndarray] = []
        all_attentions: list[np.ndarray] = []
        layer_position_ids = position_ids if layer_position_ids is None else layer_position_ids
        for layer in self.layers:
            if output_hidden_states:
                all_hidden.append(hidden_states)
            outputs = layer(hidden_states, attention_mask=mask, position_ids=layer_position_ids,
                            past_key_values=past_key_values, output_attentions=output_attentions, use_cache=use_cache,
                            cache_position=cache_position, position_embeddings=position_embeddings)  # fmt: skip
            hidden_states = outputs[0] if isinstance(outputs, tuple) else outputs  # (B, T, C)
            if output_attentions:
                all_attentions.append(outputs[1])
        if self.norm is not None:
            hidden_states = self.norm(hidden_states)
        out: dict[str, Any] = {"last_hidden_state": hidden_states}
        if use_cache and past_key_values is not None:
            out["past_key_values"] = past_key_values
        if output_hidden_states:
            out["hidden_states"] = (*all_hidden, hidden_states)
        if output_attentions:
            out["attentions"] = tuple(all_attentions)
        return out
