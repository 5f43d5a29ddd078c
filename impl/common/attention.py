"""Attention: the KV cache, the causal masks transformers builds, scaled dot-product attention (eager
and SDPA semantics), and the multi-head attention module of the Qwen3 family.

Shapes: B batch, T new positions, S key positions (past + new), H query heads, H_kv key/value heads
(each serves H / H_kv consecutive query heads: grouped-query attention), D head dim, C model width.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import functional as F
from .layers import Identity, Linear, RMSNorm
from .nn import Module
from .rope import apply_rotary_pos_emb

# -- KV cache --------------------------------------------------------------------------------------------------------
# transformers' DynamicCache, in the layout the goldens record it: {"layers": [{"type": "DynamicLayer",
# "keys": (B, H_kv, S, D) | None, "values": (B, H_kv, S, D) | None}, ...]}.


def new_cache(num_layers: int = 0) -> dict[str, Any]:
    """An empty cache; `DynamicCache(config=...)` (what generate creates) pre-creates one empty layer per
    decoder layer, a bare `DynamicCache()` none."""
    return {"layers": [_empty_layer() for _ in range(num_layers)]}


def _empty_layer() -> dict[str, Any]:
    return {"type": "DynamicLayer", "keys": None, "values": None}


def cache_update(cache: dict[str, Any], layer_idx: int, keys: np.ndarray, values: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """DynamicCache.update: append (B, H_kv, T, D) along the position axis, return the layer's whole
    keys and values (B, H_kv, S, D)."""
    layers = cache["layers"]
    while len(layers) <= layer_idx:
        layers.append(_empty_layer())
    layer = layers[layer_idx]
    if layer.get("keys") is None:
        layer["keys"], layer["values"] = keys, values
    else:
        layer["keys"] = np.concatenate([layer["keys"], keys], axis=-2)
        layer["values"] = np.concatenate([layer["values"], values], axis=-2)
    return layer["keys"], layer["values"]


def cache_seq_length(cache: dict[str, Any] | None, layer_idx: int = 0) -> int:
    """DynamicCache.get_seq_length: positions already cached (0 without a cache)."""
    if cache is None or len(cache["layers"]) <= layer_idx or cache["layers"][layer_idx].get("keys") is None:
        return 0
    return int(cache["layers"][layer_idx]["keys"].shape[-2])


# -- masks ----------------------------------------------------------------------------------------------------------


def causal_mask(batch: int, cache_position: np.ndarray, kv_length: int, padding_mask: np.ndarray | None = None,
                sliding_window: int | None = None, dtype: Any = np.float32,
                boolean: bool = False) -> np.ndarray:  # fmt: skip
    """transformers' create_causal_mask (and create_sliding_window_causal_mask): (B, 1, T, S), query i at
    absolute position cache_position[i] may see key j when j <= cache_position[i], the 2-D padding mask
    (B, >= S) is 1 at j, and (with a window) cache_position[i] - j < sliding_window. Eager attention takes
    it additive (0 allowed, the dtype's most negative finite value blocked), SDPA boolean (True allowed)."""
    query = np.asarray(cache_position, dtype=np.int64)[:, None]  # (T, 1)
    key = np.arange(kv_length)[None, :]  # (1, S)
    allowed = key <= query  # (T, S)
    if sliding_window is not None:
        allowed &= query - key < sliding_window
    allowed = np.broadcast_to(allowed[None, None], (batch, 1, *allowed.shape))  # (B, 1, T, S)
    if padding_mask is not None:
        allowed = allowed & np.asarray(padding_mask)[:, None, None, :kv_length].astype(bool)
    if boolean:
        return allowed.copy()
    return np.where(allowed, np.zeros((), dtype), np.array(np.finfo(dtype).min, dtype))


# -- scaled dot-product attention -------------------------------------------------------------------------------------


def attention(query: np.ndarray, key: np.ndarray, value: np.ndarray, mask: np.ndarray | None, scaling: float,
              implementation: str = "eager") -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """softmax(q k^T * scaling + mask) v, as transformers' eager_attention_forward computes it (repeat_kv
    done by broadcasting instead of copying). query (B, H, T, D), key/value (B, H_kv, S, D). Returns
    (output (B, T, H, D), weights (B, H, T, S)).

    "eager": the mask is added as it is (the additive mask the model builds). "sdpa" (SDPA's semantics,
    same arithmetic): a boolean mask keeps its True entries, a float one is added, no mask means causal."""
    if implementation != "eager":
        if mask is None and query.shape[2] > 1:  # SDPA's is_causal path
            mask = causal_mask(query.shape[0], np.arange(query.shape[2]), key.shape[2], boolean=True)
        if mask is not None and mask.dtype == np.bool_:
            mask = np.where(mask, np.zeros((), query.dtype), np.array(-np.inf, query.dtype))
    elif mask is not None:
        mask = mask.astype(query.dtype, copy=False)
    batch, heads, length, head_dim = query.shape
    kv_heads, kv_length = key.shape[1], key.shape[2]
    groups = heads // kv_heads
    q = query.reshape(batch, kv_heads, groups, length, head_dim)  # (B, H_kv, H/H_kv, T, D)
    scores = (q @ np.swapaxes(key, -1, -2)[:, :, None]) * np.asarray(scaling, dtype=query.dtype)  # (.., T, S)
    scores = scores.reshape(batch, heads, length, kv_length)  # (B, H, T, S)
    if mask is not None:
        scores = scores + mask[:, :, :, :kv_length]
    weights = F.softmax(scores, axis=-1).astype(query.dtype)  # the official softmax runs in float32 for float32
    out = weights.reshape(batch, kv_heads, groups, length, kv_length) @ value[:, :, None]  # (B, H_kv, H/H_kv, T, D)
    out = out.reshape(batch, heads, length, head_dim)  # (B, H, T, D)
    return np.ascontiguousarray(np.swapaxes(out, 1, 2)), weights  # (B, T, H, D), (B, H, T, S)


class Attention(Module):
    """Multi-head attention with grouped key/value heads, RoPE and a KV cache: transformers' Qwen3Attention
    (models/qwen3/modeling_qwen3.py), which qwen_tts copies as Qwen3TTSAttention, Qwen3TTSTalkerAttention
    (multimodal RoPE, see `rotate`) and, with nn.Identity q/k norms, Qwen3TTSTokenizerV2DecoderAttention.

    qk_norm: "rms" (Qwen3: an RMSNorm over each head's D features of q and k, before RoPE), "identity"
    (Identity modules in their place) or None (no such modules, as MimiAttention). implementation: "eager"
    returns the attention weights, "sdpa" returns None for them (transformers' sdpa_attention_forward)."""

    def __init__(self, hidden_size: int, num_heads: int, num_kv_heads: int, head_dim: int, layer_idx: int = 0,
                 bias: bool = False, qk_norm: str | None = "rms", eps: float = 1e-6,
                 implementation: str = "eager") -> None:  # fmt: skip
        self.layer_idx, self.head_dim, self.implementation = layer_idx, head_dim, implementation
        self.num_key_value_groups = num_heads // num_kv_heads
        self.scaling = head_dim**-0.5
        self.q_proj = Linear(hidden_size, num_heads * head_dim, bias=bias)
        self.k_proj = Linear(hidden_size, num_kv_heads * head_dim, bias=bias)
        self.v_proj = Linear(hidden_size, num_kv_heads * head_dim, bias=bias)
        self.o_proj = Linear(num_heads * head_dim, hidden_size, bias=bias)
        self.q_norm: Module | None = None
        self.k_norm: Module | None = None
        if qk_norm == "rms":
            self.q_norm, self.k_norm = RMSNorm(head_dim, eps=eps), RMSNorm(head_dim, eps=eps)
        elif qk_norm == "identity":
            self.q_norm, self.k_norm = Identity(), Identity()

    def forward(self, hidden_states: np.ndarray, position_embeddings: tuple[np.ndarray, np.ndarray],
                attention_mask: np.ndarray | None, past_key_values: dict | None = None,
                cache_position: np.ndarray | None = None, **kwargs: Any) -> tuple[np.ndarray, np.ndarray | None]:  # fmt: skip
        query, key, value = self.project(hidden_states)  # (B, H, T, D), (B, H_kv, T, D), (B, H_kv, T, D)
        query, key = self.rotate(query, key, *position_embeddings)  # same shapes, rotated by position
        return self.attend(query, key, value, attention_mask, past_key_values)  # (B, T, C), (B, H, T, S)

    def project(self, hidden_states: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(B, T, C) -> query (B, H, T, D), key and value (B, H_kv, T, D), q/k normed per head."""
        heads = (*hidden_states.shape[:-1], -1, self.head_dim)  # (B, T, heads, D)
        query = self.q_proj(hidden_states).reshape(heads)  # (B, T, H, D)
        if self.q_norm is not None:
            query = self.q_norm(query)
        key = self.k_proj(hidden_states).reshape(heads)  # (B, T, H_kv, D)
        if self.k_norm is not None:
            key = self.k_norm(key)
        value = self.v_proj(hidden_states).reshape(heads)  # (B, T, H_kv, D)
        return query.transpose(0, 2, 1, 3), key.transpose(0, 2, 1, 3), value.transpose(0, 2, 1, 3)  # (B, heads, T, D)

    def rotate(self, query: np.ndarray, key: np.ndarray, cos: np.ndarray, sin: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """RoPE on query and key; cos/sin (B, T, D)."""
        return apply_rotary_pos_emb(query, key, cos, sin)

    def attend(self, query: np.ndarray, key: np.ndarray, value: np.ndarray, attention_mask: np.ndarray | None,
               past_key_values: dict | None, implementation: str | None = None
               ) -> tuple[np.ndarray, np.ndarray | None]:  # fmt: skip
        """Append to the cache, attend, merge the heads, project: (B, T, C) and the weights (B, H, T, S)."""
        if past_key_values is not None:
            key, value = cache_update(past_key_values, self.layer_idx, key, value)  # (B, H_kv, S, D)
        implementation = implementation or self.implementation
        output, weights = attention(query, key, value, attention_mask, self.scaling, implementation)  # (B, T, H, D)
        output = self.o_proj(output.reshape(*output.shape[:2], -1))  # (B, T, H * D) -> (B, T, C)
        return output, (weights if implementation == "eager" else None)
