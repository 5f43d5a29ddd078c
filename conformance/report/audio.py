"""Audio for the report, in plain numpy: WAV encoding, log-mel spectrograms, SNR and log-mel distance."""

from __future__ import annotations

import base64
import io
import math
import wave
from dataclasses import dataclass

import numpy as np

MAX_PLAYER_SECONDS = 20.0  # longer waveforms are cut for the embedded players (the metrics use all of them)
TOP_DB = 80.0  # log-mel values are floored this far below the golden's peak before comparing


def wav_data_uri(samples: np.ndarray, sample_rate: int, gain: float = 1.0) -> str:
    """A mono 16-bit PCM WAV as a data: URI. `gain` scales before clipping to [-1, 1]."""
    x = np.clip(np.asarray(samples, dtype=np.float64).reshape(-1) * gain, -1.0, 1.0)
    pcm = np.round(x * 32767).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(int(sample_rate))
        out.writeframes(pcm.tobytes())
    return "data:audio/wav;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def snr_db(golden: np.ndarray, candidate: np.ndarray) -> float:
    """10·log10(Σ golden² / Σ (candidate − golden)²); +inf when identical."""
    g = np.asarray(golden, dtype=np.float64).reshape(-1)
    d = np.asarray(candidate, dtype=np.float64).reshape(-1) - g
    noise = float(np.sum(d * d))
    signal = float(np.sum(g * g))
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """Triangular filters on the HTK mel scale (mel = 2595·log10(1 + f/700)), rows without any FFT bin dropped."""

    def to_mel(f: np.ndarray) -> np.ndarray:
        return 2595.0 * np.log10(1.0 + f / 700.0)

    def to_hz(m: np.ndarray) -> np.ndarray:
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)

    edges = to_hz(np.linspace(0.0, to_mel(np.array(sample_rate / 2.0)), n_mels + 2))
    bins = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    lo, centre, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    bank = np.maximum(0.0, np.minimum((bins - lo) / (centre - lo), (hi - bins) / (hi - centre)))
    return bank[bank.sum(axis=1) > 0]


def stft_params(n_samples: int) -> tuple[int, int]:
    """(n_fft, hop): 1024/256 for long signals, smaller for the tiny goldens' few hundred samples."""
    n_fft = 1024
    while n_fft > 64 and n_fft * 4 > n_samples:
        n_fft //= 2
    return n_fft, n_fft // 4


def power_spectrogram(x: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """|STFT|² (frequency × frames), periodic Hann window, centred frames."""
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    pad = n_fft // 2
    x = np.pad(x, pad, mode="reflect" if x.size > pad else "constant")
    if x.size < n_fft:
        x = np.pad(x, (0, n_fft - x.size))
    frames = 1 + (x.size - n_fft) // hop
    index = np.arange(n_fft)[None, :] + hop * np.arange(frames)[:, None]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    spectrum = np.fft.rfft(x[index] * window, axis=1)
    return (spectrum.real**2 + spectrum.imag**2).T


def log_mel(x: np.ndarray, sample_rate: int, n_fft: int, hop: int, n_mels: int = 80) -> np.ndarray:
    """10·log10 of the mel power spectrogram (mels × frames)."""
    bank = mel_filterbank(sample_rate, n_fft, min(n_mels, n_fft // 4))
    return 10.0 * np.log10(np.maximum(bank @ power_spectrogram(x, n_fft, hop), 1e-20))


@dataclass
class AudioComparison:
    sample_rate: int
    seconds: float
    snr_db: float
    log_mel_distance_db: float  # mean |log-mel(candidate) − log-mel(golden)|, floored TOP_DB below the golden's peak
    golden_mel: np.ndarray
    candidate_mel: np.ndarray
    n_fft: int
    hop: int


def compare_audio(golden: np.ndarray, candidate: np.ndarray, sample_rate: int) -> AudioComparison:
    g = np.asarray(golden, dtype=np.float64).reshape(-1)
    c = np.asarray(candidate, dtype=np.float64).reshape(-1)
    n_fft, hop = stft_params(g.size)
    mel_g = log_mel(g, sample_rate, n_fft, hop)
    mel_c = log_mel(c, sample_rate, n_fft, hop)
    floor = float(mel_g.max()) - TOP_DB
    distance = float(np.mean(np.abs(np.maximum(mel_c, floor) - np.maximum(mel_g, floor))))
    return AudioComparison(sample_rate, g.size / sample_rate, snr_db(g, c), distance, mel_g, mel_c, n_fft, hop)
