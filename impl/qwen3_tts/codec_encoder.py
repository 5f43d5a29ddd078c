"""The 12 Hz codec encoder (24 kHz waveform -> codes) in NumPy: the parts of transformers' MimiModel
(transformers/models/mimi/modeling_mimi.py, 4.57.3) that Qwen3TTSTokenizerV2Encoder keeps.

waveform (B, 1, L) -> SEANet conv encoder (MimiEncoder) -> causal transformer -> downsample conv
(stride 2, replicate padding) -> split RVQ encode (nearest codebook entry, residual by residual).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..common import functional as F
from ..common.attention import Attention
from ..common.config import Config
from ..common.layers import ELU, Conv1d, Identity, LayerNorm, Linear, activation
from ..common.nn import Module, ModuleList, tapped
from ..common.rope import RotaryEmbedding
from ..common.transformer import DecoderLayer, DecoderStack


@dataclass
class MimiConfig(Config):
    """transformers' MimiConfig (models/mimi/configuration_mimi.py), the fields the encoder half uses."""

    sampling_rate: int = 24000
    audio_channels: int = 1
    hidden_size: int = 512  # C of the SEANet output and the transformer
    num_filters: int = 64  # channels of the first conv, doubled at every downsampling
    num_residual_layers: int = 1  # residual blocks per downsampling stage
    upsampling_ratios: tuple[int, ...] = (8, 6, 5, 4)  # the encoder downsamples by these, reversed
    kernel_size: int = 7  # first conv
    last_kernel_size: int = 3  # last conv
    residual_kernel_size: int = 3
    dilation_growth_rate: int = 2  # residual block j dilates by rate^j
    use_causal_conv: bool = True  # causal padding (else centred)
    pad_mode: str = "constant"  # "constant", "replicate" or "reflect"
    compress: int = 2  # residual blocks' bottleneck: dim / compress
    codebook_size: int = 2048
    num_quantizers: int = 32
    use_conv_shortcut: bool = False  # a 1x1 conv on the residual path (else identity)
    vector_quantization_hidden_dimension: int = 256  # the RVQ's width (projected from C when it differs)
    num_semantic_quantizers: int = 1  # codebooks of the semantic RVQ; the acoustic RVQ has the rest
    num_hidden_layers: int = 8
    intermediate_size: int = 2048
    num_attention_heads: int = 8
    num_key_value_heads: int = 8
    head_dim: int | None = None  # None: hidden_size / num_attention_heads
    hidden_act: str = "gelu"
    norm_eps: float = 1e-5
    use_cache: bool = False
    use_streaming: bool = False  # not implemented
    rope_theta: float = 10000.0
    sliding_window: int = 250  # stored, but the mask the transformer builds ignores it
    attention_bias: bool = False
    frame_rate: float | None = None  # codes per second (None: sampling_rate / (prod(ratios) * 2))
    attn_implementation: str = "sdpa"  # config._attn_implementation: "eager" returns attention weights

    @classmethod
    def from_dict(cls, raw: dict[str, Any], **overrides: Any) -> MimiConfig:  # type: ignore[override]
        frame_rate = raw.get("frame_rate", raw.get("_frame_rate"))  # config.json stores it as _frame_rate
        return super().from_dict({**raw, "frame_rate": frame_rate}, **overrides)

    def __post_init__(self) -> None:
        self.head_dim = self.head_dim or self.hidden_size // self.num_attention_heads
        # the SEANet encoder's own rate, and the codes' rate after the stride-2 downsample
        self.encodec_frame_rate = math.ceil(self.sampling_rate / math.prod(self.upsampling_ratios))
        if self.frame_rate is None:
            self.frame_rate = self.sampling_rate / (math.prod(self.upsampling_ratios) * 2)


# -- convolutional encoder --------------------------------------------------------------------------------


class MimiConv1d(Module):
    """MimiConv1d: a Conv1d with causal (or centred) padding, `pad_mode` constant, replicate or reflect,
    and right padding up to a whole number of strides: (B, C_in, T) -> (B, C_out, ceil(T / stride))."""

    def __init__(self, config: MimiConfig, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 dilation: int = 1, groups: int = 1, pad_mode: str | None = None, bias: bool = True,
                 layer_idx: int | None = None) -> None:  # fmt: skip
        self.causal = config.use_causal_conv
        self.pad_mode = config.pad_mode if pad_mode is None else pad_mode
        self.layer_idx = layer_idx
        self.in_channels = in_channels
        self.conv = Conv1d(in_channels, out_channels, kernel_size, stride, dilation=dilation, groups=groups, bias=bias)
        self.stride = stride
        self.kernel_size = (kernel_size - 1) * dilation + 1  # effective kernel size
        self.padding_total = self.kernel_size - stride
        self.padding_right = self.padding_total // 2  # asymmetric for odd strides (non-causal only)
        self.padding_left = self.padding_total - self.padding_right

    def _get_extra_padding_for_conv1d(self, length: int) -> int:
        # Official: int64 tensors divided with `/`, i.e. in float32 (torch's default float dtype).
        n_frames = np.float32(length - self.kernel_size + self.padding_total) / np.float32(self.stride) + 1
        n_frames = int(np.ceil(n_frames)) - 1
        ideal_length = n_frames * self.stride + self.kernel_size - self.padding_total
        return ideal_length - length

    @staticmethod
    def _pad1d(
        hidden_states: np.ndarray, paddings: tuple[int, int], mode: str = "zero", value: float = 0.0
    ) -> np.ndarray:
        """Reflect padding of an input no longer than the padding first appends zeros (then drops them)."""
        length = hidden_states.shape[-1]
        padding_left, padding_right = paddings
        if mode != "reflect":
            return F.pad1d(hidden_states, padding_left, padding_right, mode, value)
        max_pad = max(padding_left, padding_right)
        extra_pad = 0
        if length <= max_pad:
            extra_pad = max_pad - length + 1
            hidden_states = F.pad1d(hidden_states, 0, extra_pad)
        padded = F.pad1d(hidden_states, padding_left, padding_right, mode, value)
        return padded[..., : padded.shape[-1] - extra_pad]

    def forward(self, hidden_states: np.ndarray, padding_cache: Any = None) -> np.ndarray:
        if padding_cache is not None:
            raise NotImplementedError("streaming (padding_cache) is not used by the codec")
        extra_padding = self._get_extra_padding_for_conv1d(hidden_states.shape[-1])
        if self.causal:
            paddings = (self.padding_total, extra_padding)
        else:
            paddings = (self.padding_left, self.padding_right + extra_padding)
        return self.conv(self._pad1d(hidden_states, paddings, mode=self.pad_mode))


class MimiResnetBlock(Module):
    """MimiResnetBlock (SEANet): x + conv(elu(conv(elu(x)))), kernels residual_kernel_size and 1, on (B, C, T)."""

    def __init__(self, config: MimiConfig, dim: int, dilations: list[int]) -> None:
        kernel_sizes = (config.residual_kernel_size, 1)
        hidden = dim // config.compress
        block: list[Module] = []
        for i, (kernel_size, dilation) in enumerate(zip(kernel_sizes, dilations, strict=True)):
            in_chs = dim if i == 0 else hidden
            out_chs = dim if i == len(kernel_sizes) - 1 else hidden
            block += [ELU(), MimiConv1d(config, in_chs, out_chs, kernel_size, dilation=dilation)]
        self.block = ModuleList(block)
        self.shortcut = MimiConv1d(config, dim, dim, kernel_size=1) if config.use_conv_shortcut else Identity()

    def forward(self, hidden_states: np.ndarray, padding_cache: Any = None) -> np.ndarray:
        residual = hidden_states
        for layer in self.block:
            if isinstance(layer, MimiConv1d):
                hidden_states = layer(hidden_states, padding_cache=padding_cache)
            else:
                hidden_states = layer(hidden_states)
        if isinstance(self.shortcut, MimiConv1d):
            residual = self.shortcut(residual, padding_cache=padding_cache)
        else:
            residual = self.shortcut(residual)
        return residual + hidden_states


class MimiEncoder(Module):
    """MimiEncoder (SEANet): conv, then per ratio (reversed): residual blocks, ELU, strided conv (kernel
    2 * ratio, channels doubled); ELU, conv. (B, 1, samples) -> (B, hidden_size, samples / prod(ratios))."""

    def __init__(self, config: MimiConfig) -> None:
        model: list[Module] = [MimiConv1d(config, config.audio_channels, config.num_filters, config.kernel_size)]
        scaling = 1
        for ratio in reversed(config.upsampling_ratios):
            current_scale = scaling * config.num_filters
            for j in range(config.num_residual_layers):
                model += [MimiResnetBlock(config, current_scale, [config.dilation_growth_rate**j, 1])]
            model += [ELU()]
            model += [MimiConv1d(config, current_scale, current_scale * 2, kernel_size=ratio * 2, stride=ratio)]
            scaling *= 2
        model += [ELU()]
        model += [MimiConv1d(config, scaling * config.num_filters, config.hidden_size, config.last_kernel_size)]
        self.layers = ModuleList(model)

    def forward(self, hidden_states: np.ndarray, padding_cache: Any = None) -> np.ndarray:
        for layer in self.layers:
            if isinstance(layer, (MimiConv1d, MimiResnetBlock)):
                hidden_states = layer(hidden_states, padding_cache=padding_cache)
            else:
                hidden_states = layer(hidden_states)
        return hidden_states


# -- transformer ---------------------------------------------------------------------------------------------


class MimiMLP(Module):
    """MimiMLP: (B, T, C) -> fc2(gelu(fc1(x))) -> (B, T, C)."""

    def __init__(self, config: MimiConfig) -> None:
        self.activation_fn = activation(config.hidden_act)
        self.fc1 = Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.fc2 = Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, hidden_states: np.ndarray, **kwargs: Any) -> np.ndarray:
        return self.fc2(self.activation_fn(self.fc1(hidden_states)))


class MimiAttention(Attention):
    """MimiAttention / MimiSdpaAttention: Qwen3-family attention without q/k norms, whose RoPE tables come
    from its own rotary_emb (called on the values, which only lend their dtype). The SDPA class falls back
    to the eager computation when weights are asked for; weights are returned only then."""

    def __init__(self, config: MimiConfig, layer_idx: int | None = None) -> None:
        super().__init__(config.hidden_size, config.num_attention_heads, config.num_key_value_heads, config.head_dim,
                         layer_idx or 0, bias=config.attention_bias, qk_norm=None,
                         implementation=config.attn_implementation)  # fmt: skip
        self.scaling = 1 / math.sqrt(config.head_dim)  # (not head_dim**-0.5: they can differ in the last bit)
        self.rotary_emb = RotaryEmbedding(config.head_dim, config.rope_theta)
        self.sliding_window = config.sliding_window  # stored, but the mask the model builds ignores it

    def forward(self, hidden_states: np.ndarray, attention_mask: np.ndarray | None = None, position_ids: Any = None,
                past_key_values: Any = None, output_attentions: bool = False, use_cache: bool = False,
                cache_position: Any = None, **kwargs: Any) -> tuple[np.ndarray, np.ndarray | None]:  # fmt: skip
        if past_key_values is not None:
            raise NotImplementedError("KV caches are not used by the codec")
        query, key, value = self.project(hidden_states)  # (B, H, T, D), (B, H_kv, T, D) x 2
        if position_ids is None:
            position_ids = np.arange(hidden_states.shape[1], dtype=np.int64)[None]  # (1, T)
        query, key = self.rotate(query, key, *self.rotary_emb(value, position_ids))
        implementation = "eager" if output_attentions else self.implementation
        output, weights = self.attend(query, key, value, attention_mask, None, implementation)
        return output, (weights if output_attentions else None)


class MimiTransformerLayer(DecoderLayer):
    """MimiTransformerLayer: LayerNorms, MimiAttention, MimiMLP, layer-scaled branches; returns a tuple."""

    def __init__(self, config: MimiConfig, layer_idx: int) -> None:
        super().__init__(MimiAttention(config, layer_idx), MimiMLP(config),
                         LayerNorm(config.hidden_size, eps=config.norm_eps),
                         LayerNorm(config.hidden_size, eps=config.norm_eps), layer_scale_dim=config.hidden_size)  # fmt: skip


class MimiTransformerModel(DecoderStack):
    """MimiTransformerModel: a causal transformer over the encoder frames (B, T, C) -> (B, T, C), without a
    final norm. Its mask is plain causal (transformers' create_causal_mask): the config's sliding_window
    does not limit it."""

    def __init__(self, config: MimiConfig) -> None:
        self.config = config
        self.layers = [MimiTransformerLayer(config, i) for i in range(config.num_hidden_layers)]

    def forward(self, hidden_states: np.ndarray, attention_mask: Any = None, position_ids: np.ndarray | None = None,
                past_key_values: Any = None, use_cache: bool | None = None, output_attentions: bool | None = None,
                output_hidden_states: bool | None = None, return_dict: bool | None = None,
                cache_position: np.ndarray | None = None) -> Any:  # fmt: skip
        if past_key_values is not None or attention_mask is not None:
            raise NotImplementedError("KV caches and padding masks are not used by the codec")
        if cache_position is None:
            cache_position = np.arange(hidden_states.shape[1], dtype=np.int64)
        if position_ids is None:
            position_ids = cache_position[None]  # (1, T)
        out = self.decode(hidden_states, None, position_ids, None, cache_position,
                          self.config.use_cache if use_cache is None else use_cache, bool(output_attentions),
                          boolean_mask=self.config.attn_implementation != "eager")  # fmt: skip
        if return_dict is False:
            return (out["last_hidden_state"], out["attentions"]) if output_attentions else (out["last_hidden_state"],)
        return out


# -- split residual vector quantizer (encode) --------------------------------------------------------------


def euclidean_distances(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """torch.cdist(x, y, p=2) for (N, D) x (M, D), computed as torch does: past 25 rows on either side as
    one matrix product [-2x, |x|^2, 1] @ [y, 1, |y|^2]^T clamped at 1e-30, else from the differences."""
    if x.shape[0] > 25 or y.shape[0] > 25:
        x_norm = np.sum(x * x, axis=-1, keepdims=True)
        y_norm = np.sum(y * y, axis=-1, keepdims=True)
        xa = np.concatenate([x * np.asarray(-2, dtype=x.dtype), x_norm, np.ones_like(x_norm)], axis=-1)
        ya = np.concatenate([y, np.ones_like(y_norm), y_norm], axis=-1)
        return np.sqrt(np.maximum(xa @ ya.T, np.asarray(1e-30, dtype=x.dtype)))
    diff = x[:, None, :] - y[None, :, :]  # (N, M, D)
    return np.sqrt(np.sum(diff * diff, axis=-1))


class MimiEuclideanCodebook(Module):
    """MimiEuclideanCodebook: embed = embed_sum / clamp(cluster_usage, min=epsilon); encode (N, dim) -> the
    index of the nearest embed (N,); decode (...) -> (..., dim). `initialized` is a buffer the official
    module saves and never reads."""

    params = ("initialized", "cluster_usage", "embed_sum")

    def __init__(self, config: MimiConfig, epsilon: float = 1e-5) -> None:
        self.codebook_size = config.codebook_size
        self.epsilon = epsilon
        self.initialized: np.ndarray | None = None
        self.cluster_usage: np.ndarray | None = None
        self.embed_sum: np.ndarray | None = None
        self._embed: np.ndarray | None = None

    @property
    def embed(self) -> np.ndarray:
        if self._embed is None:  # cached on first use, as official
            usage = np.maximum(self.cluster_usage, np.asarray(self.epsilon, dtype=self.cluster_usage.dtype))
            self._embed = self.embed_sum / usage[:, None]  # (codebook_size, dim)
        return self._embed

    @tapped
    def quantize(self, hidden_states: np.ndarray) -> np.ndarray:
        # (Official: distances in float32 via .float(); here in the input's precision.)
        dtype = np.promote_types(hidden_states.dtype, np.float32)
        dists = euclidean_distances(hidden_states.astype(dtype), self.embed.astype(dtype))
        return np.argmin(dists, axis=-1).astype(np.int64)

    @tapped
    def encode(self, hidden_states: np.ndarray) -> np.ndarray:
        shape = hidden_states.shape  # (B, T, dim)
        embed_ind = self.quantize(hidden_states.reshape(-1, shape[-1]))  # (B * T,)
        return embed_ind.reshape(shape[:-1])  # (B, T)

    @tapped
    def decode(self, embed_ind: np.ndarray) -> np.ndarray:
        return self.embed[np.asarray(embed_ind, dtype=np.int64)]


class MimiVectorQuantization(Module):
    """MimiVectorQuantization: encode (B, dim, T) -> codes (B, T); decode codes (B, T) -> (B, dim, T)."""

    def __init__(self, config: MimiConfig) -> None:
        self.codebook = MimiEuclideanCodebook(config)

    @tapped
    def encode(self, hidden_states: np.ndarray) -> np.ndarray:
        return self.codebook.encode(np.ascontiguousarray(hidden_states.transpose(0, 2, 1)))  # (B, T, dim) in

    @tapped
    def decode(self, embed_ind: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(self.codebook.decode(embed_ind).transpose(0, 2, 1))  # (B, T, dim) -> (B, dim, T)


class MimiResidualVectorQuantizer(Module):
    """MimiResidualVectorQuantizer: residual quantization of (B, C, T) by K codebooks (in the RVQ's width
    after input_proj); decode sums the codebook vectors back (output_proj to C)."""

    def __init__(self, config: MimiConfig, num_quantizers: int | None = None) -> None:
        self.codebook_size = config.codebook_size
        self.num_quantizers = num_quantizers if num_quantizers is not None else config.num_quantizers
        self.layers = [MimiVectorQuantization(config) for _ in range(self.num_quantizers)]
        self.input_proj: Conv1d | None = None
        self.output_proj: Conv1d | None = None
        if config.vector_quantization_hidden_dimension != config.hidden_size:
            dim, hidden = config.vector_quantization_hidden_dimension, config.hidden_size
            self.input_proj = Conv1d(hidden, dim, 1, bias=False)
            self.output_proj = Conv1d(dim, hidden, 1, bias=False)

    @tapped
    def encode(self, embeddings: np.ndarray, num_quantizers: int | None = None) -> np.ndarray:
        """Codes (K, B, T): each layer quantizes what the previous ones left (residual -= decoded)."""
        if self.input_proj is not None:
            embeddings = self.input_proj(embeddings)  # (B, dim, T)
        num_quantizers = num_quantizers if num_quantizers is not None else self.num_quantizers
        residual = embeddings
        all_indices = []
        for layer in self.layers[:num_quantizers]:
            indices = layer.encode(residual)  # (B, T)
            residual = residual - layer.decode(indices)  # (B, dim, T)
            all_indices.append(indices)
        return np.stack(all_indices)

    @tapped
    def decode(self, codes: np.ndarray) -> np.ndarray:
        quantized_out: Any = 0
        for i, indices in enumerate(np.swapaxes(codes, 0, 1)):  # codes (B, K, T): (B, T) each
            quantized_out = quantized_out + self.layers[i].decode(indices)  # (B, dim, T)
        if self.output_proj is not None:
            quantized_out = self.output_proj(quantized_out)
        return quantized_out


class MimiSplitResidualVectorQuantizer(Module):
    """MimiSplitResidualVectorQuantizer: a semantic RVQ (the first codebooks) and an acoustic one (the rest),
    both quantizing the same (B, C, T); decode codes (B, Q, T) sums both halves to (B, C, T)."""

    def __init__(self, config: MimiConfig) -> None:
        self.max_num_quantizers = config.num_quantizers
        self.num_semantic_quantizers = config.num_semantic_quantizers
        self.num_acoustic_quantizers = config.num_quantizers - config.num_semantic_quantizers
        self.semantic_residual_vector_quantizer = MimiResidualVectorQuantizer(config, self.num_semantic_quantizers)
        self.acoustic_residual_vector_quantizer = MimiResidualVectorQuantizer(config, self.num_acoustic_quantizers)

    @tapped
    def encode(self, embeddings: np.ndarray, num_quantizers: int | None = None) -> np.ndarray:
        """Semantic and acoustic RVQs both encode the same embeddings; codes (K, B, T) concatenated."""
        num_quantizers = self.max_num_quantizers if num_quantizers is None else num_quantizers
        if not self.num_semantic_quantizers <= num_quantizers <= self.max_num_quantizers:
            raise ValueError(f"num_quantizers must be in [{self.num_semantic_quantizers}, {self.max_num_quantizers}]")
        codes = self.semantic_residual_vector_quantizer.encode(embeddings)
        if num_quantizers > self.num_semantic_quantizers:
            acoustic = self.acoustic_residual_vector_quantizer.encode(
                embeddings, num_quantizers=num_quantizers - self.num_semantic_quantizers
            )
            codes = np.concatenate([codes, acoustic], axis=0)
        return codes

    @tapped
    def decode(self, codes: np.ndarray) -> np.ndarray:
        quantized_out = self.semantic_residual_vector_quantizer.decode(codes[:, : self.num_semantic_quantizers])
        if codes.shape[1] > self.num_semantic_quantizers:
            quantized_out = quantized_out + self.acoustic_residual_vector_quantizer.decode(
                codes[:, self.num_semantic_quantizers :]
            )
        return quantized_out


# -- the encoder (MimiModel without its decoder half) ----------------------------------------------------------


class Qwen3TTSTokenizerV2Encoder(Module):
    """Qwen3TTSTokenizerV2Encoder (qwen_tts/core/tokenizer_12hz/modeling_qwen3_tts_tokenizer_v2.py): a MimiModel
    with its decoder half removed; `encode` turns (B, 1, samples) into codes (B, Q, frames)."""

    def __init__(self, config: MimiConfig) -> None:
        self.config = config
        self.encoder = MimiEncoder(config)
        self.encoder_transformer = MimiTransformerModel(config)
        self.downsample: MimiConv1d | None = None
        if config.frame_rate != config.encodec_frame_rate:
            self.downsample = MimiConv1d(
                config, config.hidden_size, config.hidden_size,
                kernel_size=2 * int(config.encodec_frame_rate / config.frame_rate), stride=2, bias=False,
                pad_mode="replicate",
            )  # fmt: skip
        self.quantizer = MimiSplitResidualVectorQuantizer(config)

    def _encode_frame(self, input_values: np.ndarray, num_quantizers: int) -> np.ndarray:
        embeddings = self.encoder(input_values, padding_cache=None)  # (B, C, T)
        outputs = self.encoder_transformer(np.ascontiguousarray(embeddings.transpose(0, 2, 1)), past_key_values=None,
                                           return_dict=True)  # (B, T, C) in and out  # fmt: skip
        embeddings = np.ascontiguousarray(outputs["last_hidden_state"].transpose(0, 2, 1))  # (B, C, T)
        if self.downsample is None:
            raise NotImplementedError("a Mimi encoder without a downsample layer")
        embeddings = self.downsample(embeddings, padding_cache=None)  # (B, C, frames = T / 2)
        codes = self.quantizer.encode(embeddings, num_quantizers)  # (Q, B, frames)
        return np.swapaxes(codes, 0, 1)  # (B, Q, frames)

    @tapped
    def encode(self, input_values: np.ndarray, padding_mask: Any = None, num_quantizers: int | None = None,
               encoder_past_key_values: Any = None, padding_cache: Any = None, use_streaming: bool | None = None,
               return_dict: bool | None = None) -> Any:  # fmt: skip
        """Codes (B, num_quantizers, frames). The padding mask is accepted and, as officially, unused."""
        return_dict = True if return_dict is None else return_dict
        use_streaming = use_streaming if use_streaming is not None else self.config.use_streaming
        if use_streaming or encoder_past_key_values is not None or padding_cache is not None:
            raise NotImplementedError("streaming encode is not used by the codec")
        num_quantizers = self.config.num_quantizers if num_quantizers is None else num_quantizers
        if num_quantizers > self.config.num_quantizers:
            raise ValueError(f"at most {self.config.num_quantizers} quantizers, asked for {num_quantizers}")
        channels = input_values.shape[1]
        if channels < 1 or channels > 2:
            raise ValueError(f"Number of audio channels must be 1 or 2, but got {channels}")
        codes = self._encode_frame(input_values, num_quantizers)
        return {"audio_codes": codes} if return_dict else (codes, None, None)
