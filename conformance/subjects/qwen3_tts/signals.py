"""Synthetic inputs shared by the cases and the checkpoint builder (numpy only)."""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 24000


def speech_like(seed: int, seconds: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """A voiced, speech-like float32 waveform: a gliding fundamental with decaying harmonics, three
    syllable-like envelopes, formant-ish emphasis and a little breath noise. Peak below 0.8."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    f0 = 140.0 + 30.0 * np.sin(2 * np.pi * 1.3 * t) + 8.0 * np.sin(2 * np.pi * 5.5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    voice = np.zeros_like(t)
    for harmonic in range(1, 12):
        freq = harmonic * f0
        formant = np.exp(-(((freq - 700.0) / 350.0) ** 2)) + 0.6 * np.exp(-(((freq - 1800.0) / 500.0) ** 2))
        voice += (0.9**harmonic + formant) * np.sin(harmonic * phase + rng.uniform(0, 2 * np.pi))
    envelope = np.zeros_like(t)
    for centre in np.linspace(0.2, 0.8, 3) * seconds:
        envelope += np.exp(-(((t - centre) / (0.09 * seconds)) ** 2))
    wave = voice * envelope + 0.01 * rng.standard_normal(t.size)
    wave = 0.75 * wave / np.max(np.abs(wave))
    return wave.astype(np.float32)


def edge_audio(seed: int, seconds: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Speech-like audio with the edges real recordings have, in three equal parts: a very low level (peak
    7.5e-5, about -82 dBFS, so many mel bins fall below the log clamp), exact digital silence (zeros: the
    magnitude is sqrt(0 + 1e-9), the mel ~1.2e-6, clamped at 1e-5, log -11.5), and clipping (the speech
    scaled 4x and clipped at exactly +-1). Float32, starting and ending inside a part (reflect padding)."""
    third = int(seconds * sample_rate) // 3
    speech = speech_like(seed, 2 * third / sample_rate, sample_rate)
    quiet = speech[:third] * np.float32(1e-4)
    silence = np.zeros(third, dtype=np.float32)
    clipped = np.clip(speech[third : 2 * third] * np.float32(4.0), -1.0, 1.0)
    return np.concatenate([quiet, silence, clipped]).astype(np.float32)
