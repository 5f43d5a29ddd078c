"""The 12 Hz codec decoder (codes -> 24 kHz waveform) in NumPy, mirroring
qwen_tts/core/tokenizer_12hz/modeling_qwen3_tts_tokenizer_v2.py (qwen-tts 0.1.1) class by class.

codes (B, Q, T) -> split RVQ decode -> pre_conv -> pre_transformer (sliding-window attention)
-> upsample stages (transposed conv + ConvNeXt) -> decoder (conv, 4 blocks of SnakeBeta + transposed
conv + 3 residual units, SnakeBeta, conv) -> clamp to [-1, 1]: (B, 1, T * total_upsample).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import ops
from .codec_layers import (
    GELU,
    Conv1d,
    ConvTranspose1d,
    Identity,
    LayerNorm,
    Linear,
    ModuleList,
    Parametrized,
    activation,
    attend,
    causal_mask,
    rope_cos_sin,
    rope_inv_freq,
)
from .nn import Module, tapped

# -- convolutions ----------------------------------------------------------------------------------------


class Qwen3TTSTokenizerV2CausalConvNet(Module):
    """Left-pad by (kernel span - stride), right-pad up to a whole number of strides, then a valid conv."""

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
        return self.conv(ops.pad1d(hidden_state, self.padding, extra_padding))


class Qwen3TTSTokenizerV2CausalTransConvNet(Module):
    """Transposed conv, then drop the last (kernel - stride) samples (all of the padding on the right)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> None:
        self.conv = ConvTranspose1d(in_channels, out_channels, kernel_size, stride=stride)
        self.left_pad = 0
        self.right_pad = int(kernel_size - stride)

    def forward(self, hidden_state: np.ndarray) -> np.ndarray:
        hidden_state = self.conv(hidden_state)
        if self.right_pad > 0:
            hidden_state = hidden_state[..., : hidden_state.shape[-1] - self.right_pad]
        return np.ascontiguousarray(hidden_state)


class Qwen3TTSTokenizerV2ConvNeXtBlock(Parametrized):
    """x + gamma * pwconv2(gelu(pwconv1(layernorm(dwconv(x))))), channels-last in the middle."""

    _params = ("gamma",)

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
        residual = hidden_states
        hidden_states = self.dwconv(hidden_states).transpose(0, 2, 1)
        hidden_states = self.norm(hidden_states)
        hidden_states = self.pwconv1(hidden_states)
        hidden_states = self.act(hidden_states)
        hidden_states = self.pwconv2(hidden_states)
        hidden_states = self.gamma * hidden_states
        return residual + hidden_states.transpose(0, 2, 1)


class SnakeBeta(Parametrized):
    """x + 1 / (exp(beta) + 1e-9) * sin^2(x * exp(alpha)), per channel (alpha, beta stored as logs)."""

    _params = ("alpha", "beta")

    def __init__(self, in_features: int) -> None:
        self.in_features = in_features
        self.no_div_by_zero = 0.000000001
        self.alpha: np.ndarray | None = None
        self.beta: np.ndarray | None = None

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"alpha": (self.in_features,), "beta": (self.in_features,)}

    def forward(self, hidden_states: np.ndarray) -> np.ndarray:
        alpha = np.exp(self.alpha)[None, :, None]
        beta = np.exp(self.beta)[None, :, None]
        eps = np.asarray(self.no_div_by_zero, dtype=beta.dtype)
        periodic = hidden_states * alpha  # in place from here: same operations, fewer temporaries
        np.sin(periodic, out=periodic)
        np.square(periodic, out=periodic)
        periodic *= 1.0 / (beta + eps)
        periodic += hidden_states
        return periodic


class Qwen3TTSTokenizerV2DecoderDecoderResidualUnit(Module):
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
    """SnakeBeta, causal transposed conv (kernel 2 * rate, stride rate), residual units dilated 1, 3, 9."""

    def __init__(self, config: dict[str, Any], layer_idx: int) -> None:
        in_dim = config["decoder_dim"] // 2**layer_idx
        out_dim = config["decoder_dim"] // 2 ** (layer_idx + 1)
        rate = config["upsample_rates"][layer_idx]
        block: list[Module] = [
            SnakeBeta(in_dim),
            Qwen3TTSTokenizerV2CausalTransConvNet(in_dim, out_dim, 2 * rate, rate),
        ]
        block += [Qwen3TTSTokenizerV2DecoderDecoderResidualUnit(out_dim, dilation) for dilation in (1, 3, 9)]
        self.block = ModuleList(block)

    def forward(self, hidden: np.ndarray) -> np.ndarray:
        for block in self.block:
            hidden = block(hidden)
        return hidden


# -- pre-transformer ------------------------------------------------------------------------------------


class Qwen3TTSTokenizerV2DecoderRMSNorm(Parametrized):
    """w * x / sqrt(mean(x^2) + eps). (Official: computed in float32; here in the input's dtype.)"""

    _params = ("weight",)

    def __init__(self, hidden_size: int, eps: float = 1e-6) -> None:
        self.hidden_size, self.variance_epsilon = hidden_size, eps
        self.weight: np.ndarray | None = None

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"weight": (self.hidden_size,)}

    def forward(self, hidden_states: np.ndarray) -> np.ndarray:
        return ops.rms_norm(hidden_states, self.weight, self.variance_epsilon)


class Qwen3TTSTokenizerV2DecoderLayerScale(Parametrized):
    _params = ("scale",)

    def __init__(self) -> None:
        self.scale: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        return self.scale * x


class Qwen3TTSTokenizerV2DecoderRotatoryEmbedding(Module):
    def __init__(self, config: dict[str, Any]) -> None:
        self.head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
        self.rope_theta = config["rope_theta"]

    def forward(self, x: np.ndarray, position_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        inv_freq = rope_inv_freq(self.head_dim, self.rope_theta, np.promote_types(x.dtype, np.float32))
        return rope_cos_sin(inv_freq, position_ids, x.dtype)


class Qwen3TTSTokenizerV2DecoderAttention(Module):
    def __init__(self, config: dict[str, Any], layer_idx: int) -> None:
        hidden, heads, kv_heads = config["hidden_size"], config["num_attention_heads"], config["num_key_value_heads"]
        bias = config.get("attention_bias", False)
        self.layer_idx = layer_idx
        self.head_dim = config.get("head_dim") or hidden // heads
        self.num_key_value_groups = heads // kv_heads
        self.scaling = self.head_dim**-0.5
        self.sliding_window = config["sliding_window"]
        self.attn_implementation = config.get("_attn_implementation", "sdpa")
        self.q_proj = Linear(hidden, heads * self.head_dim, bias=bias)
        self.k_proj = Linear(hidden, kv_heads * self.head_dim, bias=bias)
        self.v_proj = Linear(hidden, kv_heads * self.head_dim, bias=bias)
        self.o_proj = Linear(heads * self.head_dim, hidden, bias=bias)
        self.q_norm = Identity()
        self.k_norm = Identity()

    def forward(self, hidden_states: np.ndarray, position_embeddings: tuple[np.ndarray, np.ndarray],
                attention_mask: np.ndarray | None, past_key_values: Any = None, cache_position: Any = None,
                **kwargs: Any) -> tuple[np.ndarray, np.ndarray | None]:  # fmt: skip
        if past_key_values is not None:
            raise NotImplementedError("KV caches are not used by the codec")
        hidden_shape = (*hidden_states.shape[:-1], -1, self.head_dim)
        query = self.q_norm(self.q_proj(hidden_states).reshape(hidden_shape)).transpose(0, 2, 1, 3)
        key = self.k_norm(self.k_proj(hidden_states).reshape(hidden_shape)).transpose(0, 2, 1, 3)
        value = self.v_proj(hidden_states).reshape(hidden_shape).transpose(0, 2, 1, 3)
        cos, sin = (p[:, None] for p in position_embeddings)  # broadcast over heads
        query, key = ops.apply_rotary(query, cos, sin), ops.apply_rotary(key, cos, sin)
        output, weights = attend(query, key, value, attention_mask, self.scaling, self.attn_implementation)
        if self.attn_implementation != "eager":
            weights = None  # transformers' sdpa_attention_forward returns no weights
        output = self.o_proj(output.reshape(*hidden_states.shape[:-1], -1))
        return output, weights


class Qwen3TTSTokenizerV2DecoderMlp(Module):
    """down(act(gate(x)) * up(x))"""

    def __init__(self, config: dict[str, Any]) -> None:
        hidden, inter = config["hidden_size"], config["intermediate_size"]
        self.gate_proj = Linear(hidden, inter, bias=False)
        self.up_proj = Linear(hidden, inter, bias=False)
        self.down_proj = Linear(inter, hidden, bias=False)
        self.act_fn = activation(config.get("hidden_act", "silu"))

    def forward(self, x: np.ndarray) -> np.ndarray:
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


class Qwen3TTSTokenizerV2DecoderTransformerLayer(Module):
    def __init__(self, config: dict[str, Any], layer_idx: int) -> None:
        eps = config["rms_norm_eps"]
        self.self_attn = Qwen3TTSTokenizerV2DecoderAttention(config, layer_idx)
        self.mlp = Qwen3TTSTokenizerV2DecoderMlp(config)
        self.input_layernorm = Qwen3TTSTokenizerV2DecoderRMSNorm(config["hidden_size"], eps)
        self.post_attention_layernorm = Qwen3TTSTokenizerV2DecoderRMSNorm(config["hidden_size"], eps)
        self.self_attn_layer_scale = Qwen3TTSTokenizerV2DecoderLayerScale()
        self.mlp_layer_scale = Qwen3TTSTokenizerV2DecoderLayerScale()
        self.attention_type = "sliding_attention"

    def forward(self, hidden_states: np.ndarray, attention_mask: np.ndarray | None = None, position_ids: Any = None,
                past_key_values: Any = None, use_cache: Any = False, cache_position: Any = None,
                **kwargs: Any) -> np.ndarray:  # fmt: skip
        residual = hidden_states
        hidden_states = self.input_layernorm(hidden_states)
        hidden_states, _ = self.self_attn(hidden_states=hidden_states, attention_mask=attention_mask,
                                          position_ids=position_ids, past_key_values=past_key_values,
                                          use_cache=use_cache, cache_position=cache_position, **kwargs)  # fmt: skip
        hidden_states = residual + self.self_attn_layer_scale(hidden_states)
        residual = hidden_states
        hidden_states = self.mlp(self.post_attention_layernorm(hidden_states))
        return residual + self.mlp_layer_scale(hidden_states)


class Qwen3TTSTokenizerV2DecoderTransformerModel(Module):
    """input_proj -> layers (every one sliding-window causal) -> norm -> output_proj."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.num_hidden_layers = config["num_hidden_layers"]
        self.layers = [Qwen3TTSTokenizerV2DecoderTransformerLayer(config, i) for i in range(self.num_hidden_layers)]
        self.norm = Qwen3TTSTokenizerV2DecoderRMSNorm(config["hidden_size"], eps=config["rms_norm_eps"])
        self.rotary_emb = Qwen3TTSTokenizerV2DecoderRotatoryEmbedding(config)
        self.window_size = config["sliding_window"]
        self.attn_implementation = config.get("_attn_implementation", "sdpa")
        self.input_proj = Linear(config["latent_dim"], config["hidden_size"])
        self.output_proj = Linear(config["hidden_size"], config["latent_dim"])

    def forward(self, input_ids: Any = None, attention_mask: Any = None, position_ids: np.ndarray | None = None,
                past_key_values: Any = None, inputs_embeds: np.ndarray | None = None, use_cache: Any = None,
                cache_position: np.ndarray | None = None, **kwargs: Any) -> dict[str, np.ndarray]:  # fmt: skip
        if input_ids is not None or inputs_embeds is None:
            raise ValueError("the codec pre-transformer takes inputs_embeds only")
        if past_key_values is not None or use_cache:
            raise NotImplementedError("KV caches are not used by the codec")
        inputs_embeds = self.input_proj(inputs_embeds)
        batch, length = inputs_embeds.shape[:2]
        if cache_position is None:
            cache_position = np.arange(length, dtype=np.int64)
        if position_ids is None:
            position_ids = cache_position[None]
        if isinstance(attention_mask, dict):
            mask = attention_mask["sliding_attention"]
        elif attention_mask is None:
            mask = causal_mask(batch, length, self.window_size, self.attn_implementation, inputs_embeds.dtype)
        else:
            raise NotImplementedError("padding masks are not used by the codec")
        hidden_states = inputs_embeds
        position_embeddings = self.rotary_emb(hidden_states, position_ids)
        for layer in self.layers[: self.num_hidden_layers]:
            hidden_states = layer(hidden_states, attention_mask=mask, position_ids=position_ids,
                                  past_key_values=None, use_cache=use_cache, cache_position=cache_position,
                                  position_embeddings=position_embeddings)  # fmt: skip
        hidden_states = self.output_proj(self.norm(hidden_states))
        return {"last_hidden_state": hidden_states}


# -- split residual vector quantizer (decode only) ---------------------------------------------------------


class EuclideanCodebook(Parametrized):
    """codebook = embedding_sum / clamp(cluster_usage, min=epsilon), looked up by code."""

    _params = ("cluster_usage", "embedding_sum")

    def __init__(self, dim: int, codebook_size: int, epsilon: float = 1e-5) -> None:
        self.dim, self.codebook_size, self.epsilon = dim, codebook_size, epsilon
        self.cluster_usage: np.ndarray | None = None
        self.embedding_sum: np.ndarray | None = None

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"cluster_usage": (self.codebook_size,), "embedding_sum": (self.codebook_size, self.dim)}

    @tapped
    def decode(self, codes: np.ndarray) -> np.ndarray:
        usage = np.maximum(self.cluster_usage, np.asarray(self.epsilon, dtype=self.cluster_usage.dtype))
        embedding = self.embedding_sum / usage[:, None]
        return ops.embedding(codes, embedding)


class VectorQuantization(Module):
    def __init__(self, dim: int, codebook_size: int, epsilon: float = 1e-5) -> None:
        self.project_out = Identity()  # the decoder's codebooks have dim == codebook_dim: no projection
        self.epsilon = epsilon
        self._codebook = EuclideanCodebook(dim, codebook_size, epsilon)
        self.codebook_size = codebook_size

    @tapped
    def decode(self, codes: np.ndarray) -> np.ndarray:
        quantized = self.project_out(self._codebook.decode(codes))
        return np.ascontiguousarray(quantized.transpose(0, 2, 1))


class ResidualVectorQuantization(Module):
    def __init__(self, num_quantizers: int, dim: int, codebook_size: int) -> None:
        self.layers = [VectorQuantization(dim, codebook_size) for _ in range(num_quantizers)]

    @tapped
    def decode(self, codes: np.ndarray) -> np.ndarray:
        quantized: Any = 0
        for idx, layer_codes in enumerate(codes):  # codes: (K, B, T)
            quantized = quantized + self.layers[idx].decode(layer_codes)
        return quantized


class ResidualVectorQuantizer(Module):
    def __init__(self, dimension: int, input_dimension: int, output_dimension: int, n_q: int, bins: int) -> None:
        self.n_q = n_q
        self.dimension = dimension
        self.input_proj = Conv1d(input_dimension, dimension, 1, bias=False)  # force_projection=True
        self.output_proj = Conv1d(dimension, output_dimension, 1, bias=False)
        self.vq = ResidualVectorQuantization(n_q, dimension, bins)

    @tapped
    def decode(self, codes: np.ndarray) -> np.ndarray:
        quantized = self.vq.decode(np.swapaxes(codes, 0, 1))
        return self.output_proj(quantized)


class SplitResidualVectorQuantizer(Module):
    """The first n_q_semantic codebooks through rvq_first, the rest through rvq_rest; outputs summed."""

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
    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.total_upsample = int(np.prod(list(config["upsample_rates"]) + list(config["upsampling_ratios"])))
        self.pre_transformer = Qwen3TTSTokenizerV2DecoderTransformerModel(config)
        self.quantizer = SplitResidualVectorQuantizer(
            n_q=config["num_quantizers"], n_q_semantic=1, dimension=config["codebook_dim"] // 2,
            input_dimension=config["codebook_dim"], output_dimension=config["codebook_dim"],
            bins=config["codebook_size"],
        )  # fmt: skip
        self.pre_conv = Qwen3TTSTokenizerV2CausalConvNet(config["codebook_dim"], config["latent_dim"], kernel_size=3)
        latent = config["latent_dim"]
        self.upsample = ModuleList(
            ModuleList([Qwen3TTSTokenizerV2CausalTransConvNet(latent, latent, factor, factor),
                        Qwen3TTSTokenizerV2ConvNeXtBlock(latent)])
            for factor in config["upsampling_ratios"]
        )  # fmt: skip
        decoder: list[Module] = [Qwen3TTSTokenizerV2CausalConvNet(latent, config["decoder_dim"], 7)]
        decoder += [Qwen3TTSTokenizerV2DecoderDecoderBlock(config, i) for i in range(len(config["upsample_rates"]))]
        output_dim = config["decoder_dim"] // 2 ** len(config["upsample_rates"])
        decoder += [SnakeBeta(output_dim), Qwen3TTSTokenizerV2CausalConvNet(output_dim, 1, 7)]
        self.decoder = ModuleList(decoder)

    def forward(self, codes: np.ndarray) -> np.ndarray:
        if codes.shape[1] != self.config["num_quantizers"]:
            raise ValueError(f"Expected {self.config['num_quantizers']} layer of codes, got {codes.shape[1]}")
        hidden = self.quantizer.decode(codes)
        hidden = np.ascontiguousarray(self.pre_conv(hidden).transpose(0, 2, 1))
        hidden = self.pre_transformer(inputs_embeds=hidden)["last_hidden_state"]
        hidden = np.ascontiguousarray(hidden.transpose(0, 2, 1))
        for blocks in self.upsample:
            for block in blocks:
                hidden = block(hidden)
        wav = hidden
        for block in self.decoder:
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
