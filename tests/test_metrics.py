"""Metrics against hand-computed values, NaN/Inf, zeros, empties, integers, bfloat16, streaming."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from conformance.metrics import MetricAccumulator, compare_arrays
from conformance.store.schema import bfloat16_to_float32, float32_to_bfloat16_bits


def test_hand_computed_values() -> None:
    golden = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
    candidate = np.array([1.0, 2.0, 3.0, 5.0], np.float32)
    m = compare_arrays(golden, candidate, atol=0.5, rtol=0.1)
    # d = [0, 0, 0, 1]; |g| = sqrt(30); |c| = sqrt(39); g.c = 34
    assert m.max_abs == 1.0 and m.mean_abs == 0.25
    assert m.max_rel == pytest.approx(0.25)
    assert m.rel_l2 == pytest.approx(1 / math.sqrt(30))
    assert m.cosine == pytest.approx(34 / math.sqrt(30 * 39))
    assert m.snr_db == pytest.approx(20 * math.log10(math.sqrt(30)))
    assert m.max_ulp == pytest.approx(1 / np.spacing(np.float32(4.0)))  # 2**21 ulps of 4.0 in float32
    assert m.worst_index == (3,)
    # |d| <= 0.5 + 0.1 |g| fails only at index 3 (1 > 0.9); smallest passing atol there is 0.6, rtol 0.125
    assert (m.n_outside, m.first_outside, m.frac_outside) == (1, (3,), 0.25)
    assert m.min_atol == pytest.approx(0.6) and m.min_rtol == pytest.approx(0.125)
    assert not m.exact


def test_identical_tensors_are_exact_with_zero_error() -> None:
    x = np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32)
    m = compare_arrays(x, x.copy())
    assert m.exact and m.max_abs == 0 and m.rel_l2 == 0 and m.cos_dist == 0 and m.snr_db == math.inf


def test_nan_and_inf_are_compared_by_position() -> None:
    golden = np.array([1.0, np.nan, np.inf, -np.inf, 2.0], np.float32)
    same = compare_arrays(golden, golden.copy())
    assert same.exact and same.nonfinite_mismatch == 0
    candidate = golden.copy()
    candidate[4] = np.nan
    m = compare_arrays(golden, candidate)
    assert m.nonfinite_mismatch == 1 and m.first_nonfinite_mismatch == (4,) and m.n_outside == 1
    flipped = golden.copy()
    flipped[2] = -np.inf
    assert compare_arrays(golden, flipped).first_nonfinite_mismatch == (2,)


def test_zero_tensors() -> None:
    zeros = np.zeros((2, 2), np.float32)
    assert compare_arrays(zeros, zeros).rel_l2 == 0
    m = compare_arrays(zeros, zeros + 1e-3)
    assert m.rel_l2 == math.inf and m.max_abs == pytest.approx(1e-3) and m.cos_dist == 1.0


def test_empty_tensors() -> None:
    m = compare_arrays(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.float32))
    assert m.numel == 0 and m.max_abs == 0 and m.exact


def test_integer_tensors_are_exact_or_counted() -> None:
    golden = np.array([[1, 2, 3], [4, 5, 6]])
    assert compare_arrays(golden, golden.copy()).exact
    candidate = golden.copy()
    candidate[1, 0] = 7
    m = compare_arrays(golden, candidate)
    assert not m.exact and m.integer_mismatch == 1 and m.first_outside == (1, 0)


def test_bfloat16_ulps_are_counted_in_bfloat16() -> None:
    values = np.array([1.0, 2.0, 3.0], np.float32)
    golden = bfloat16_to_float32(float32_to_bfloat16_bits(values))
    candidate = golden.copy()
    candidate[2] = np.nextafter(np.float32(3.0), np.float32(4.0)) * 0 + 3.0 + 2.0**-6  # one bfloat16 ulp at 3
    m = compare_arrays(golden, candidate, dtype="bfloat16")
    assert m.max_ulp == pytest.approx(1.0)


def test_cosine_distance_is_right_below_float32_resolution() -> None:
    rng = np.random.default_rng(1)
    golden = rng.standard_normal(50_000).astype(np.float32)
    candidate = (golden * (1 + 1e-7 * rng.standard_normal(golden.size))).astype(np.float32)
    m = compare_arrays(golden, candidate)
    g, c = golden.astype(np.longdouble), candidate.astype(np.longdouble)
    exact = 1 - (g * c).sum() / np.sqrt((g * g).sum() * (c * c).sum())
    assert m.cos_dist == pytest.approx(float(exact), rel=1e-3)
    assert m.cos_dist == pytest.approx(m.rel_l2**2 / 2, rel=0.05)
    # A cosine built from float32 dot products cannot resolve this at all.
    naive = 1 - float(np.dot(golden, candidate) / np.sqrt(np.dot(golden, golden) * np.dot(candidate, candidate)))
    assert abs(naive - float(exact)) > 0.5 * float(exact)


def test_large_finite_values_do_not_overflow_the_sums() -> None:
    mask = np.array([0.0, np.finfo(np.float32).min, 0.0], np.float32)
    m = compare_arrays(mask, mask.copy())
    assert m.exact and math.isfinite(m.rel_l2)


@given(
    hnp.arrays(np.float32, st.integers(1, 3000), elements=st.floats(-1e3, 1e3, width=32)),
    st.integers(1, 700),
)
def test_streaming_in_any_chunk_size_gives_the_same_metrics(golden: np.ndarray, chunk: int) -> None:
    candidate = (golden + np.float32(1e-3) * np.sin(np.arange(golden.size, dtype=np.float32))).astype(np.float32)
    whole = compare_arrays(golden, candidate, atol=1e-4, rtol=1e-3, chunk=golden.size)
    acc = MetricAccumulator(golden.shape, "float32", 1e-4, 1e-3)
    for start in range(0, golden.size, chunk):
        acc.update(golden[start : start + chunk], candidate[start : start + chunk])
    streamed = acc.result()
    for name in ("max_abs", "max_rel", "max_ulp", "min_atol", "min_rtol"):
        assert getattr(streamed, name) == getattr(whole, name), name
    assert streamed.n_outside == whole.n_outside and streamed.first_outside == whole.first_outside
    assert streamed.rel_l2 == pytest.approx(whole.rel_l2, rel=1e-4, abs=1e-12)
    assert streamed.mean_abs == pytest.approx(whole.mean_abs, rel=1e-5, abs=1e-12)


def test_audio_metrics_see_level_spectrum_and_a_click_in_one_frame() -> None:
    from conformance.metrics import audio_metrics, audio_thresholds

    rng = np.random.default_rng(7)
    t = np.arange(24000 // 10) / 24000.0
    wave = (0.3 * np.sin(2 * np.pi * 220 * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)
    same = audio_metrics(wave, wave, 24000, 192)
    assert same["snr_db"] == math.inf and same["log_mel"] == 0.0 and same["frame_max_abs"] == 0.0
    quiet = audio_metrics(wave, wave * 1e-3, 24000, 192)
    assert quiet["snr_db"] < 0.01 and quiet["log_mel"] > 2.9  # 1e-3 of the level: 3 decades of mel magnitude
    click = wave.copy()
    click[5 * 192 + 17] += 0.5
    found = audio_metrics(wave, click, 24000, 192)
    assert found["worst_frame"] == 5 and found["frame_max_abs"] == pytest.approx(0.5, rel=1e-6)
    # calibrated: k times the noise's amplitude is 20 log10 k dB of SNR; a bit-exact noise gets the floor
    limits = audio_thresholds({"snr_db": 90.0, "log_mel": 1e-6, "frame_max_abs": 1e-5}, 20.0, 0.3, 1e-6)
    assert limits["snr_db"] == pytest.approx(90.0 - 20 * math.log10(20.0))
    assert limits["frame_max_abs"] == pytest.approx(2e-4) and limits["log_mel"] == pytest.approx(2e-5)
    assert audio_thresholds({"snr_db": math.inf}, 20.0, 0.3, 1e-6)["snr_db"] == pytest.approx(120.0)
