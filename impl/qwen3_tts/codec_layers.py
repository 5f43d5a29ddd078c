"""Leaf layers of the 12 Hz codec: NumPy twins of the torch.nn modules the official code hooks
(nn.Linear, nn.Conv1d, nn.ConvTranspose1d, nn.LayerNorm, nn.Identity, activations, nn.ModuleList).

Each class lists its parameters in `_params` (official names: `weight`, `bias`, ...); `load_weights`
fills them from a checkpoint by official path. Every forward keeps the input dtype.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from . import ops
from .nn import Module, shape_mismatch


class Parametrized(Module):
    """A module with parameters named in `_params` (required) and `_optional` (may be absent)."""

    _params: tuple[str, ...] = ()
    _optional: tuple[str, ...] = ()


class ModuleList(list, Module):  # type: ignore[misc]
    """nn.ModuleList: indexable, its items get paths `<name>.<i>`. Never called itself."""

    def __init__(self, items: Any = ()) -> None:
        list.__init__(self, items)

    def children(self) -> Iterator[tuple[str, Module]]:
        for i, item in enumerate(self):
            yield str(i), item

    __hash__ = object.__hash__  # type: ignore[assignment]


class Identity(Module):
    def forward(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        return x


class Linear(Parametrized):
    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        self.in_features, self.out_features = in_features, out_features
        self._params = ("weight", "bias") if bias else ("weight",)
        self.weight: np.ndarray | None = None
        self.bias: np.ndarray | None = None

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"weight": (self.out_features, self.in_features), "bias": (self.out_features,)}

    def forward(self, x: np.ndarray) -> np.ndarray:
        return ops.linear(x, self.weight, self.bias)


class Conv1d(Parametrized):
    """nn.Conv1d without padding (every official caller pads explicitly first)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, dilation: int = 1,
                 groups: int = 1, bias: bool = True) -> None:  # fmt: skip
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.stride, self.dilation, self.groups = stride, dilation, groups
        self._params = ("weight", "bias") if bias else ("weight",)
        self.weight: np.ndarray | None = None
        self.bias: np.ndarray | None = None

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        weight = (self.out_channels, self.in_channels // self.groups, self.kernel_size)
        return {"weight": weight, "bias": (self.out_channels,)}

    def forward(self, x: np.ndarray) -> np.ndarray:
        return ops.conv1d_gemm(x, self.weight, self.bias, self.stride, self.dilation, self.groups)


class ConvTranspose1d(Parametrized):
    """nn.ConvTranspose1d without padding: output length (L - 1) * stride + kernel_size."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1,
                 bias: bool = True) -> None:  # fmt: skip
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.stride, self.groups = stride, groups
        self._params = ("weight", "bias") if bias else ("weight",)
        self.weight: np.ndarray | None = None
        self.bias: np.ndarray | None = None

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        weight = (self.in_channels, self.out_channels // self.groups, self.kernel_size)
        return {"weight": weight, "bias": (self.out_channels,)}

    def forward(self, x: np.ndarray) -> np.ndarray:
        return ops.conv_transpose1d_gemm(x, self.weight, self.bias, self.stride, self.groups)


class LayerNorm(Parametrized):
    _params = ("weight", "bias")

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        self.dim, self.eps = dim, eps
        self.weight: np.ndarray | None = None
        self.bias: np.ndarray | None = None

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"weight": (self.dim,), "bias": (self.dim,)}

    def forward(self, x: np.ndarray) -> np.ndarray:
        return ops.layer_norm(x, self.weight, self.bias, self.eps)


class SiLU(Module):
    def forward(self, x: np.ndarray) -> np.ndarray:
        return ops.silu(x)


class GELU(Module):
    """Exact GELU (nn.GELU() and transformers' "gelu"): 0.5 x (1 + erf(x / sqrt 2))."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        return ops.gelu(x)


class ELU(Module):
    def __init__(self, alpha: float = 1.0) -> None:
        self.alpha = alpha

    def forward(self, x: np.ndarray) -> np.ndarray:
        return ops.elu(x, self.alpha)


ACTIVATIONS = {"silu": SiLU, "swish": SiLU, "gelu": GELU, "elu": ELU}


def activation(name: str) -> Module:
    """transformers' ACT2FN[name] as a module."""
    if name not in ACTIVATIONS:
        raise NotImplementedError(f"activation {name!r} is not implemented")
    return ACTIVATIONS[name]()


# -- masks and rotary embeddings shared by both transformers ---------------------------------------------


def causal_mask(batch: int, length: int, sliding_window: int | None = None, implementation: str = "sdpa",
                dtype: Any = np.float32) -> np.ndarray:  # fmt: skip
    """The (B, 1, L, L) mask transformers builds: key j <= query i, and with a window also
    i - j < sliding_window. For SDPA a boolean keep-mask; for eager an additive one (0 / finfo.min)."""
    i = np.arange(length)[:, None]
    j = np.arange(length)[None, :]
    allowed = j <= i
    if sliding_window is not None:
        allowed &= i - j < sliding_window
    allowed = np.broadcast_to(allowed, (batch, 1, length, length))
    if implementation == "eager":
        return np.where(allowed, np.asarray(0, dtype=dtype), np.asarray(np.finfo(dtype).min, dtype=dtype))
    return allowed.copy()


def rope_inv_freq(head_dim: int, theta: float, dtype: np.dtype) -> np.ndarray:
    """Default RoPE inverse frequencies 1 / theta^(2i / d), computed in `dtype` (official: float32)."""
    exponent = np.arange(0, head_dim, 2, dtype=np.int64).astype(dtype) / np.asarray(head_dim, dtype=dtype)
    return (1.0 / (np.asarray(theta, dtype=dtype) ** exponent)).astype(dtype)


def rope_cos_sin(inv_freq: np.ndarray, position_ids: np.ndarray, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin of position * inv_freq, duplicated over both halves: (B, L, head_dim) each."""
    freqs = np.asarray(position_ids).astype(inv_freq.dtype)[:, :, None] * inv_freq[None, None, :]
    emb = np.concatenate((freqs, freqs), axis=-1)
    return np.cos(emb).astype(dtype), np.sin(emb).astype(dtype)


def attend(query: np.ndarray, key: np.ndarray, value: np.ndarray, attention_mask: np.ndarray | None, scaling: float,
           implementation: str = "sdpa") -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Attention as the official modules run it. "sdpa" (transformers' default): a boolean mask keeps its
    True entries, a float mask is added, no mask means causal. "eager": the mask is added as it is (a
    boolean one as 0/1: eager expects the additive mask the model builds). Returns ((B, L, H, D), weights)."""
    if implementation == "eager":
        mask = None if attention_mask is None else attention_mask.astype(query.dtype, copy=False)
        return ops.attention(query, key, value, mask, scaling)
    if attention_mask is None and query.shape[2] > 1:
        attention_mask = causal_mask(query.shape[0], query.shape[2])
    if attention_mask is not None and attention_mask.dtype == np.bool_:
        zero, blocked = np.asarray(0, dtype=query.dtype), np.asarray(-np.inf, dtype=query.dtype)
        attention_mask = np.where(attention_mask, zero, blocked)
    return ops.attention(query, key, value, attention_mask, scaling)


# -- weights ------------------------------------------------------------------------------------------------


class WeightError(KeyError):
    """Checkpoint tensors missing, or of another shape than the config gives, for the module tree."""


def load_weights(root: Module, tensors: Mapping[str, np.ndarray], prefix: str) -> list[str]:
    """Fill every `_params` entry of the tree below `root` (bound at `prefix`) from `tensors`, keyed by the
    official parameter name relative to the prefix. Returns the checkpoint names nothing used."""
    used: set[str] = set()
    missing: list[str] = []
    for path, module in root.named_modules():
        if not isinstance(module, Parametrized):
            continue
        relative = (
            path[len(prefix) + 1 :] if prefix and path.startswith(prefix + ".") else ("" if path == prefix else path)
        )
        for name in (*module._params, *module._optional):
            key = f"{relative}.{name}" if relative else name
            if key in tensors:
                problem = shape_mismatch(module, name, tensors[key])
                if problem:
                    raise WeightError(f"{key}: {problem}")
                setattr(module, name, tensors[key])
                used.add(key)
            elif name in module._params:
                missing.append(key)
    if missing:
        shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
        raise WeightError(f"checkpoint lacks {len(missing)} tensor(s): {shown}")
    return sorted(set(tensors) - used)
