"""Property tests: the mel spectrogram and the ECAPA-TDNN blocks against the official ones (freshly built,
every parameter randomised, weights copied by name) over random shapes, kernels, dilations and signals,
in clean float64; the mel filterbank against librosa bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from impl.qwen3_tts import speaker

from .helpers import assert_close, randomized, rel_l2, require_official, run_official, tensor, to_numpy, transfer

pytestmark = [
    pytest.mark.official,
    pytest.mark.filterwarnings("ignore:Empty filters detected"),  # librosa, for many mels on a short FFT
]

seeds = st.integers(0, 2**31 - 1)


@pytest.fixture(scope="module")
def off():
    return require_official()


def _signal(seed: int, length: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(length) / 24000
    wave = 0.3 * np.sin(2 * np.pi * rng.uniform(80, 4000) * t) + 0.05 * rng.standard_normal(length)
    return np.clip(wave, -1, 1)


# -- mel -----------------------------------------------------------------------------------------------------------


@given(n_fft=st.sampled_from([256, 512, 1024]), n_mels=st.integers(8, 128), fmin=st.sampled_from([0, 20, 300]),
       fmax=st.sampled_from([None, 8000, 12000]), sr=st.sampled_from([16000, 24000]),
       dtype=st.sampled_from([np.float32, np.float64]))  # fmt: skip
def test_mel_filterbank_equals_librosa(n_fft, n_mels, fmin, fmax, sr, dtype):
    librosa = pytest.importorskip("librosa")
    expected = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, dtype=dtype)
    got = speaker.mel_filterbank(sr, n_fft, n_mels, fmin, fmax, dtype)
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)


@st.composite
def mel_params(draw: st.DrawFn) -> dict:
    n_fft = draw(st.sampled_from([256, 512, 1024]))
    hop = draw(st.sampled_from([n_fft // 4, n_fft // 2, 160]))
    return {
        "n_fft": n_fft,
        "num_mels": draw(st.integers(16, 128)),
        "sampling_rate": 24000,
        "hop_size": hop,
        "win_size": draw(st.sampled_from([n_fft, n_fft // 2])),
        "fmin": draw(st.sampled_from([0, 50])),
        "fmax": draw(st.sampled_from([None, 12000])),
        "center": draw(st.booleans()),
    }


@given(params=mel_params(), length=st.integers(1200, 9000), seed=seeds)
def test_mel_spectrogram_float64(off, params, length, seed):
    from conformance.subjects.qwen3_tts.precision import clean_mel_spectrogram

    y = _signal(seed, length)[None]
    expected = clean_mel_spectrogram(tensor(y), **params)  # the official function, patched to float64
    got = speaker.mel_spectrogram(y, **params)
    assert got.dtype == np.float64
    assert_close(expected, got)


@given(params=mel_params(), length=st.integers(1200, 9000), seed=seeds)
def test_mel_spectrogram_float32_within_float32_rounding(off, params, length, seed):
    """float32 in, float32 out, computed like the official (float32 filterbank, float32 STFT): the two
    differ only by float32 rounding, far below the float32-vs-float64 difference of either."""
    import torch

    y = _signal(seed, length)[None].astype(np.float32)
    with torch.no_grad():
        expected = to_numpy(off.tts_modeling.mel_spectrogram(tensor(y), **params))
    got = speaker.mel_spectrogram(y, **params)
    exact = speaker.mel_spectrogram(y.astype(np.float64), **params)
    assert got.dtype == np.float32
    assert rel_l2(expected, got) < 2 * rel_l2(exact, expected) + 1e-7


# -- ECAPA blocks ------------------------------------------------------------------------------------------------------


@given(c_in=st.integers(1, 12), c_out=st.integers(1, 12), kernel=st.integers(1, 5), dilation=st.integers(1, 4),
       length=st.integers(1, 30), seed=seeds)  # fmt: skip
def test_time_delay_net_block(off, c_in, c_out, kernel, dilation, length, seed):
    length = max(length, dilation * (kernel - 1) + 1)  # reflect padding needs more samples than it pads
    official = randomized(off.tts_modeling.TimeDelayNetBlock(c_in, c_out, kernel, dilation), seed)
    impl = transfer(official, speaker.TimeDelayNetBlock(c_in, c_out, kernel, dilation))
    x = np.random.default_rng(seed).standard_normal((2, c_in, length))
    assert_close(run_official(official, tensor(x)), impl(x))


@given(scale=st.integers(2, 5), width=st.integers(1, 4), kernel=st.integers(1, 3), dilation=st.integers(1, 3),
       length=st.integers(8, 30), seed=seeds)  # fmt: skip
def test_res2net_block(off, scale, width, kernel, dilation, length, seed):
    channels = scale * width
    official = randomized(off.tts_modeling.Res2NetBlock(channels, channels, scale, kernel, dilation), seed)
    impl = transfer(official, speaker.Res2NetBlock(channels, channels, scale, kernel, dilation))
    x = np.random.default_rng(seed).standard_normal((1, channels, length))
    assert_close(run_official(official, tensor(x)), impl(x))


@given(channels=st.integers(1, 16), se=st.integers(1, 8), length=st.integers(1, 20), seed=seeds)
def test_squeeze_excitation_block(off, channels, se, length, seed):
    official = randomized(off.tts_modeling.SqueezeExcitationBlock(channels, se, channels), seed)
    impl = transfer(official, speaker.SqueezeExcitationBlock(channels, se, channels))
    x = np.random.default_rng(seed).standard_normal((2, channels, length))
    assert_close(run_official(official, tensor(x)), impl(x))


@given(channels=st.integers(1, 16), attention=st.integers(1, 8), length=st.integers(1, 20), seed=seeds)
def test_attentive_statistics_pooling(off, channels, attention, length, seed):
    official = randomized(off.tts_modeling.AttentiveStatisticsPooling(channels, attention), seed)
    impl = transfer(official, speaker.AttentiveStatisticsPooling(channels, attention))
    x = np.random.default_rng(seed).standard_normal((2, channels, length))
    assert_close(run_official(official, tensor(x)), impl(x))


@given(scale=st.integers(2, 4), width=st.integers(1, 4), kernel=st.integers(1, 3), dilation=st.integers(1, 3),
       length=st.integers(8, 24), seed=seeds)  # fmt: skip
def test_se_res2net_block(off, scale, width, kernel, dilation, length, seed):
    channels = scale * width
    official = randomized(
        off.tts_modeling.SqueezeExcitationRes2NetBlock(channels, channels, scale, 4, kernel, dilation), seed
    )
    impl = transfer(official, speaker.SqueezeExcitationRes2NetBlock(channels, channels, scale, 4, kernel, dilation))
    x = np.random.default_rng(seed).standard_normal((1, channels, length))
    assert_close(run_official(official, tensor(x)), impl(x))


@given(scale=st.integers(2, 4), width=st.integers(1, 3), blocks=st.integers(1, 3), frames=st.integers(10, 30),
       mel=st.integers(4, 32), dim=st.integers(2, 16), seed=seeds)  # fmt: skip
def test_speaker_encoder(off, scale, width, blocks, frames, mel, dim, seed):
    channels = scale * width
    raw = {"mel_dim": mel, "enc_dim": dim, "enc_channels": [channels] * (blocks + 1) + [blocks * channels],  # mfa sees every block
           "enc_kernel_sizes": [5] + [3] * blocks + [1], "enc_dilations": [1, *range(2, blocks + 2), 1],
           "enc_attention_channels": 4, "enc_res2net_scale": scale, "enc_se_channels": 4}  # fmt: skip
    config = off.tts_config.Qwen3TTSSpeakerEncoderConfig(**raw)
    official = randomized(off.tts_modeling.Qwen3TTSSpeakerEncoder(config), seed)
    impl = transfer(official, speaker.SpeakerEncoder(speaker.SpeakerEncoderConfig.from_dict(raw)))
    x = np.random.default_rng(seed).standard_normal((1, frames, mel)) - 4
    assert_close(run_official(official, tensor(x)), impl(x))


def test_torch_chunk_semantics():
    x = np.arange(10)[None]
    assert [p.shape[1] for p in speaker.torch_chunk(x, 4, axis=1)] == [3, 3, 3, 1]
    assert [p.shape[1] for p in speaker.torch_chunk(x, 5, axis=1)] == [2, 2, 2, 2, 2]


def test_extract_speaker_embedding_rejects_other_rates():
    from .helpers import tiny_model

    with pytest.raises(ValueError, match="24kHz"):
        tiny_model("base").extract_speaker_embedding(np.zeros(4800, np.float32), 16000)


def test_x_vector_follows_dtype():
    """float32 audio into a float64 model: mel and x-vector in float64 (the clean oracle's behaviour)."""
    from .helpers import tiny_model

    audio = _signal(3, 4800).astype(np.float32)
    e64 = tiny_model("base", "float64").extract_speaker_embedding(audio, 24000)
    e32 = tiny_model("base", "float32").extract_speaker_embedding(audio, 24000)
    assert e64.dtype == np.float64 and e32.dtype == np.float32
    assert 0 < rel_l2(e64, e32) < 1e-5
