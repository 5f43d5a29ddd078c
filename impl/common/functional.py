"""Tensor functions (torch.nn.functional's role), written out in NumPy. Every function keeps its input's
dtype (float32 in, float32 out; float64 in, float64 out), so a model runs at the precision it is given;
where the official code forces float32 (norms, softmax, RoPE), the modules compute in
promote_types(input dtype, float32), which is float32 for float32 and float64 for the float64 oracle.

Layouts follow the official code: (B, C, T) for convolutions, (B, T, C) for linear layers and attention.
"""

from __future__ import annotations

import math

import numpy as np


def silu(x: np.ndarray) -> np.ndarray:
    # x * sigmoid(x), written as x / (1 + exp(-x)) (what torch computes)
    return x / (1 + np.exp(-x))


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0)


def elu(x: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    # x for x > 0, alpha * (exp(x) - 1) otherwise
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0)))


# erf by W. J. Cody's rational approximations (Math. Comp. 1969), accurate to double precision.
_ERF_A = (3.16112374387056560e00, 1.13864154151050156e02, 3.77485237685302021e02, 3.20937758913846947e03,
          1.85777706184603153e-1)  # fmt: skip
_ERF_B = (2.36012909523441209e01, 2.44024637934444173e02, 1.28261652607737228e03, 2.84423683343917062e03)
_ERF_C = (5.64188496988670089e-1, 8.88314979438837594e00, 6.61191906371416295e01, 2.98635138197400131e02,
          8.81952221241769090e02, 1.71204761263407058e03, 2.05107837782607147e03, 1.23033935479799725e03,
          2.15311535474403846e-8)  # fmt: skip
_ERF_D = (1.57449261107098347e01, 1.17693950891312499e02, 5.37181101862009858e02, 1.62138957456669019e03,
          3.29079923573345963e03, 4.36261909014324716e03, 3.43936767414372164e03, 1.23033935480374942e03)  # fmt: skip
_ERF_P = (3.05326634961232344e-1, 3.60344899949804439e-1, 1.25781726111229246e-1, 1.60837851487422766e-2,
          6.58749161529837803e-4, 1.63153871373020978e-2)  # fmt: skip
_ERF_Q = (2.56852019228982242e00, 1.87295284992346725e00, 5.27905102951428412e-1, 6.05183413124413191e-2,
          2.33520497626869185e-3)  # fmt: skip


def erf(x: np.ndarray) -> np.ndarray:
    """The error function, computed in float64 and returned in x's dtype."""
    x64 = np.asarray(x, dtype=np.float64)
    y = np.abs(x64)
    out = np.empty_like(y)
    small = y <= 0.46875
    mid = (y > 0.46875) & (y <= 4.0)
    large = y > 4.0
    if small.any():
        ys = y[small]
        z = ys * ys
        num = (((_ERF_A[4] * z + _ERF_A[0]) * z + _ERF_A[1]) * z + _ERF_A[2]) * z + _ERF_A[3]
        den = (((z + _ERF_B[0]) * z + _ERF_B[1]) * z + _ERF_B[2]) * z + _ERF_B[3]
        out[small] = ys * num / den
    if mid.any():
        ym = y[mid]
        num = _ERF_C[8] * ym
        den = ym
        for i in range(7):
            num = (num + _ERF_C[i]) * ym
            den = (den + _ERF_D[i]) * ym
        erfc = (num + _ERF_C[7]) / (den + _ERF_D[7])
        z = np.trunc(ym * 16) / 16
        erfc *= np.exp(-z * z) * np.exp(-(ym - z) * (ym + z))
        out[mid] = 1 - erfc
    if large.any():
        yl = y[large]
        z = 1 / (yl * yl)
        num = _ERF_P[5] * z
        den = z
        for i in range(4):
            num = (num + _ERF_P[i]) * z
            den = (den + _ERF_Q[i]) * z
        r = z * (num + _ERF_P[4]) / (den + _ERF_Q[4])
        r = (1 / math.sqrt(math.pi) - r) / yl
        zt = np.trunc(yl * 16) / 16
        erfc = np.exp(-zt * zt) * np.exp(-(yl - zt) * (yl + zt)) * r
        out[large] = 1 - erfc
    out = np.where(x64 < 0, -out, out)
    return out.astype(np.asarray(x).dtype)


def gelu(x: np.ndarray) -> np.ndarray:
    # exact GELU, as torch.nn.GELU(): 0.5 x (1 + erf(x / sqrt(2)))
    return (0.5 * x * (1 + erf(x * np.asarray(1 / math.sqrt(2), dtype=x.dtype)))).astype(x.dtype)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    # exp(x - max) / sum(exp(x - max)), in x's dtype
    shifted = x - np.max(x, axis=axis, keepdims=True)
    e = np.exp(shifted)
    return e / np.sum(e, axis=axis, keepdims=True)


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    # w * x * rsqrt(mean(x^2) + eps), over the last axis
    variance = np.mean(x * x, axis=-1, keepdims=True)
    return weight * (x * (1 / np.sqrt(variance + np.asarray(eps, dtype=x.dtype))))


def layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    # (x - mean) / sqrt(var + eps) * w + b, biased variance over the last axis
    mean = np.mean(x, axis=-1, keepdims=True)
    centered = x - mean
    variance = np.mean(centered * centered, axis=-1, keepdims=True)
    return centered / np.sqrt(variance + np.asarray(eps, dtype=x.dtype)) * weight + bias


# -- padding and convolutions (BLAS-backed) ---------------------------------------------------------------


def pad1d(x: np.ndarray, left: int, right: int, mode: str = "constant", value: float = 0.0) -> np.ndarray:
    """Pad (or, for negative amounts, crop) the last axis, as torch.nn.functional.pad does for 1-D signals.
    mode: "constant" (value), "replicate" (edge value) or "reflect" (mirror without repeating the edge)."""
    if left < 0:
        x, left = x[..., -left:], 0
    if right < 0:
        x, right = x[..., : x.shape[-1] + right], 0
    if left == 0 and right == 0:
        return x
    widths = [(0, 0)] * (x.ndim - 1) + [(left, right)]
    if mode == "constant":
        return np.pad(x, widths, mode="constant", constant_values=np.asarray(value, dtype=x.dtype))
    if mode == "replicate":
        return np.pad(x, widths, mode="edge")
    if mode == "reflect":
        if max(left, right) >= x.shape[-1]:
            raise ValueError(f"reflect padding {max(left, right)} needs more than {x.shape[-1]} samples")
        return np.pad(x, widths, mode="reflect")
    raise ValueError(f"unknown padding mode {mode!r}")


def conv1d(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None, stride: int = 1, dilation: int = 1,
           groups: int = 1) -> np.ndarray:  # fmt: skip
    """`conv1d` (valid, stride/dilation/groups) computed as one BLAS matrix product per kernel tap:
    y[:, :, t] = sum_k W[:, :, k] @ x[:, :, t * stride + k * dilation]. Same contract, much faster."""
    batch, _, length = x.shape
    c_out, c_group, kernel = weight.shape
    span = dilation * (kernel - 1) + 1
    l_out = (length - span) // stride + 1
    if l_out <= 0:
        raise ValueError(f"input length {length} is shorter than the kernel span {span}")
    dtype = np.result_type(x, weight)

    def tap(source: np.ndarray, k: int) -> np.ndarray:  # the samples that meet kernel tap k, (..., l_out)
        start = k * dilation
        view = source[..., start : start + stride * (l_out - 1) + 1 : stride]
        return view if stride == 1 else np.ascontiguousarray(view)  # BLAS needs unit stride on the last axis

    y: np.ndarray
    if groups == 1:
        y = weight[:, :, 0] @ tap(x, 0)
        for k in range(1, kernel):
            y += weight[:, :, k] @ tap(x, k)
    elif c_group == 1 and c_out == groups:  # depthwise: one filter per channel
        w = weight[:, 0, :, None]  # (C, K, 1)
        y = w[:, 0] * tap(x, 0)
        for k in range(1, kernel):
            y += w[:, k] * tap(x, k)
    else:  # grouped: a batch of matrix products over the groups
        wg = weight.reshape(groups, c_out // groups, c_group, kernel)  # (G, C_out / G, C_in / G, K)
        xg = x.reshape(batch, groups, c_group, length)  # (B, G, C_in / G, T)
        y = wg[..., 0] @ tap(xg, 0)
        for k in range(1, kernel):
            y += wg[..., k] @ tap(xg, k)
        y = y.reshape(batch, c_out, l_out)  # (B, G, C_out / G, T_out) -> (B, C_out, T_out)
    if bias is not None:
        y += bias[:, None]  # (C_out, 1) over time
    return y.astype(dtype, copy=False)


def conv1d_im2col(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None, dilation: int = 1) -> np.ndarray:
    """`conv1d` (valid, stride 1, no groups) as ONE matrix product over (channel, tap) windows, which sums
    in the order torch's CPU convolution does for the speaker encoder (bit-identical there; the per-tap
    `conv1d` differs by rounding). Memory: the windows are kernel_size times the input."""
    c_out, c_in, kernel = weight.shape
    length = x.shape[-1] - dilation * (kernel - 1)
    windows = np.stack([x[:, :, k * dilation : k * dilation + length] for k in range(kernel)], -1)  # (B, C, T, K)
    cols = windows.transpose(0, 2, 1, 3).reshape(x.shape[0], length, c_in * kernel)  # (B, T, C * K)
    out = cols @ weight.reshape(c_out, -1).T  # (B, T, C_out)
    if bias is not None:
        out += bias
    return np.ascontiguousarray(out.transpose(0, 2, 1))  # (B, C_out, T)


def conv_transpose1d(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None, stride: int = 1,
                     groups: int = 1) -> np.ndarray:  # fmt: skip
    """`conv_transpose1d` (no padding, output length (L - 1) * stride + K) as one BLAS product and an
    overlap-add: input i times kernel tap k = q * stride + p lands on output (i + q) * stride + p."""
    batch, c_in, length = x.shape
    _, c_group_out, kernel = weight.shape
    c_group_in = c_in // groups
    c_out = c_group_out * groups
    l_out = (length - 1) * stride + kernel
    dtype = np.result_type(x, weight)
    if groups == 1:
        z = weight.reshape(c_in, c_out * kernel).T @ x  # (B, C_out * K, L)
    else:
        wg = np.swapaxes(weight.reshape(groups, c_group_in, c_group_out * kernel), 1, 2)  # (G, C_out / G * K, C_in / G)
        z = wg @ x.reshape(batch, groups, c_group_in, length)  # (B, G, C_group_out * K, L)
    z = z.reshape(batch, c_out, kernel, length)  # every input sample times every tap
    phases = -(-kernel // stride)  # kernel taps that reach one output phase
    y = np.zeros((batch, c_out, length + phases - 1, stride), dtype=dtype)
    for q in range(phases):
        taps = z[:, :, q * stride : min((q + 1) * stride, kernel), :]  # (B, C_out, p, L)
        y[:, :, q : q + length, : taps.shape[2]] += np.swapaxes(taps, 2, 3)  # (B, C_out, L, p)
    y = y.reshape(batch, c_out, -1)[:, :, :l_out]  # phases interleave into time: (B, C_out, T_out)
    if bias is not None:
        y = y + bias[:, None]  # (C_out, 1) over time
    return np.ascontiguousarray(y, dtype=dtype)
