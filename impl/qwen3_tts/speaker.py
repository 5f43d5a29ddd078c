"""The speaker encoder: a 128-bin log-mel spectrogram and an ECAPA-TDNN (official: `mel_spectrogram`,
`Qwen3TTSSpeakerEncoder`, `TimeDelayNetBlock`, `Res2NetBlock`, `SqueezeExcitationBlock`,
`SqueezeExcitationRes2NetBlock`, `AttentiveStatisticsPooling` in modeling_qwen3_tts.py).

Mel details mirrored from the official `mel_spectrogram` (which calls librosa and torch.stft):
librosa's slaney mel filterbank (slaney mel scale, slaney area normalisation, built in float64 and
stored in float32 — the official then `.float()`s it), a periodic Hann window, reflect padding of
(n_fft - hop) / 2 on both sides and no centring, |STFT| as sqrt(re^2 + im^2 + 1e-9), and
log(max(mel, 1e-5)). Every convolution pads "same" with reflection.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np

from .layers import softmax
from .nn import Module, tapped_function

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
    return np.sqrt(power + np.asarray(1e-9, dtype=power.dtype)).swapaxes(-1, -2)


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
    y = np.pad(y, [(0, 0)] * (y.ndim - 1) + [(padding, padding)], mode="reflect")
    if center:
        y = np.pad(y, [(0, 0)] * (y.ndim - 1) + [(n_fft // 2, n_fft // 2)], mode="reflect")
    spec = stft_magnitude(y, n_fft, hop_size, window)
    mel = mel_basis @ spec
    return np.log(np.maximum(mel, np.asarray(1e-5, dtype)))  # dynamic_range_compression


# -- ECAPA-TDNN ----------------------------------------------------------------------------------------------------


class Conv1d(Module):
    """nn.Conv1d(padding="same", padding_mode="reflect"): reflect-pad d(k-1) samples (the extra one on the
    right), then a valid convolution as one matrix product over (channel, tap) windows."""

    params = ("weight", "bias")

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dilation: int = 1) -> None:
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.dilation = kernel_size, dilation
        self.weight: np.ndarray | None = None
        self.bias: np.ndarray | None = None

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"weight": (self.out_channels, self.in_channels, self.kernel_size), "bias": (self.out_channels,)}

    def forward(self, input: np.ndarray, **kwargs: Any) -> np.ndarray:
        total = self.dilation * (self.kernel_size - 1)
        x = input
        if total:
            x = np.pad(x, ((0, 0), (0, 0), (total // 2, total - total // 2)), mode="reflect")
        length = x.shape[-1] - total
        # windows[b, c, t, k] = x[b, c, t + k * dilation]
        windows = np.stack(
            [x[:, :, k * self.dilation : k * self.dilation + length] for k in range(self.kernel_size)], -1
        )
        cols = windows.transpose(0, 2, 1, 3).reshape(x.shape[0], length, -1)  # (B, L, C * K)
        out = cols @ self.weight.reshape(self.out_channels, -1).T + self.bias  # (B, L, C_out)
        return np.ascontiguousarray(out.transpose(0, 2, 1))


class ReLU(Module):
    params = ()

    def forward(self, input: np.ndarray, **kwargs: Any) -> np.ndarray:
        return np.maximum(input, 0)


class Sigmoid(Module):
    params = ()

    def forward(self, input: np.ndarray, **kwargs: Any) -> np.ndarray:
        return 1 / (1 + np.exp(-input))


class Tanh(Module):
    params = ()

    def forward(self, input: np.ndarray, **kwargs: Any) -> np.ndarray:
        return np.tanh(input)


class TimeDelayNetBlock(Module):
    """relu(conv(x))."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dilation: int) -> None:
        self.conv = Conv1d(in_channels, out_channels, kernel_size, dilation)
        self.activation = ReLU()

    def forward(self, hidden_states: np.ndarray, **kwargs: Any) -> np.ndarray:
        return self.activation(self.conv(hidden_states))


def torch_chunk(x: np.ndarray, chunks: int, axis: int) -> list[np.ndarray]:
    """torch.chunk: pieces of ceil(n / chunks) along the axis (the last one shorter)."""
    size = -(-x.shape[axis] // chunks)
    return np.split(x, range(size, x.shape[axis], size), axis=axis)


class Res2NetBlock(Module):
    """Split the channels in `scale` groups; group 0 passes through, group i > 0 goes through TDNN i - 1 after
    adding the previous group's output (i > 1)."""

    def __init__(
        self, in_channels: int, out_channels: int, scale: int = 8, kernel_size: int = 3, dilation: int = 1
    ) -> None:
        self.blocks = [TimeDelayNetBlock(in_channels // scale, out_channels // scale, kernel_size, dilation)
                       for _ in range(scale - 1)]  # fmt: skip
        self.scale = scale

    def forward(self, hidden_states: np.ndarray, **kwargs: Any) -> np.ndarray:
        outputs = []
        output_part = None
        for i, part in enumerate(torch_chunk(hidden_states, self.scale, axis=1)):
            if i == 0:
                output_part = part
            elif i == 1:
                output_part = self.blocks[i - 1](part)
            else:
                output_part = self.blocks[i - 1](part + output_part)
            outputs.append(output_part)
        return np.concatenate(outputs, axis=1)


class SqueezeExcitationBlock(Module):
    """x * sigmoid(conv2(relu(conv1(mean over time of x))))."""

    def __init__(self, in_channels: int, se_channels: int, out_channels: int) -> None:
        self.conv1 = Conv1d(in_channels, se_channels, 1)
        self.relu = ReLU()
        self.conv2 = Conv1d(se_channels, out_channels, 1)
        self.sigmoid = Sigmoid()

    def forward(self, hidden_states: np.ndarray, **kwargs: Any) -> np.ndarray:
        mean = hidden_states.mean(axis=2, keepdims=True)
        mean = self.sigmoid(self.conv2(self.relu(self.conv1(mean))))
        return hidden_states * mean


class AttentiveStatisticsPooling(Module):
    """Attention over time from [x, global mean, global std], then the attention-weighted mean and std of x
    per channel: (batch, 2 * channels, 1)."""

    def __init__(self, channels: int, attention_channels: int = 128) -> None:
        self.eps = 1e-12
        self.tdnn = TimeDelayNetBlock(channels * 3, attention_channels, 1, 1)
        self.tanh = Tanh()
        self.conv = Conv1d(attention_channels, channels, 1)

    def _compute_statistics(self, x: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # mean = sum(m x), std = sqrt(max(sum(m (x - mean)^2), eps))
        mean = (m * x).sum(axis=2)
        std = np.sqrt(np.maximum((m * (x - mean[:, :, None]) ** 2).sum(axis=2), self.eps))
        return mean, std

    def forward(self, hidden_states: np.ndarray, **kwargs: Any) -> np.ndarray:
        seq_length = hidden_states.shape[-1]
        mask = np.ones((hidden_states.shape[0], 1, seq_length), dtype=hidden_states.dtype)  # every frame is real
        total = mask.sum(axis=2, keepdims=True)
        mean, std = self._compute_statistics(hidden_states, mask / total)
        mean = np.repeat(mean[:, :, None], seq_length, axis=2)
        std = np.repeat(std[:, :, None], seq_length, axis=2)
        attention = np.concatenate([hidden_states, mean, std], axis=1)
        attention = self.conv(self.tanh(self.tdnn(attention)))
        attention = np.where(mask == 0, -np.inf, attention)
        attention = softmax(attention, axis=2)
        mean, std = self._compute_statistics(hidden_states, attention)
        return np.concatenate([mean, std], axis=1)[:, :, None]


class SqueezeExcitationRes2NetBlock(Module):
    """x + se(tdnn2(res2net(tdnn1(x))))."""

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

    def __init__(self, config: Any) -> None:
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
        self.fc = Conv1d(channels[-1] * 2, config.enc_dim, 1)

    def forward(self, hidden_states: np.ndarray, **kwargs: Any) -> np.ndarray:
        hidden_states = np.swapaxes(hidden_states, 1, 2)
        outputs = []
        for layer in self.blocks:
            hidden_states = layer(hidden_states)
            outputs.append(hidden_states)
        hidden_states = self.mfa(np.concatenate(outputs[1:], axis=1))  # multi-layer feature aggregation
        hidden_states = self.fc(self.asp(hidden_states))
        return hidden_states[..., 0]


def speaker_encoder_config(raw: dict[str, Any]) -> SimpleNamespace:
    defaults = {"mel_dim": 128, "enc_dim": 1024, "enc_channels": [512, 512, 512, 512, 1536],
                "enc_kernel_sizes": [5, 3, 3, 3, 1], "enc_dilations": [1, 2, 3, 4, 1], "enc_attention_channels": 128,
                "enc_res2net_scale": 8, "enc_se_channels": 128, "sample_rate": 24000}  # fmt: skip
    return SimpleNamespace(**{**defaults, **raw})
