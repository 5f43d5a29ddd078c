"""The codec's entry points against the official wrapper `Qwen3TTSTokenizer` on the tiny checkpoint, in
clean float64: encode (feature extractor, trimming to the unpadded length, the valid quantizers) and
batched decode (items of different lengths padded with -1, clamped to 0, cut back)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from impl.qwen3_tts import codec

from .helpers import TINY_CODEC, assert_close, require_official, tiny_codec

torch = pytest.importorskip("torch")
require_official()
pytestmark = pytest.mark.official


@pytest.fixture(scope="module")
def official_codec64() -> Any:
    from conformance.subjects.qwen3_tts.checkpoints import load_codec

    return load_codec(TINY_CODEC, torch.float64)


def _clean() -> Any:
    from conformance.subjects.qwen3_tts.precision import clean_precision

    return clean_precision(torch.float64)


@given(seed=st.integers(0, 2**31 - 1), samples=st.integers(1, 1500))
def test_encode_waveform(official_codec64: Any, seed: int, samples: int) -> None:
    """Codes trimmed to ceil(samples / 192) frames, 4 of the 8 quantizers, identical to the official."""
    wav = (np.random.default_rng(seed).standard_normal(samples) * 0.3).astype(np.float32)
    with torch.no_grad(), _clean():
        expected = official_codec64.encode(wav, sr=24000).audio_codes[0].numpy()
    got = codec.encode_waveform(tiny_codec("float64"), wav, 24000)
    assert got.shape == (-(-samples // 192), 4)
    assert np.array_equal(expected, got)


@given(seed=st.integers(0, 2**31 - 1), lengths=st.lists(st.integers(1, 9), min_size=1, max_size=3))
def test_decode_batch(official_codec64: Any, seed: int, lengths: list[int]) -> None:
    """Qwen3TTSTokenizer.decode of several items: the impl's model-level decode of the same -1-padded
    batch gives the same waveforms, and decode_codes of each item alone gives the wrapper's float32."""
    rng = np.random.default_rng(seed)
    items = [rng.integers(0, 2048, size=(n, 4)) for n in lengths]
    with torch.no_grad(), _clean():
        expected, rate = official_codec64.decode([{"audio_codes": c} for c in items])
    assert rate == 24000
    root = tiny_codec("float64")
    batch = np.full((len(items), max(lengths), 4), -1)
    for i, c in enumerate(items):
        batch[i, : len(c)] = c
    got = root.decode(batch)["audio_values"]
    for e, g in zip(expected, got):
        assert_close(e.astype(np.float64), g, rtol=1e-6)  # the wrapper hands back float32
    single = codec.decode_codes(root, items[0])
    assert single.dtype == np.float32
    np.testing.assert_allclose(single, expected[0], rtol=0, atol=1e-6)
