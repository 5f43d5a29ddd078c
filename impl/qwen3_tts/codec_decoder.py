"""The 12 Hz codec decoder (codes -> 24 kHz waveform) in NumPy, mirroring
qwen_tts/core/tokenizer_12hz/modeling_qwen3_tts_tokenizer_v2.py (qwen-tts 0.1.1) class by class.

codes (B, Q, T) -> split RVQ decode -> pre_conv -> pre_transformer (sliding-window attention)
-> upsample stages (transposed conv + ConvNeXt) -> decoder (conv, 4 blocks of SnakeBeta + transposed
conv + 3 residual units, SnakeBeta, conv) -> clamp to [-1, 1]: (B, 1, T * total_upsample).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..common import functional as F
from ..common.attention import Attention
from ..common.config import Config
from ..common.layers import GELU, Conv1d, ConvTranspose1d, GatedMLP, Identity, LayerNorm, Linear, RMSNorm, SnakeBeta
from ..common.nn import Module, ModuleList, tapped
from ..common.rope import RotaryEmbedding
from ..common.transformer import DecoderLayer, DecoderStack


@dataclass
class DecoderConfig(Config):
    """Qwen3TTSTokenizerV2DecoderConfig (qwen_tts/core/tokenizer_12hz/configuration_qwen3_tts_tokenizer_v2.py)."""

    codebook_size: int = 2048  # entries per codebook
    codebook_dim: int = 512  # the quantizer's output width (each RVQ half works in codebook_dim / 2)
    hidden_size: int = 1024  # the pre-transformer's width
    latent_dim: int = 1024  # width between the quantizer and the upsampling convolutions
    rope_theta: float = 10000
    num_attention_heads: int = 16
    num_key_value_heads: int = 16
    head_dim: int | None = None  # None: hidden_size / num_attention_heads
    attention_bias: bool = False
    sliding_window: int = 72  # every pre-transformer layer attends to this many frames back
    intermediate_size: int = 3072
    hidden_act: str = "silu"
    rms_norm_eps: float = 1e-5
    num_hidden_layers: int = 8
    num_quantizers: int = 16  # codebooks per frame
    upsample_rates: tuple[int, ...] = (8, 5, 4, 3)  # per decoder block (transposed conv stride)
    upsampling_ratios: tuple[int, ...] = (2, 2)  # per upsample stage after the pre-transformer
    decoder_dim: int = 1536  # the first decoder block's width, halved by every block
    attn_implementation: str = "sdpa"  # config._attn_implementation: "eager" returns attention weights

    def __post_init__(self) -> None:
        self.head_dim = self.head_dim or self.hidden_size // self.num_attention_heads


# -- convolutions ----------------------------------------------------------------------------------------


class Qwen3TTSTokenizerV2CausalConvNet(Module):
    """Qwen3TTSTokenizerV2CausalConvNet: left-pad by (kernel span - stride), right-pad up to a whole number
    of strides, then a valid conv: (B, C_in, T) -> (B, C_out, ceil(T / stride))."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dilation: int = 1, stride: int = 1,
                 groups: int = 1) -> None:  # fmt: skip
        self.conv = Conv1d(in_channels, out_channels, kernel_size, stride=stride, dilation=dilation, groups=groups)
        self.stride = stride
        self.kernel_size = (kernel_size - 1) * dilation + 1
        self.dilation = dilation
        self.padding = self.kernel_size - self.stride

    def _get_extra_padding_for_conv1d(self, length: int) -> int:
        n_frames = (length - self.kernel_size + self.padding) / self.stride + 1  # Python float, as official
        ideal_length = (math.ceil(n_frames) - 1) * self.stride + (self.kernel_size - self.padding)
        return ideal_length - length

    def forward(self, hidden_state: np.ndarray) -> np.ndarray:
        extra_padding = self._get_extra_padding_for_conv1d(hidden_state.shape[-1])
        return self.conv(F.pad1d(hidden_state, self.padding, extra_padding))  # (B, C_out, ceil(T / stride))


class Qwen3TTSTokenizerV2CausalTransConvNet(Module):
    """Qwen3TTSTokenizerV2CausalTransConvNet: transposed conv, then drop the last (kernel - stride) samples
    (all of the padding on the right): (B, C_in, T) -> (B, C_out, T * stride)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> None:
        self.conv = ConvTranspose1d(in_channels, out_channels, kernel_size, stride=stride)
        self.left_pad = 0
        self.right_pad = int(kernel_size - stride)

    def forward(self, hidden_state: np.ndarray) -> np.ndarray:
        hidden_state = self.conv(hidden_state)
        if self.right_pad > 0:
            hidden_state = hidden_state[..., : hidden_state.shape[-1] - self.right_pad]
        return np.ascontiguousarray(hidden_state)


class Qwen3TTSTokenizerV2ConvNeXtBlock(Module):
    """Qwen3TTSTokenizerV2ConvNeXtBlock: x + gamma * pwconv2(gelu(pwconv1(layernorm(dwconv(x))))) on
    (B, C, T), channels-last in the middle."""

    params = ("gamma",)

    def __init__(self, dim: int) -> None:
        self.dwconv = Qwen3TTSTokenizerV2CausalConvNet(dim, dim, kernel_size=7, groups=dim, dilation=1)
        self.norm = LayerNorm(dim, eps=1e-6)
        self.pwconv1 = Linear(dim, 4 * dim)
        self.act = GELU()
        self.pwconv2 = Linear(4 * dim, dim)
        self.gamma: np.ndarray | None = None

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"gamma": (self.pwconv2.out_features,)}

    def forward(self, hidden_states: np.ndarray) -> np.ndarray:
        residual = hidden_states  # (B, C, T)
        hidden_states = self.dwconv(hidden_states).transpose(0, 2, 1)  # (B, T, C)
        hidden_states = self.norm(hidden_states)
        hidden_states = self.pwconv1(hidden_states)  # (B, T, 4C)
        hidden_states = self.act(hidden_states)
        hidden_states = self.pwconv2(hidden_states)  # (B, T, C)
        hidden_states = self.gamma * hidden_states
        return residual + hidden_states.transpose(0, 2, 1)  # (B, C, T)


class Qwen3TTSTokenizerV2DecoderDecoderResidualUnit(Module):
    """Qwen3TTSTokenizerV2DecoderDecoderResidualUnit: x + conv2(snake(conv1(snake(x)))), kernels 7 (dilated)
    and 1, on (B, C, T)."""

    def __init__(self, dim: int = 16, dilation: int = 1) -> None:
        self.act1 = SnakeBeta(dim)
        self.conv1 = Qwen3TTSTokenizerV2CausalConvNet(dim, dim, kernel_size=7, dilation=dilation)
        self.act2 = SnakeBeta(dim)
        self.conv2 = Qwen3TTSTokenizerV2CausalConvNet(dim, dim, kernel_size=1)

    def forward(self, hidden_state: np.ndarray) -> np.ndarray:
        residual = hidden_state
        hidden_state = self.conv2(self.act2(self.conv1(self.act1(hidden_state))))
        return hidden_state + residual


class Qwen3TTSTokenizerV2DecoderDecoderBlock(Module):
    """Qwen3TTSTokenizerV2DecoderDecoderBlock: SnakeBeta, causal transposed conv (kernel 2 * rate, stride
    rate), residual units dilated 1, 3, 9: (B, C, T) -> (B, C / 2, T * rate)."""

    def __init__(self, config: DecoderConfig, layer_idx: int) -> None:
        in_dim = config.decoder_dim // 2**layer_idx
        out_dim = config.decoder_dim // 2 ** (layer_idx + 1)
        rate = config.upsample_rates[layer_idx]
        block: list[Module] = [
            SnakeBeta(in_dim),
            Qwen3TTSTokenizerV2CausalTransConvNet(in_dim, out_dim, 2 * rate, rate),
        ]
        block += [Qwen3TTSTokenizerV2DecoderDecoderResidualUnit(out_dim, dilation) for dilation in (1, 3, 9)]
        self.block = ModuleList(block)

    def forward(self, hidden: np.ndarray, **kwargs: Any) -> np.ndarray:
        for block in self.block:
            hidden = block(hidden)
        return hidden


# -- pre-transformer ------------------------------------------------------------------------------------


class Qwen3TTSTokenizerV2DecoderAttention(Attention):
    """Qwen3TTSTokenizerV2DecoderAttention: transformers' Qwen3 attention with nn.Identity q/k norms."""

    def __init__(self, config: DecoderConfig, layer_idx: int) -> None:
        super().__init__(config.hidden_size, config.num_attention_heads, config.num_key_value_heads, config.head_dim,
                         layer_idx, bias=config.attention_bias, qk_norm="identity",
                         implementation=config.attn_implementation)  # fmt: skip


class Qwen3TTSTokenizerV2DecoderTransformerLayer(DecoderLayer):
    """Qwen3TTSTokenizerV2DecoderTransformerLayer: the Qwen3 layer with layer-scaled branches; returns the
    hidden states (B, T, C)."""

    def __init__(self, config: DecoderConfig, layer_idx: int) -> None:
        super().__init__(Qwen3TTSTokenizerV2DecoderAttention(config, layer_idx),
                         GatedMLP(config.hidden_size, config.intermediate_size, config.hidden_act),
                         RMSNorm(config.hidden_size, config.rms_norm_eps), RMSNorm(config.hidden_size, config.rms_norm_eps),
                         layer_scale_dim=config.hidden_size, returns_tuple=False)  # fmt: skip


class Qwen3TTSTokenizerV2DecoderTransformerModel(DecoderStack):
    """Qwen3TTSTokenizerV2DecoderTransformerModel: input_proj -> layers (every one sliding-window causal)
    -> norm -> output_proj, (B, T, latent) -> (B, T, latent)."""

    def __init__(self, config: DecoderConfig) -> None:
        self.config = config
        self.layers = [Qwen3TTSTokenizerV2DecoderTransformerLayer(config, i) for i in range(config.num_hidden_layers)]
        self.norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = RotaryEmbedding(config.head_dim, config.rope_theta)
        self.window_size = config.sliding_window
        self.input_proj = Linear(config.latent_dim, config.hidden_size)
        self.output_proj = Linear(config.hidden_size, config.latent_dim)

    def forward(self, input_ids: Any = None, attention_mask: Any = None, position_ids: np.ndarray | None = None,
                past_key_values: Any = None, inputs_embeds: np.ndarray | None = None, use_cache: Any = None,
                cache_position: np.ndarray | None = None, **kwargs: Any) -> dict[str, np.ndarray]:  # fmt: skip
        if input_ids is not None or inputs_embeds is None:
            raise ValueError("the codec pre-transformer takes inputs_embeds only")
        if past_key_values is not None or use_cache:
            raise NotImplementedError("KV caches are not used by the codec")
        inputs_embeds = self.input_proj(inputs_embeds)  # (B, T, C)
        if cache_position is None:
            cache_position = np.arange(inputs_embeds.shape[1], dtype=np.int64)
        if position_ids is None:
            position_ids = cache_position[None]  # (1, T)
        if isinstance(attention_mask, dict):  # prepared by the caller, one mask per layer type
            attention_mask = attention_mask["sliding_attention"]
        elif attention_mask is not None:
            raise NotImplementedError("padding masks are not used by the codec")
        hidden_states = self.decode(inputs_embeds, attention_mask, position_ids, None, cache_position, use_cache,
                                    sliding_window=self.window_size,
                                    boolean_mask=self.config.attn_implementation != "eager")["last_hidden_state"]  # fmt: skip
        return {"last_hidden_state": self.output_proj(hidden_states)}


# -- split residual vector quantizer (decode only) ---------------------------------------------------------


class EuclideanCodebook(Module):
    """EuclideanCodebook: codebook = embedding_sum / clamp(cluster_usage, min=epsilon), looked up by code:
    (B, T) -> (B, T, dim)."""

    params = ("cluster_usage", "embedding_sum")

    def __init__(self, dim: int, codebook_size: int, epsilon: float = 1e-5) -> None:
        self.dim, self.codebook_size, self.epsilon = dim, codebook_size, epsilon
        self.cluster_usage: np.ndarray | None = None
        self.embedding_sum: np.ndarray | None = None

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"cluster_usage": (self.codebook_size,), "embedding_sum": (self.codebook_size, self.dim)}

    @tapped
    def decode(self, codes: np.ndarray) -> np.ndarray:
        usage = np.maximum(self.cluster_usage, np.asarray(self.epsilon, dtype=self.cluster_usage.dtype))
        embedding = self.embedding_sum / usage[:, None]  # (codebook_size, dim)
        return embedding[np.asarray(codes, dtype=np.int64)]


class VectorQuantization(Module):
    """VectorQuantization (decode): codes (B, T) -> (B, dim, T)."""

    def __init__(self, dim: int, codebook_size: int, epsilon: float = 1e-5) -> None:
        self.project_out = Identity()  # the decoder's codebooks have dim == codebook_dim: no projection
        self.epsilon = epsilon
        self._codebook = EuclideanCodebook(dim, codebook_size, epsilon)
        self.codebook_size = codebook_size

    @tapped
    def decode(self, codes: np.ndarray) -> np.ndarray:
        quantized = self.project_out(self._codebook.decode(codes))  # (B, T, dim)
        return np.ascontiguousarray(quantized.transpose(0, 2, 1))  # (B, dim, T)


class ResidualVectorQuantization(Module):
    """ResidualVectorQuantization (decode): the sum of every codebook's vectors, codes (K, B, T) -> (B, dim, T)."""

    def __init__(self, num_quantizers: int, dim: int, codebook_size: int) -> None:
        self.layers = [VectorQuantization(dim, codebook_size) for _ in range(num_quantizers)]

    @tapped
    def decode(self, codes: np.ndarray) -> np.ndarray:
        quantized: Any = 0
        for idx, layer_codes in enumerate(codes):  # (B, T) each
            quantized = quantized + self.layers[idx].decode(layer_codes)
        return quantized


class ResidualVectorQuantizer(Module):
    """ResidualVectorQuantizer (decode): codes (B, K, T) -> RVQ sum (B, dim, T) -> output_proj (B, out, T)."""

    def __init__(self, dimension: int, input_dimension: int, output_dimension: int, n_q: int, bins: int) -> None:
        self.n_q = n_q
        self.dimension = dimension
        self.input_proj = Conv1d(input_dimension, dimension, 1, bias=False)  # force_projection=True
        self.output_proj = Conv1d(dimension, output_dimension, 1, bias=False)
        self.vq = ResidualVectorQuantization(n_q, dimension, bins)

    @tapped
    def decode(self, codes: np.ndarray) -> np.ndarray:
        quantized = self.vq.decode(np.swapaxes(codes, 0, 1))  # (K, B, T) in, (B, dim, T) out
        return self.output_proj(quantized)


class SplitResidualVectorQuantizer(Module):
    """SplitResidualVectorQuantizer (decode): the first n_q_semantic codebooks through rvq_first, the rest
    through rvq_rest, outputs summed: codes (B, Q, T) -> (B, codebook_dim, T)."""

    def __init__(self, n_q: int, n_q_semantic: int, dimension: int, input_dimension: int, output_dimension: int,
                 bins: int) -> None:  # fmt: skip
        self.max_n_q = n_q
        self.n_q_semantic = n_q_semantic
        self.rvq_first = ResidualVectorQuantizer(dimension, input_dimension, output_dimension, n_q_semantic, bins)
        self.rvq_rest = ResidualVectorQuantizer(dimension, input_dimension, output_dimension, n_q - n_q_semantic, bins)

    @tapped
    def decode(self, codes: np.ndarray) -> np.ndarray:
        quantized = self.rvq_first.decode(codes[:, : self.n_q_semantic])
        if codes.shape[1] > self.n_q_semantic:
            quantized = quantized + self.rvq_rest.decode(codes[:, self.n_q_semantic :])
        return quantized


# -- the decoder --------------------------------------------------------------------------------------------


class Qwen3TTSTokenizerV2Decoder(Module):
    """Qwen3TTSTokenizerV2Decoder (`speech_tokenizer.decoder`): codes (B, Q, T) -> waveform
    (B, 1, T * total_upsample) in [-1, 1]."""

    def __init__(self, config: DecoderConfig) -> None:
        self.config = config
        self.total_upsample = int(np.prod(list(config.upsample_rates) + list(config.upsampling_ratios)))
        self.pre_transformer = Qwen3TTSTokenizerV2DecoderTransformerModel(config)
        self.quantizer = SplitResidualVectorQuantizer(
            n_q=config.num_quantizers, n_q_semantic=1, dimension=config.codebook_dim // 2,
            input_dimension=config.codebook_dim, output_dimension=config.codebook_dim,
            bins=config.codebook_size,
        )  # fmt: skip
        self.pre_conv = Qwen3TTSTokenizerV2CausalConvNet(config.codebook_dim, config.latent_dim, kernel_size=3)
        latent = config.latent_dim
        self.upsample = ModuleList(
            ModuleList([Qwen3TTSTokenizerV2CausalTransConvNet(latent, latent, factor, factor),
                        Qwen3TTSTokenizerV2ConvNeXtBlock(latent)])
            for factor in config.upsampling_ratios
        )  # fmt: skip
        decoder: list[Module] = [Qwen3TTSTokenizerV2CausalConvNet(latent, config.decoder_dim, 7)]
        decoder += [Qwen3TTSTokenizerV2DecoderDecoderBlock(config, i) for i in range(len(config.upsample_rates))]
        output_dim = config.decoder_dim // 2 ** len(config.upsample_rates)
        decoder += [SnakeBeta(output_dim), Qwen3TTSTokenizerV2CausalConvNet(output_dim, 1, 7)]
        self.decoder = ModuleList(decoder)

    def forward(self, codes: np.ndarray) -> np.ndarray:
        if codes.shape[1] != self.config.num_quantizers:
            raise ValueError(f"Expected {self.config.num_quantizers} layer of codes, got {codes.shape[1]}")
        hidden = self.quantizer.decode(codes)  # (B, codebook_dim, T)
        hidden = np.ascontiguousarray(self.pre_conv(hidden).transpose(0, 2, 1))  # (B, T, latent)
        hidden = self.pre_transformer(inputs_embeds=hidden)["last_hidden_state"]
        hidden = np.ascontiguousarray(hidden.transpose(0, 2, 1))  # (B, latent, T)
        for blocks in self.upsample:  # (B, latent, T * ratio) per stage
            for block in blocks:
                hidden = block(hidden)
        wav = hidden
        for block in self.decoder:  # (B, decoder_dim / 2^i, T * rates so far), then (B, 1, T * total_upsample)
            wav = block(wav)
        return np.clip(wav, -1, 1)

    @tapped
    def chunked_decode(self, codes: np.ndarray, chunk_size: int = 300, left_context_size: int = 25) -> np.ndarray:
        """Decode chunks of `chunk_size` frames, each preceded by up to `left_context_size` frames of context
        whose samples are then dropped; concatenate."""
        wavs = []
        start_index = 0
        while start_index < codes.shape[-1]:
            end_index = min(start_index + chunk_size, codes.shape[-1])
            context_size = left_context_size if start_index - left_context_size > 0 else start_index
            wav_chunk = self(codes[..., start_index - context_size : end_index])
            wavs.append(wav_chunk[..., context_size * self.total_upsample :])
            start_index = end_index
        return np.concatenate(wavs, axis=-1)
