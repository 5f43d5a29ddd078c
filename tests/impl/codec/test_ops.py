"""Property tests of impl.common's functions the codec uses, against torch.nn.functional in float64:
random shapes, channels, groups, kernel sizes, dilations, strides and lengths (length 1 and lengths that
are not multiples of the stride included)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from impl.common import functional as ops
from impl.common.attention import attention, causal_mask
from impl.qwen3_tts.codec_encoder import euclidean_distances

from .helpers import assert_close, rng_array

torch = pytest.importorskip("torch")
F = torch.nn.functional
pytestmark = pytest.mark.official

seeds = st.integers(0, 2**31 - 1)


@given(seed=seeds, batch=st.integers(1, 2), groups=st.integers(1, 3), cin=st.integers(1, 4), cout=st.integers(1, 4),
       kernel=st.integers(1, 7), stride=st.integers(1, 4), dilation=st.integers(1, 3), extra=st.integers(0, 13),
       bias=st.booleans())  # fmt: skip
def test_conv1d(seed: int, batch: int, groups: int, cin: int, cout: int, kernel: int, stride: int, dilation: int,
                     extra: int, bias: bool) -> None:  # fmt: skip
    span = dilation * (kernel - 1) + 1
    x = rng_array(seed, (batch, cin * groups, span + extra))
    w = rng_array(seed + 1, (cout * groups, cin, kernel))
    b = rng_array(seed + 2, (cout * groups,)) if bias else None
    expected = F.conv1d(torch.from_numpy(x), torch.from_numpy(w), None if b is None else torch.from_numpy(b),
                        stride=stride, dilation=dilation, groups=groups)  # fmt: skip
    assert_close(expected, ops.conv1d(x, w, b, stride=stride, dilation=dilation, groups=groups))


def test_conv1d_keeps_float32() -> None:
    x = rng_array(0, (1, 3, 9)).astype(np.float32)
    w = rng_array(1, (2, 3, 3)).astype(np.float32)
    y = ops.conv1d(x, w, np.zeros(2, np.float32), stride=2)
    assert y.dtype == np.float32
    expected = F.conv1d(torch.from_numpy(x), torch.from_numpy(w), stride=2).numpy()
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="shorter than the kernel"):
        ops.conv1d(x[..., :2], w)


@given(seed=seeds, batch=st.integers(1, 2), groups=st.integers(1, 3), cin=st.integers(1, 4), cout=st.integers(1, 4),
       kernel=st.integers(1, 8), stride=st.integers(1, 5), length=st.integers(1, 12), bias=st.booleans())  # fmt: skip
def test_conv_transpose1d(seed: int, batch: int, groups: int, cin: int, cout: int, kernel: int, stride: int,
                               length: int, bias: bool) -> None:  # fmt: skip
    x = rng_array(seed, (batch, cin * groups, length))
    w = rng_array(seed + 1, (cin * groups, cout, kernel))
    b = rng_array(seed + 2, (cout * groups,)) if bias else None
    expected = F.conv_transpose1d(torch.from_numpy(x), torch.from_numpy(w), None if b is None else torch.from_numpy(b),
                                  stride=stride, groups=groups)  # fmt: skip
    assert_close(expected, ops.conv_transpose1d(x, w, b, stride=stride, groups=groups))


@given(seed=seeds, length=st.integers(1, 9), left=st.integers(0, 6), right=st.integers(-1, 6),
       mode=st.sampled_from(["constant", "replicate", "reflect"]))  # fmt: skip
def test_pad1d(seed: int, length: int, left: int, right: int, mode: str) -> None:
    x = rng_array(seed, (2, 3, length))
    if mode == "reflect" and max(left, right) >= length:
        with pytest.raises(ValueError):
            ops.pad1d(x, left, right, mode)
        return
    if right < 0 and mode != "constant":
        right = 0  # torch crops only in constant mode
    if length + left + right <= 0:
        return
    expected = F.pad(torch.from_numpy(x), (left, right), mode=mode)
    assert_close(expected, ops.pad1d(x, left, right, mode))


@given(seed=seeds, n=st.integers(1, 40), m=st.integers(1, 40), dim=st.integers(1, 8))
def test_euclidean_distances_and_nearest(seed: int, n: int, m: int, dim: int) -> None:
    """torch.cdist switches to a matrix-product formula past 25 rows; both branches match, and the
    nearest index (what the codebook search returns) is the same."""
    x, y = rng_array(seed, (n, dim)), rng_array(seed + 1, (m, dim))
    expected = torch.cdist(torch.from_numpy(x)[None], torch.from_numpy(y)[None], p=2)[0]
    got = euclidean_distances(x, y)
    scale = float(np.mean(np.sum(x * x, -1)) + np.mean(np.sum(y * y, -1)))
    np.testing.assert_allclose(got**2, expected.numpy() ** 2, rtol=0, atol=1e-12 * scale)
    assert np.array_equal(np.argmin(got, -1), expected.argmin(-1).numpy())


@given(
    seed=seeds,
    shape=st.tuples(st.integers(1, 3), st.integers(1, 5), st.integers(1, 12)),
    scale=st.sampled_from([0.1, 1.0, 8.0]),
)
def test_elementwise_and_norms(seed: int, shape: tuple[int, int, int], scale: float) -> None:
    x = rng_array(seed, shape, scale)
    t = torch.from_numpy(x)
    w, b = rng_array(seed + 1, shape[-1:]), rng_array(seed + 2, shape[-1:])
    assert_close(F.gelu(t), ops.gelu(x))  # exact erf form (nn.GELU() and transformers' "gelu")
    assert_close(F.elu(t), ops.elu(x))
    assert_close(F.silu(t), ops.silu(x))
    assert_close(
        F.layer_norm(t, shape[-1:], torch.from_numpy(w), torch.from_numpy(b), 1e-5), ops.layer_norm(x, w, b, 1e-5)
    )
    rms = t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + 1e-5) * torch.from_numpy(w)
    assert_close(rms, ops.rms_norm(x, w, 1e-5))


@given(seed=seeds, batch=st.integers(1, 2), heads=st.integers(1, 4), groups=st.integers(1, 2), length=st.integers(1, 12),
       head_dim=st.sampled_from([2, 4, 8]), window=st.none() | st.integers(1, 6))  # fmt: skip
def test_attention_with_causal_masks(seed: int, batch: int, heads: int, groups: int, length: int, head_dim: int,
                                 window: int | None) -> None:  # fmt: skip
    """The attention the codec runs (boolean causal / sliding-window masks, grouped kv heads) against
    torch's scaled_dot_product_attention with the same mask."""
    q = rng_array(seed, (batch, heads * groups, length, head_dim))
    k = rng_array(seed + 1, (batch, heads, length, head_dim))
    v = rng_array(seed + 2, (batch, heads, length, head_dim))
    positions = np.arange(length)
    mask = causal_mask(batch, positions, length, sliding_window=window, boolean=True)
    expected = F.scaled_dot_product_attention(torch.from_numpy(q), torch.from_numpy(k).repeat_interleave(groups, 1),
                                              torch.from_numpy(v).repeat_interleave(groups, 1),
                                              attn_mask=torch.from_numpy(mask), scale=head_dim**-0.5)  # fmt: skip
    assert_close(expected.transpose(1, 2), attention(q, k, v, mask, head_dim**-0.5, "sdpa")[0])
    eager_mask = causal_mask(batch, positions, length, sliding_window=window, dtype=np.float64)  # 0 / finfo.min
    assert eager_mask.dtype == np.float64
    assert_close(expected.transpose(1, 2), attention(q, k, v, eager_mask, head_dim**-0.5, "eager")[0])
    if window is None:  # no mask means causal (SDPA's is_causal path)
        assert_close(expected.transpose(1, 2), attention(q, k, v, None, head_dim**-0.5, "sdpa")[0])
