"""Building blocks shared by the talker and the code predictor, one small class per official module.

Every class mirrors a torch module of the official code (`nn.Linear`, `nn.Embedding`,
`Qwen3TTSRMSNorm`, `SiLUActivation`, `Qwen3TTSTalkerTextMLP`...) with the same attribute names, so a
bound tree has the official module paths. A class lists the checkpoint tensors it owns in `params`;
`load_params` fills them by official name.

Also here: the KV cache as a plain dict (the layout the goldens record a `DynamicCache` in), the causal
mask transformers' `create_causal_mask` builds for eager attention, and `eager_attention_forward`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .nn import Module, shape_mismatch
from .ops import rotate_half, silu


class Linear(Module):
    """nn.Linear: y = x W^T + b."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        self.in_features, self.out_features = in_features, out_features
        self.params = ("weight", "bias") if bias else ("weight",)
        self.weight: np.ndarray | None = None
        self.bias: np.ndarray | None = None

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"weight": (self.out_features, self.in_features), "bias": (self.out_features,)}

    def forward(self, input: np.ndarray, **kwargs: Any) -> np.ndarray:
        # one 2-D GEMM over all leading dimensions
        flat = input.reshape(-1, input.shape[-1]) @ self.weight.T
        if self.bias is not None:
            flat += self.bias
        return flat.reshape(*input.shape[:-1], self.out_features)


class Identity(Module):
    """nn.Identity (the code predictor's `small_to_mtp_projection` when both widths are equal)."""

    params = ()

    def forward(self, input: np.ndarray, *args: Any, **kwargs: Any) -> np.ndarray:
        return input


class Embedding(Module):
    """nn.Embedding: rows of the table."""

    params = ("weight",)

    def __init__(self, num_embeddings: int, embedding_dim: int) -> None:
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.weight: np.ndarray | None = None

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"weight": (self.num_embeddings, self.embedding_dim)}

    def forward(self, input: Any, **kwargs: Any) -> np.ndarray:
        return self.weight[np.asarray(input, dtype=np.int64)]


class RMSNorm(Module):
    """Qwen3TTSRMSNorm. The official computes in float32 for every input dtype; here in the input's
    dtype, which is float32 in float32 mode and the clean float64 of the oracle in float64 mode."""

    params = ("weight",)

    def __init__(self, hidden_size: int, eps: float = 1e-6) -> None:
        self.hidden_size, self.variance_epsilon = hidden_size, eps
        self.weight: np.ndarray | None = None

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"weight": (self.hidden_size,)}

    def forward(self, hidden_states: np.ndarray, **kwargs: Any) -> np.ndarray:
        # w * x * rsqrt(mean(x^2) + eps)
        variance = np.mean(hidden_states * hidden_states, axis=-1, keepdims=True)
        return self.weight * (hidden_states * (1 / np.sqrt(variance + self.variance_epsilon)))


class SiLUActivation(Module):
    """transformers' SiLUActivation (ACT2FN["silu"])."""

    params = ()

    def forward(self, input: np.ndarray, **kwargs: Any) -> np.ndarray:
        return silu(input)


ACTIVATIONS = {"silu": SiLUActivation}


def activation(name: str) -> Module:
    if name not in ACTIVATIONS:
        raise NotImplementedError(f"activation {name!r} is not implemented (only {', '.join(ACTIVATIONS)})")
    return ACTIVATIONS[name]()


class TextMLP(Module):
    """Qwen3TTSTalkerTextMLP, the SwiGLU MLP of every decoder layer: down(act(gate(x)) * up(x))."""

    def __init__(self, hidden_size: int, intermediate_size: int, hidden_act: str) -> None:
        self.gate_proj = Linear(hidden_size, intermediate_size, bias=False)
        self.up_proj = Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = Linear(intermediate_size, hidden_size, bias=False)
        self.act_fn = activation(hidden_act)

    def forward(self, x: np.ndarray, **kwargs: Any) -> np.ndarray:
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


# -- weights ----------------------------------------------------------------------------------------------


def load_params(root: Module, tensors: dict[str, np.ndarray], dtype: Any, skip_prefixes: tuple[str, ...] = ()) -> None:
    """Fill every module's `params` from the checkpoint tensors named `<official path>.<param>`.

    Raises KeyError naming what is missing, and ValueError for checkpoint tensors nothing uses (except
    those under `skip_prefixes`) or shapes that disagree."""
    used = set()
    for path, module in root.named_modules():
        for name in getattr(module, "params", ()):
            key = f"{path}.{name}" if path else name
            if key not in tensors:
                raise KeyError(f"checkpoint has no tensor {key!r}")
            value = np.ascontiguousarray(tensors[key], dtype=dtype)
            problem = shape_mismatch(module, name, value)
            if problem:
                raise ValueError(f"{key}: {problem}")
            setattr(module, name, value)
            used.add(key)
    unused = [k for k in tensors if k not in used and not k.startswith(skip_prefixes)]
    if unused:
        raise ValueError(f"checkpoint tensors not used by the model: {', '.join(sorted(unused)[:10])}")


# -- KV cache -------------------------------------------------------------------------------------------------
# A DynamicCache as the goldens record it: {"layers": [{"type": "DynamicLayer", "keys": array | None,
# "values": array | None}, ...]}, keys/values of shape (batch, kv heads, positions, head dim).


def new_cache(num_layers: int = 0) -> dict[str, Any]:
    """An empty cache; generate pre-creates one empty layer per decoder layer (DynamicCache(config=...))."""
    return {"layers": [_empty_layer() for _ in range(num_layers)]}


def _empty_layer() -> dict[str, Any]:
    return {"type": "DynamicLayer", "keys": None, "values": None}


def cache_update(cache: dict[str, Any], layer_idx: int, keys: np.ndarray, values: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """DynamicCache.update: append along the position axis, return the layer's full keys and values."""
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
    if cache is None or len(cache["layers"]) <= layer_idx or cache["layers"][layer_idx].get("keys") is None:
        return 0
    return int(cache["layers"][layer_idx]["keys"].shape[-2])


# -- masks and attention ------------------------------------------------------------------------------------------


def causal_mask(attention_mask: np.ndarray | None, cache_position: np.ndarray, batch: int, kv_length: int,
                dtype: Any) -> np.ndarray:  # fmt: skip
    """create_causal_mask for eager attention: (batch, 1, queries, kv_length), 0 where query i (at
    absolute position cache_position[i]) may see key j (j <= cache_position[i] and attention_mask[j] is 1),
    the dtype's most negative finite value elsewhere."""
    cache_position = np.asarray(cache_position, dtype=np.int64)
    allowed = np.arange(kv_length)[None, :] <= cache_position[:, None]  # (q, kv)
    allowed = np.broadcast_to(allowed[None, None], (batch, 1, len(cache_position), kv_length))
    if attention_mask is not None:
        padding = np.asarray(attention_mask)[:, :kv_length].astype(bool)
        allowed = allowed & padding[:, None, None, :]
    return np.where(allowed, np.zeros((), dtype), np.array(np.finfo(dtype).min, dtype))


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    shifted = x - np.max(x, axis=axis, keepdims=True)
    e = np.exp(shifted)
    return e / np.sum(e, axis=axis, keepdims=True)


def eager_attention_forward(query: np.ndarray, key: np.ndarray, value: np.ndarray, attention_mask: np.ndarray | None,
                            scaling: float) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """softmax(q k^T * scaling + mask) v with grouped-query attention: query (B, H, Lq, D), key/value
    (B, H_kv, Lk, D). Each kv head serves H / H_kv consecutive query heads (repeat_kv), done by
    broadcasting instead of copying. Returns (output (B, Lq, H, D), weights (B, H, Lq, Lk))."""
    batch, heads, q_len, head_dim = query.shape
    kv_heads, k_len = key.shape[1], key.shape[2]
    n_rep = heads // kv_heads
    q = query.reshape(batch, kv_heads, n_rep, q_len, head_dim)
    scores = (q @ np.swapaxes(key, -1, -2)[:, :, None]) * np.asarray(scaling, dtype=query.dtype)
    scores = scores.reshape(batch, heads, q_len, k_len)
    if attention_mask is not None:
        scores = scores + attention_mask[:, :, :, :k_len]
    weights = softmax(scores, axis=-1).astype(query.dtype)  # the official softmax runs in float32 for float32
    out = weights.reshape(batch, kv_heads, n_rep, q_len, k_len) @ value[:, :, None]
    out = out.reshape(batch, heads, q_len, head_dim)
    return np.ascontiguousarray(np.swapaxes(out, 1, 2)), weights


def apply_rotary_pos_emb(q: np.ndarray, k: np.ndarray, cos: np.ndarray, sin: np.ndarray
                         ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """1-D RoPE: x cos + rotate_half(x) sin, cos/sin (B, L, D) broadcast over heads."""
    cos, sin = cos[:, None], sin[:, None]
    return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin


def default_inv_freq(head_dim: int, theta: float, dtype: Any) -> np.ndarray:
    """Default RoPE inverse frequencies 1 / theta^(2i / d), computed in `dtype` (the official computes them
    in float32 at init; the float64 oracle in float64)."""
    exponent = np.arange(0, head_dim, 2, dtype=np.int64).astype(dtype) / np.asarray(head_dim, dtype=dtype)
    return (1.0 / (np.asarray(theta, dtype=dtype) ** exponent)).astype(dtype)


def compute_dtype(dtype: Any) -> np.dtype:
    """promote_types(dtype, float32): where the official forces float32, we compute in this."""
    return np.promote_types(np.dtype(dtype), np.float32)
