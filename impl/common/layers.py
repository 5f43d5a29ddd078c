"""Leaf layers: NumPy twins of the torch.nn modules (and transformers' small modules) that every model
here is built from, with the official attribute and parameter names. Each forward keeps its input's
dtype. Layouts: (B, T, C) into Linear, norms and MLPs; (B, C, T) into convolutions and SnakeBeta.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import functional as F
from .nn import Module


class Linear(Module):
    """nn.Linear: y = x W^T + b, W (out, in)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        self.in_features, self.out_features = in_features, out_features
        self.params = ("weight", "bias") if bias else ("weight",)
        self.weight: np.ndarray | None = None
        self.bias: np.ndarray | None = None

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"weight": (self.out_features, self.in_features), "bias": (self.out_features,)}

    def forward(self, input: np.ndarray, *args: Any, **kwargs: Any) -> np.ndarray:
        # (..., in) -> (..., out): one GEMM per batch item, so an item's result never depends on the others
        output = input @ self.weight.T  # (..., in) @ (in, out)
        if self.bias is not None:
            output += self.bias
        return output


class Identity(Module):
    """nn.Identity."""

    def forward(self, input: Any, *args: Any, **kwargs: Any) -> Any:
        return input


class Embedding(Module):
    """nn.Embedding: rows of the table, ids (...) -> (..., dim)."""

    params = ("weight",)

    def __init__(self, num_embeddings: int, embedding_dim: int) -> None:
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.weight: np.ndarray | None = None

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"weight": (self.num_embeddings, self.embedding_dim)}

    def forward(self, input: Any, **kwargs: Any) -> np.ndarray:
        return self.weight[np.asarray(input, dtype=np.int64)]


# -- norms and scales ---------------------------------------------------------------------------------------------


class RMSNorm(Module):
    """Qwen3RMSNorm (transformers/models/qwen3/modeling_qwen3.py), copied as Qwen3TTSRMSNorm and
    Qwen3TTSTokenizerV2DecoderRMSNorm: w * x * rsqrt(mean(x^2) + eps) over the last axis. The official
    computes in float32 for every input dtype; here in the input's dtype, which is float32 in float32
    mode and the clean float64 of the oracle in float64 mode."""

    params = ("weight",)

    def __init__(self, hidden_size: int, eps: float = 1e-6) -> None:
        self.hidden_size, self.variance_epsilon = hidden_size, eps
        self.weight: np.ndarray | None = None

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"weight": (self.hidden_size,)}

    def forward(self, hidden_states: np.ndarray, **kwargs: Any) -> np.ndarray:
        return F.rms_norm(hidden_states, self.weight, self.variance_epsilon)


class LayerNorm(Module):
    """nn.LayerNorm over the last axis: (x - mean) / sqrt(var + eps) * w + b."""

    params = ("weight", "bias")

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        self.dim, self.eps = dim, eps
        self.weight: np.ndarray | None = None
        self.bias: np.ndarray | None = None

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"weight": (self.dim,), "bias": (self.dim,)}

    def forward(self, x: np.ndarray, **kwargs: Any) -> np.ndarray:
        return F.layer_norm(x, self.weight, self.bias, self.eps)


class LayerScale(Module):
    """MimiLayerScale (transformers/models/mimi/modeling_mimi.py), copied as
    Qwen3TTSTokenizerV2DecoderLayerScale: a learnt per-channel scale of a residual branch, x * scale."""

    params = ("scale",)

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.scale: np.ndarray | None = None

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"scale": (self.dim,)}

    def forward(self, x: np.ndarray, **kwargs: Any) -> np.ndarray:
        return self.scale * x


# -- activations ----------------------------------------------------------------------------------------------------


class SiLU(Module):
    """nn.SiLU / transformers' SiLUActivation: x * sigmoid(x)."""

    def forward(self, input: np.ndarray, **kwargs: Any) -> np.ndarray:
        return F.silu(input)


class GELU(Module):
    """Exact GELU (nn.GELU() and transformers' "gelu"): 0.5 x (1 + erf(x / sqrt 2))."""

    def forward(self, input: np.ndarray, **kwargs: Any) -> np.ndarray:
        return F.gelu(input)


class ELU(Module):
    """nn.ELU: x for x > 0, alpha (exp(x) - 1) otherwise."""

    def __init__(self, alpha: float = 1.0) -> None:
        self.alpha = alpha

    def forward(self, input: np.ndarray, **kwargs: Any) -> np.ndarray:
        return F.elu(input, self.alpha)


class ReLU(Module):
    """nn.ReLU: max(x, 0)."""

    def forward(self, input: np.ndarray, **kwargs: Any) -> np.ndarray:
        return F.relu(input)


class Sigmoid(Module):
    """nn.Sigmoid: 1 / (1 + exp(-x))."""

    def forward(self, input: np.ndarray, **kwargs: Any) -> np.ndarray:
        return F.sigmoid(input)


class Tanh(Module):
    """nn.Tanh."""

    def forward(self, input: np.ndarray, **kwargs: Any) -> np.ndarray:
        return np.tanh(input)


class SnakeBeta(Module):
    """SnakeBeta (qwen_tts/core/tokenizer_12hz/modeling_qwen3_tts_tokenizer_v2.py, from BigVGAN), per
    channel of (B, C, T): x + 1 / (exp(beta) + 1e-9) * sin^2(x * exp(alpha)), alpha and beta stored as logs."""

    params = ("alpha", "beta")

    def __init__(self, in_features: int) -> None:
        self.in_features = in_features
        self.no_div_by_zero = 0.000000001
        self.alpha: np.ndarray | None = None
        self.beta: np.ndarray | None = None

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"alpha": (self.in_features,), "beta": (self.in_features,)}

    def forward(self, hidden_states: np.ndarray, **kwargs: Any) -> np.ndarray:
        alpha = np.exp(self.alpha)[None, :, None]  # (1, C, 1)
        beta = np.exp(self.beta)[None, :, None]  # (1, C, 1)
        eps = np.asarray(self.no_div_by_zero, dtype=beta.dtype)
        periodic = hidden_states * alpha  # in place from here: same operations, fewer temporaries
        np.sin(periodic, out=periodic)
        np.square(periodic, out=periodic)
        periodic *= 1.0 / (beta + eps)
        periodic += hidden_states
        return periodic


ACT2FN = {"silu": SiLU, "swish": SiLU, "gelu": GELU, "elu": ELU, "relu": ReLU}


def activation(name: str) -> Module:
    """transformers' ACT2FN[name] as a module."""
    if name not in ACT2FN:
        raise NotImplementedError(f"activation {name!r} is not implemented (only {', '.join(ACT2FN)})")
    return ACT2FN[name]()


class GatedMLP(Module):
    """The SwiGLU MLP of every Qwen3-family decoder layer: Qwen3MLP, copied as Qwen3TTSTalkerTextMLP and
    Qwen3TTSTokenizerV2DecoderMlp. (B, T, C) -> down(act(gate(x)) * up(x)) -> (B, T, C)."""

    def __init__(self, hidden_size: int, intermediate_size: int, hidden_act: str = "silu") -> None:
        self.gate_proj = Linear(hidden_size, intermediate_size, bias=False)
        self.up_proj = Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = Linear(intermediate_size, hidden_size, bias=False)
        self.act_fn = activation(hidden_act)

    def forward(self, x: np.ndarray, **kwargs: Any) -> np.ndarray:
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))  # (B, T, I) inside


# -- convolutions ---------------------------------------------------------------------------------------------------


class Conv1d(Module):
    """nn.Conv1d on (B, C_in, T) -> (B, C_out, T_out). padding "valid" (every caller of the codec pads
    explicitly first) or "same" with `padding_mode` ("reflect" in the speaker encoder): d(k-1) samples,
    the extra one on the right. im2col: sum as one matrix product (functional.conv1d_im2col, stride 1 and
    no groups: torch's order for the speaker encoder) instead of one per tap (memory-light for waveforms)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, dilation: int = 1,
                 groups: int = 1, bias: bool = True, padding: str = "valid", padding_mode: str = "constant",
                 im2col: bool = False) -> None:  # fmt: skip
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.stride, self.dilation, self.groups = stride, dilation, groups
        self.padding, self.padding_mode, self.im2col = padding, padding_mode, im2col
        self.params = ("weight", "bias") if bias else ("weight",)
        self.weight: np.ndarray | None = None
        self.bias: np.ndarray | None = None

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"weight": (self.out_channels, self.in_channels // self.groups, self.kernel_size),
                "bias": (self.out_channels,)}  # fmt: skip

    def forward(self, x: np.ndarray, **kwargs: Any) -> np.ndarray:
        if self.padding == "same":
            total = self.dilation * (self.kernel_size - 1)
            x = F.pad1d(x, total // 2, total - total // 2, self.padding_mode)  # (B, C_in, T + total)
        if self.im2col:
            return F.conv1d_im2col(x, self.weight, self.bias, self.dilation)
        return F.conv1d(x, self.weight, self.bias, self.stride, self.dilation, self.groups)


class ConvTranspose1d(Module):
    """nn.ConvTranspose1d without padding: (B, C_in, T) -> (B, C_out, (T - 1) * stride + kernel_size)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1,
                 bias: bool = True) -> None:  # fmt: skip
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.stride, self.groups = stride, groups
        self.params = ("weight", "bias") if bias else ("weight",)
        self.weight: np.ndarray | None = None
        self.bias: np.ndarray | None = None

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"weight": (self.in_channels, self.out_channels // self.groups, self.kernel_size),
                "bias": (self.out_channels,)}  # fmt: skip

    def forward(self, x: np.ndarray, **kwargs: Any) -> np.ndarray:
        return F.conv_transpose1d(x, self.weight, self.bias, self.stride, self.groups)
