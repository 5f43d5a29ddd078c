"""The speaker encoder: a 128-bin log-mel spectrogram and an ECAPA-TDNN (official: `mel_spectrogram`,
`Qwen3TTSSpeakerEncoder`, `TimeDelayNetBlock`, `Res2NetBlock`, `SqueezeExcitationBlock`,
`SqueezeExcitationRes2NetBlock`, `AttentiveStatisticsPooling` in qwen_tts/core/models/modeling_qwen3_tts.py).

Mel details mirrored from the official `mel_spectrogram` (which calls librosa and torch.stft):
librosa's slaney mel filterbank (slaney mel scale, slaney area normalisation, built in float64 and
stored in float32 — the official then `.float()`s it), a periodic Hann window, reflect padding of
(n_fft - hop) / 2 on both sides and no centring, |STFT| as sqrt(re^2 + im^2 + 1e-9), and
log(max(mel, 1e-5)). Every convolution pads "same" with reflection.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..common.config import Config
from ..common.functional import softmax
from ..common.layers import Conv1d, ReLU, Sigmoid, Tanh
from ..common.nn import Module, tapped_function


@dataclass
class SpeakerEncoderConfig(Config):
    """Qwen3TTSSpeakerEncoderConfig (qwen_tts/core/models/configuration_qwen3_tts.py)."""

    mel_dim: int = 128  # mel bins in
    enc_dim: int = 1024  # x-vector width out
    enc_channels: list[int] = field(default_factory=lambda: [512, 512, 512, 512, 1536])  # per block, then the MFA
    enc_kernel_sizes: list[int] = field(default_factory=lambda: [5, 3, 3, 3, 1])
    enc_dilations: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 1])
    enc_attention_channels: int = 128  # attentive statistics pooling's hidden width
    enc_res2net_scale: int = 8  # Res2Net channel groups
    enc_se_channels: int = 128  # squeeze-excitation bottleneck
    sample_rate: int = 24000


# -- mel spectrogram ---------------------------------------------------------------------------------------------


def hz_to_mel(frequencies: Any) -> np.ndarray:
    """Slaney mel scale: linear below 1 kHz (3 mels / 200 Hz), logarithmic above."""
    frequencies = np.asanyarray(frequencies, dtype=np.float64)
    f_sp = 200.0 / 3
    mels = frequencies / f_sp
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, np.log(6.4) / 27.0
    return np.where(frequencies >= min_log_hz, min_log_mel + np.log(np.maximum(frequencies, 1e-300) / min_log_hz) / logstep,
                    mels)  # fmt: skip


def mel_to_hz(mels: np.ndarray) -> np.ndarray:
    f_sp = 200.0 / 3
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, np.log(6.4) / 27.0
    return np.where(mels >= min_log_mel, min_log_hz * np.exp(logstep * (mels - min_log_mel)), f_sp * mels)


def mel_filterbank(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float | None, dtype: Any) -> np.ndarray:
    """librosa.filters.mel(sr, n_fft, n_mels, fmin, fmax, htk=False, norm="slaney", dtype): triangles
    between consecutive mel-spaced centres, in float64, stored in `dtype`, then scaled by 2 / bandwidth
    (the scaling computed in float64 and stored in `dtype` again, as librosa's in-place `*=` does)."""
    if fmax is None:
        fmax = float(sr) / 2
    fftfreqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sr)
    mel_f = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)
    lower = -ramps[:n_mels] / fdiff[:n_mels, None]
    upper = ramps[2 : n_mels + 2] / fdiff[1 : n_mels + 1, None]
    weights = np.maximum(0, np.minimum(lower, upper)).astype(dtype)
    enorm = 2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels])
    return (weights * enorm[:, None]).astype(dtype)


def hann_window(length: int, dtype: Any) -> np.ndarray:
    """torch.hann_window (periodic): 0.5 - 0.5 cos(2 pi n / N)."""
    angle = np.arange(length, dtype=dtype) * np.asarray(2 * np.pi / length, dtype=dtype)
    return (np.cos(angle) * np.asarray(-0.5, dtype) + np.asarray(0.5, dtype)).astype(dtype)


def stft_magnitude(y: np.ndarray, n_fft: int, hop: int, window: np.ndarray) -> np.ndarray:
    """|torch.stft(center=False, onesided)| with the +1e-9 inside the square root: (batch, n_fft/2+1, frames)."""
    frames = np.lib.stride_tricks.sliding_window_view(y, n_fft, axis=-1)[..., ::hop, :]  # (B, frames, n_fft)
    spec = np.fft.rfft(frames * window, n=n_fft, axis=-1)  # float32 in, complex64 out (numpy >= 2)
    power = spec.real * spec.real + spec.imag * spec.imag
    return np.sqrt(power + np.asarray(1e-9, dtype=power.dtype)).swapaxes(-1, -2)  # (B, n_fft / 2 + 1, frames)


@tapped_function("mel_spectrogram")
def mel_spectrogram(y: np.ndarray, n_fft: int, num_mels: int, sampling_rate: int, hop_size: int, win_size: int,
                    fmin: int, fmax: int | None = None, center: bool = False) -> np.ndarray:  # fmt: skip
    """Log-mel spectrogram (batch, num_mels, frames), computed in promote_types(y.dtype, float32)."""
    y = np.asarray(y)
    dtype = np.promote_types(y.dtype, np.float32)
    y = y.astype(dtype)
    mel_basis = mel_filterbank(sampling_rate, n_fft, num_mels, fmin, fmax, dtype)
    window = hann_window(win_size, dtype)
    if win_size < n_fft:  # torch.stft centres a shorter window in n_fft
        left = (n_fft - win_size) // 2
        window = np.pad(window, (left, n_fft - win_size - left))
    padding = (n_fft - hop_size) // 2
    y = np.pad(y, [(0, 0)] * (y.ndim - 1) + [(padding, padding)], mode="reflect")  # (B, samples + 2 * padding)
    if center:
        y = np.pad(y, [(0, 0)] * (y.ndim - 1) + [(n_fft // 2, n_fft // 2)], mode="reflect")
    spec = stft_magnitude(y, n_fft, hop_size, window)  # (B, n_fft / 2 + 1, frames)
    mel = mel_basis @ spec  # (num_mels, n_fft / 2 + 1) @ -> (B, num_mels, frames)
    return dynamic_range_compression(mel)


def dynamic_range_compression(x: np.ndarray, clip_val: float = 1e-5) -> np.ndarray:
    """dynamic_range_compression_torch: log(clamp(x, min=1e-5)). The clamp decides digital silence: a zero
    frame's mel is ~1.2e-6 (from the magnitude's sqrt(1e-9) floor), clamped to 1e-5, log -11.5 (-13.6 unclamped)."""
    return np.log(np.maximum(x, np.asarray(clip_val, x.dtype)))


# -- ECAPA-TDNN ----------------------------------------------------------------------------------------------------


def same_conv(in_channels: int, out_channels: int, kernel_size: int, dilation: int = 1) -> Conv1d:
    """Every speaker-encoder convolution: nn.Conv1d(padding="same", padding_mode="reflect"), summed as torch does."""
    return Conv1d(in_channels, out_channels, kernel_size, dilation=dilation, padding="same", padding_mode="reflect",
                  im2col=True)  # fmt: skip


class TimeDelayNetBlock(Module):
    """TimeDelayNetBlock: relu(conv(x)), (B, C_in, T) -> (B, C_out, T)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dilation: int) -> None:
        self.conv = same_conv(in_channels, out_channels, kernel_size, dilation)
        self.activation = ReLU()

    def forward(self, hidden_states: np.ndarray, **kwargs: Any) -> np.ndarray:
        return self.activation(self.conv(hidden_states))


def torch_chunk(x: np.ndarray, chunks: int, axis: int) -> list[np.ndarray]:
    """torch.chunk: pieces of ceil(n / chunks) along the axis (the last one shorter)."""
    size = -(-x.shape[axis] // chunks)
    return np.split(x, range(size, x.shape[axis], size), axis=axis)


class Res2NetBlock(Module):
    """Res2NetBlock: split the channels of (B, C, T) in `scale` groups; group 0 passes through, group i > 0
    goes through TDNN i - 1 after adding the previous group's output (i > 1); concatenate."""

    def __init__(
        self, in_channels: int, out_channels: int, scale: int = 8, kernel_size: int = 3, dilation: int = 1
    ) -> None:
        self.blocks = [TimeDelayNetBlock(in_channels // scale, out_channels // scale, kernel_size, dilation)
                       for _ in range(scale - 1)]  # fmt: skip
        self.scale = scale

    def forward(self, hidden_states: np.ndarray, **kwargs: Any) -> np.ndarray:
        outputs = []
        output_part = None
        for i, part in enumerate(torch_chunk(hidden_states, self.scale, axis=1)):  # (B, C / scale, T) each
            if i == 0:
                output_part = part
            elif i == 1:
                output_part = self.blocks[i - 1](part)
            else:
                output_part = self.blocks[i - 1](part + output_part)
            outputs.append(output_part)
        return np.concatenate(outputs, axis=1)  # (B, C, T)


class SqueezeExcitationBlock(Module):
    """SqueezeExcitationBlock: x * sigmoid(conv2(relu(conv1(mean over time of x)))) on (B, C, T)."""

    def __init__(self, in_channels: int, se_channels: int, out_channels: int) -> None:
        self.conv1 = same_conv(in_channels, se_channels, 1)
        self.relu = ReLU()
        self.conv2 = same_conv(se_channels, out_channels, 1)
        self.sigmoid = Sigmoid()

    def forward(self, hidden_states: np.ndarray, **kwargs: Any) -> np.ndarray:
        mean = hidden_states.mean(axis=2, keepdims=True)  # (B, C, 1)
        mean = self.sigmoid(self.conv2(self.relu(self.conv1(mean))))  # (B, se, 1) inside, (B, C, 1) out
        return hidden_states * mean


class AttentiveStatisticsPooling(Module):
    """AttentiveStatisticsPooling: attention over time from [x, global mean, global std], then the
    attention-weighted mean and std of x per channel: (B, C, T) -> (B, 2C, 1)."""

    def __init__(self, channels: int, attention_channels: int = 128) -> None:
        self.eps = 1e-12
        self.tdnn = TimeDelayNetBlock(channels * 3, attention_channels, 1, 1)
        self.tanh = Tanh()
        self.conv = same_conv(attention_channels, channels, 1)

    def _compute_statistics(self, x: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # mean = sum(m x), std = sqrt(max(sum(m (x - mean)^2), eps)); (B, C) each
        mean = (m * x).sum(axis=2)
        std = np.sqrt(np.maximum((m * (x - mean[:, :, None]) ** 2).sum(axis=2), self.eps))
        return mean, std

    def forward(self, hidden_states: np.ndarray, **kwargs: Any) -> np.ndarray:
        seq_length = hidden_states.shape[-1]
        mask = np.ones((hidden_states.shape[0], 1, seq_length), dtype=hidden_states.dtype)  # every frame is real
        total = mask.sum(axis=2, keepdims=True)
        mean, std = self._compute_statistics(hidden_states, mask / total)
        mean = np.repeat(mean[:, :, None], seq_length, axis=2)  # (B, C, T)
        std = np.repeat(std[:, :, None], seq_length, axis=2)
        attention = np.concatenate([hidden_states, mean, std], axis=1)  # (B, 3C, T)
        attention = self.conv(self.tanh(self.tdnn(attention)))  # (B, C, T)
        attention = np.where(mask == 0, -np.inf, attention)
        attention = softmax(attention, axis=2)  # over time
        mean, std = self._compute_statistics(hidden_states, attention)
        return np.concatenate([mean, std], axis=1)[:, :, None]  # (B, 2C, 1)


class SqueezeExcitationRes2NetBlock(Module):
    """SqueezeExcitationRes2NetBlock: x + se(tdnn2(res2net(tdnn1(x)))) on (B, C, T)."""

    def __init__(self, in_channels: int, out_channels: int, res2net_scale: int = 8, se_channels: int = 128,
                 kernel_size: int = 1, dilation: int = 1) -> None:  # fmt: skip
        self.out_channels = out_channels
        self.tdnn1 = TimeDelayNetBlock(in_channels, out_channels, 1, 1)
        self.res2net_block = Res2NetBlock(out_channels, out_channels, res2net_scale, kernel_size, dilation)
        self.tdnn2 = TimeDelayNetBlock(out_channels, out_channels, 1, 1)
        self.se_block = SqueezeExcitationBlock(out_channels, se_channels, out_channels)

    def forward(self, hidden_state: np.ndarray, **kwargs: Any) -> np.ndarray:
        residual = hidden_state
        hidden_state = self.se_block(self.tdnn2(self.res2net_block(self.tdnn1(hidden_state))))
        return hidden_state + residual


class SpeakerEncoder(Module):
    """Qwen3TTSSpeakerEncoder (ECAPA-TDNN): mel (batch, frames, mel_dim) -> x-vector (batch, enc_dim)."""

    def __init__(self, config: SpeakerEncoderConfig) -> None:
        channels, kernels, dilations = config.enc_channels, config.enc_kernel_sizes, config.enc_dilations
        if not len(channels) == len(kernels) == len(dilations):
            raise ValueError("enc_channels, enc_kernel_sizes and enc_dilations should have same length")
        self.channels = channels
        self.blocks: list[Module] = [TimeDelayNetBlock(config.mel_dim, channels[0], kernels[0], dilations[0])]
        for i in range(1, len(channels) - 1):
            self.blocks.append(SqueezeExcitationRes2NetBlock(channels[i - 1], channels[i], config.enc_res2net_scale,
                                                             config.enc_se_channels, kernels[i], dilations[i]))  # fmt: skip
        self.mfa = TimeDelayNetBlock(channels[-1], channels[-1], kernels[-1], dilations[-1])
        self.asp = AttentiveStatisticsPooling(channels[-1], attention_channels=config.enc_attention_channels)
        self.fc = same_conv(channels[-1] * 2, config.enc_dim, 1)

    def forward(self, hidden_states: np.ndarray, **kwargs: Any) -> np.ndarray:
        hidden_states = np.swapaxes(hidden_states, 1, 2)  # (B, mel_dim, frames)
        outputs = []
        for layer in self.blocks:
            hidden_states = layer(hidden_states)  # (B, channels[i], frames)
            outputs.append(hidden_states)
        hidden_states = self.mfa(np.concatenate(outputs[1:], axis=1))  # multi-layer feature aggregation (B, C, T)
        hidden_states = self.fc(self.asp(hidden_states))  # (B, 2C, 1) -> (B, enc_dim, 1)
        return hidden_states[..., 0]  # (B, enc_dim)
