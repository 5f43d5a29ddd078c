"""Metamorphic causality: changing the input from time t on leaves every output before the matching
output time bit-for-bit unchanged, for every causal block of the tiny checkpoint's codec (each stride,
dilation and padding rule it uses), the pre-transformer (sliding window), the whole decoder,
chunked_decode, the whole encoder and the codes. No torch needed: the NumPy impl alone."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from impl.qwen3_tts import codec
from impl.qwen3_tts.codec_decoder import (
    Qwen3TTSTokenizerV2CausalConvNet,
    Qwen3TTSTokenizerV2CausalTransConvNet,
    Qwen3TTSTokenizerV2ConvNeXtBlock,
    Qwen3TTSTokenizerV2DecoderDecoderBlock,
    Qwen3TTSTokenizerV2DecoderDecoderResidualUnit,
    SnakeBeta,
)
from impl.qwen3_tts.codec_encoder import MimiConv1d, MimiResnetBlock

from .helpers import tiny_codec

ROOT = tiny_codec("float32")
DEC = "decoder."
ENC = "encoder."


def _in_channels(module: Any) -> int:
    if isinstance(module, (Qwen3TTSTokenizerV2CausalConvNet, Qwen3TTSTokenizerV2CausalTransConvNet)):
        return module.conv.in_channels
    if isinstance(module, Qwen3TTSTokenizerV2ConvNeXtBlock):
        return module.dwconv.conv.in_channels
    if isinstance(module, SnakeBeta):
        return module.in_features
    if isinstance(module, Qwen3TTSTokenizerV2DecoderDecoderResidualUnit):
        return module.act1.in_features
    if isinstance(module, Qwen3TTSTokenizerV2DecoderDecoderBlock):
        return module.block[0].in_features
    if isinstance(module, MimiConv1d):
        return module.in_channels
    if isinstance(module, MimiResnetBlock):
        return module.block[1].in_channels
    raise TypeError(type(module).__name__)


# (official path below the codec root, how many output steps one input step gives: (up, down)).
# Unchanged outputs after changing input steps >= t: the first t * up // down.
CONV_BLOCKS = [
    (DEC + "pre_conv", (1, 1)),
    (DEC + "upsample.0.0", (2, 1)),
    (DEC + "upsample.0.1", (1, 1)),
    (DEC + "upsample.1.0", (2, 1)),
    (DEC + "upsample.1.1", (1, 1)),
    (DEC + "decoder.0", (1, 1)),
    (DEC + "decoder.1", (4, 1)),
    (DEC + "decoder.1.block.1", (4, 1)),
    (DEC + "decoder.1.block.2", (1, 1)),
    (DEC + "decoder.1.block.3", (1, 1)),
    (DEC + "decoder.1.block.4", (1, 1)),
    (DEC + "decoder.2", (3, 1)),
    (DEC + "decoder.3", (2, 1)),
    (DEC + "decoder.4", (2, 1)),
    (DEC + "decoder.4.block.4.conv1", (1, 1)),
    (DEC + "decoder.5", (1, 1)),
    (DEC + "decoder.6", (1, 1)),
    (ENC + "encoder.layers.0", (1, 1)),
    (ENC + "encoder.layers.1", (1, 1)),
    (ENC + "encoder.layers.3", (1, 4)),
    (ENC + "encoder.layers.4", (1, 1)),
    (ENC + "encoder.layers.6", (1, 2)),
    (ENC + "encoder.layers.9", (1, 3)),
    (ENC + "encoder.layers.12", (1, 4)),
    (ENC + "encoder.layers.14", (1, 1)),
    (ENC + "downsample", (1, 2)),
]


def _check(run: Callable[[np.ndarray], np.ndarray], x: np.ndarray, t: int, unchanged: int, axis: int,
           perturb: np.ndarray, must_change: bool = True) -> None:  # fmt: skip
    """Run on x and on x with steps >= t (along `axis`) replaced; the first `unchanged` outputs agree."""
    y = run(x)
    x2 = x.copy()
    index = [slice(None)] * x.ndim
    index[axis] = slice(t, None)
    x2[tuple(index)] = perturb
    y2 = run(x2)
    assert y.shape == y2.shape
    prefix = [slice(None)] * y.ndim
    prefix[axis] = slice(0, unchanged)
    assert np.array_equal(y[tuple(prefix)], y2[tuple(prefix)]), "an output before the change moved"
    if must_change:  # the change does reach the outputs after it (the check above is not vacuous)
        assert not np.array_equal(y, y2)


@pytest.mark.parametrize(("path", "rate"), CONV_BLOCKS, ids=[p for p, _ in CONV_BLOCKS])
@given(data=st.data())
def test_causal_block(path: str, rate: tuple[int, int], data: Any) -> None:
    module = ROOT.get(path)
    up, down = rate
    length = data.draw(st.integers(1, 40 if down == 1 else 60), label="length")
    t = data.draw(st.integers(0, length - 1), label="t")
    seed = data.draw(st.integers(0, 2**31 - 1), label="seed")
    rng = np.random.default_rng(seed)
    channels = _in_channels(module)
    x = rng.standard_normal((1, channels, length)).astype(np.float32)
    perturb = rng.standard_normal((1, channels, length - t)).astype(np.float32)
    run = module if not isinstance(module, (MimiConv1d, MimiResnetBlock)) else (lambda v: module(v, padding_cache=None))
    _check(run, x, t, t * up // down, axis=2, perturb=perturb)


@pytest.mark.parametrize("path", [DEC + "pre_transformer", ENC + "encoder_transformer"])
@given(data=st.data())
def test_causal_transformers(path: str, data: Any) -> None:
    """Past the sliding window (4 frames) and the encoder's unused window (6) too."""
    module = ROOT.get(path)
    width = module.input_proj.in_features if path.startswith(DEC) else module.layers[0].self_attn.q_proj.in_features
    length = data.draw(st.integers(1, 16), label="length")
    t = data.draw(st.integers(0, length - 1), label="t")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31 - 1), label="seed"))
    x = rng.standard_normal((1, length, width)).astype(np.float32)
    if path.startswith(DEC):
        run = lambda v: module(inputs_embeds=v)["last_hidden_state"]  # noqa: E731
    else:
        run = lambda v: module(v, return_dict=True)["last_hidden_state"]  # noqa: E731
    _check(run, x, t, t, axis=1, perturb=rng.standard_normal((1, length - t, width)).astype(np.float32))


def _changed_codes(rng: np.random.Generator, codes: np.ndarray, t: int) -> np.ndarray:
    """Codes for frames >= t with every frame differing from the original in codebook 0."""
    tail = rng.integers(0, 2048, size=codes[..., t:].shape)
    tail[:, 0] = (codes[:, 0, t:] + 1 + rng.integers(0, 2046, size=tail[:, 0].shape)) % 2048
    return tail


@given(frames=st.integers(1, 14), data=st.data())
def test_whole_decoder_is_causal(frames: int, data: Any) -> None:
    """Codes changed from frame t on leave the first t * 192 waveform samples identical: decoder
    forward, chunked_decode with any chunking, and the codec's decode entry point."""
    t = data.draw(st.integers(0, frames - 1), label="t")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31 - 1), label="seed"))
    codes = rng.integers(0, 2048, size=(1, 4, frames))
    perturb = _changed_codes(rng, codes, t)
    upsample = ROOT.decoder.total_upsample
    _check(ROOT.decoder, codes, t, t * upsample, axis=2, perturb=perturb)
    chunk = data.draw(st.integers(1, 6), label="chunk_size")
    context = data.draw(st.integers(0, 4), label="left_context_size")
    run = lambda c: ROOT.decoder.chunked_decode(c, chunk_size=chunk, left_context_size=context)  # noqa: E731
    _check(run, codes, t, t * upsample, axis=2, perturb=perturb)
    run = lambda c: codec.decode_codes(ROOT, c[0].T)[None, None]  # noqa: E731
    _check(run, codes, t, t * upsample, axis=2, perturb=perturb)


@given(samples=st.integers(1, 2000), data=st.data())
def test_whole_encoder_is_causal(samples: int, data: Any) -> None:
    """A waveform changed from sample t on: the SEANet output before frame t // 96 and the codes of
    every frame that ends by t (t // 192 frames) are identical."""
    t = data.draw(st.integers(0, samples - 1), label="t")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31 - 1), label="seed"))
    wav = (rng.standard_normal((1, 1, samples)) * 0.3).astype(np.float32)
    perturb = (rng.standard_normal((1, 1, samples - t)) * 0.3).astype(np.float32)
    _check(lambda w: ROOT.encoder.encoder(w), wav, t, t // 96, axis=2, perturb=perturb)
    codes = lambda w: codec.encode_waveform(ROOT, w[0, 0], 24000).T[None]  # noqa: E731  (1, Q, frames)
    _check(codes, wav, t, t // 192, axis=2, perturb=perturb, must_change=False)
