"""The 12 Hz codec encoder (24 kHz waveform -> codes) in NumPy: the parts of transformers' MimiModel
(transformers/models/mimi/modeling_mimi.py, 4.57.3) that Qwen3TTSTokenizerV2Encoder keeps.

waveform (B, 1, L) -> SEANet conv encoder (MimiEncoder) -> causal transformer -> downsample conv
(stride 2, replicate padding) -> split RVQ encode (nearest codebook entry, residual by residual).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import ops
from .codec_layers import (
    ELU,
    Conv1d,
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

# -- convolutional encoder --------------------------------------------------------------------------------


class MimiConv1d(Module):
    """Conv1d with causal (or centred) padding; `pad_mode` constant, replicate or reflect."""

    def __init__(self, config: dict[str, Any], in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 dilation: int = 1, groups: int = 1, pad_mode: str | None = None, bias: bool = True,
                 layer_idx: int | None = None) -> None:  # fmt: skip
        self.causal = config["use_causal_conv"]
        self.pad_mode = config["pad_mode"] if pad_mode is None else pad_mode
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
            return ops.pad1d(hidden_states, padding_left, padding_right, mode, value)
        max_pad = max(padding_left, padding_right)
        extra_pad = 0
        if length <= max_pad:
            extra_pad = max_pad - length + 1
            hidden_states = ops.pad1d(hidden_states, 0, extra_pad)
        padded = ops.pad1d(hidden_states, padding_left, padding_right, mode, value)
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
    """x + conv(elu(conv(elu(x)))) (SEANet residual block; kernels residual_kernel_size and 1)."""

    def __init__(self, config: dict[str, Any], dim: int, dilations: list[int]) -> None:
        kernel_sizes = (config["residual_kernel_size"], 1)
        hidden = dim // config["compress"]
        block: list[Module] = []
        for i, (kernel_size, dilation) in enumerate(zip(kernel_sizes, dilations, strict=True)):
            in_chs = dim if i == 0 else hidden
            out_chs = dim if i == len(kernel_sizes) - 1 else hidden
            block += [ELU(), MimiConv1d(config, in_chs, out_chs, kernel_size, dilation=dilation)]
        self.block = ModuleList(block)
        self.shortcut = MimiConv1d(config, dim, dim, kernel_size=1) if config["use_conv_shortcut"] else Identity()

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
    """conv, then per ratio (reversed): residual blocks, ELU, strided conv (kernel 2 * ratio); ELU, conv."""

    def __init__(self, config: dict[str, Any]) -> None:
        model: list[Module] = [
            MimiConv1d(config, config["audio_channels"], config["num_filters"], config["kernel_size"])
        ]
        scaling = 1
        for ratio in reversed(config["upsampling_ratios"]):
            current_scale = scaling * config["num_filters"]
            for j in range(config["num_residual_layers"]):
                model += [MimiResnetBlock(config, current_scale, [config["dilation_growth_rate"] ** j, 1])]
            model += [ELU()]
            model += [MimiConv1d(config, current_scale, current_scale * 2, kernel_size=ratio * 2, stride=ratio)]
            scaling *= 2
        model += [ELU()]
        model += [
            MimiConv1d(config, scaling * config["num_filters"], config["hidden_size"], config["last_kernel_size"])
        ]
        self.layers = ModuleList(model)

    def forward(self, hidden_states: np.ndarray, padding_cache: Any = None) -> np.ndarray:
        for layer in self.layers:
            if isinstance(layer, (MimiConv1d, MimiResnetBlock)):
                hidden_states = layer(hidden_states, padding_cache=padding_cache)
            else:
                hidden_states = layer(hidden_states)
        return hidden_states


# -- transformer ---------------------------------------------------------------------------------------------


class MimiLayerScale(Parametrized):
    _params = ("scale",)

    def __init__(self) -> None:
        self.scale: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        return self.scale * x


class MimiRotaryEmbedding(Module):
    def __init__(self, config: dict[str, Any]) -> None:
        self.head_dim = config["head_dim"]
        self.rope_theta = config["rope_theta"]

    def forward(self, x: np.ndarray, position_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        inv_freq = rope_inv_freq(self.head_dim, self.rope_theta, np.promote_types(x.dtype, np.float32))
        return rope_cos_sin(inv_freq, position_ids, x.dtype)


class MimiMLP(Module):
    """fc2(gelu(fc1(x)))"""

    def __init__(self, config: dict[str, Any]) -> None:
        self.activation_fn = activation(config["hidden_act"])
        self.fc1 = Linear(config["hidden_size"], config["intermediate_size"], bias=False)
        self.fc2 = Linear(config["intermediate_size"], config["hidden_size"], bias=False)

    def forward(self, hidden_states: np.ndarray) -> np.ndarray:
        return self.fc2(self.activation_fn(self.fc1(hidden_states)))


class MimiAttention(Module):
    """Multi-head attention with RoPE (the SDPA variant the official codec runs; eager if requested)."""

    def __init__(self, config: dict[str, Any], layer_idx: int | None = None) -> None:
        hidden, bias = config["hidden_size"], config["attention_bias"]
        self.layer_idx = layer_idx
        self.num_heads = config["num_attention_heads"]
        self.head_dim = config["head_dim"]
        self.num_key_value_heads = config["num_key_value_heads"]
        self.num_key_value_groups = self.num_heads // self.num_key_value_heads
        self.scaling = 1 / math.sqrt(config["head_dim"])
        self.sliding_window = config["sliding_window"]  # stored, but the mask the model builds ignores it
        self.attn_implementation = config.get("_attn_implementation", "sdpa")
        self.q_proj = Linear(hidden, self.num_heads * self.head_dim, bias=bias)
        self.k_proj = Linear(hidden, self.num_key_value_heads * self.head_dim, bias=bias)
        self.v_proj = Linear(hidden, self.num_key_value_heads * self.head_dim, bias=bias)
        self.o_proj = Linear(self.num_heads * self.head_dim, hidden, bias=bias)
        self.rotary_emb = MimiRotaryEmbedding(config)

    def forward(self, hidden_states: np.ndarray, attention_mask: np.ndarray | None = None, position_ids: Any = None,
                past_key_values: Any = None, output_attentions: bool = False, use_cache: bool = False,
                cache_position: Any = None, **kwargs: Any) -> tuple[np.ndarray, np.ndarray | None]:  # fmt: skip
        if past_key_values is not None:
            raise NotImplementedError("KV caches are not used by the codec")
        bsz, q_len, _ = hidden_states.shape
        query = self.q_proj(hidden_states).reshape(bsz, q_len, self.num_heads, self.head_dim).transpose(0, 2, 1, 3)
        key = (
            self.k_proj(hidden_states)
            .reshape(bsz, q_len, self.num_key_value_heads, self.head_dim)
            .transpose(0, 2, 1, 3)
        )
        value = (
            self.v_proj(hidden_states)
            .reshape(bsz, q_len, self.num_key_value_heads, self.head_dim)
            .transpose(0, 2, 1, 3)
        )
        if position_ids is None:
            position_ids = np.arange(q_len, dtype=np.int64)[None]
        cos, sin = self.rotary_emb(value, position_ids)
        cos, sin = cos[:, None], sin[:, None]
        query, key = ops.apply_rotary(query, cos, sin), ops.apply_rotary(key, cos, sin)
        # The SDPA class falls back to the eager computation when weights are asked for.
        implementation = "eager" if output_attentions else self.attn_implementation
        output, weights = attend(query, key, value, attention_mask, self.scaling, implementation)
        output = self.o_proj(output.reshape(bsz, q_len, -1))
        return output, (weights if output_attentions else None)


class MimiTransformerLayer(Module):
    def __init__(self, config: dict[str, Any], layer_idx: int) -> None:
        self.self_attn = MimiAttention(config, layer_idx)
        self.mlp = MimiMLP(config)
        self.input_layernorm = LayerNorm(config["hidden_size"], eps=config["norm_eps"])
        self.post_attention_layernorm = LayerNorm(config["hidden_size"], eps=config["norm_eps"])
        self.self_attn_layer_scale = MimiLayerScale()
        self.mlp_layer_scale = MimiLayerScale()

    def forward(self, hidden_states: np.ndarray, attention_mask: np.ndarray | None = None, position_ids: Any = None,
                past_key_values: Any = None, output_attentions: bool | None = False, use_cache: bool | None = False,
                cache_position: Any = None, **kwargs: Any) -> tuple[np.ndarray, ...]:  # fmt: skip
        residual = hidden_states
        hidden_states = self.input_layernorm(hidden_states)
        hidden_states, weights = self.self_attn(hidden_states=hidden_states, attention_mask=attention_mask,
                                                position_ids=position_ids, past_key_values=past_key_values,
                                                output_attentions=output_attentions, use_cache=use_cache,
                                                cache_position=cache_position, **kwargs)  # fmt: skip
        hidden_states = residual + self.self_attn_layer_scale(hidden_states)
        residual = hidden_states
        hidden_states = self.mlp(self.post_attention_layernorm(hidden_states))
        hidden_states = residual + self.mlp_layer_scale(hidden_states)
        return (hidden_states, weights) if output_attentions else (hidden_states,)


class MimiTransformerModel(Module):
    """Causal transformer over the encoder frames. Its mask is plain causal (transformers'
    create_causal_mask): the config's sliding_window does not limit it."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.layers = [MimiTransformerLayer(config, i) for i in range(config["num_hidden_layers"])]

    def forward(self, hidden_states: np.ndarray, attention_mask: Any = None, position_ids: np.ndarray | None = None,
                past_key_values: Any = None, use_cache: bool | None = None, output_attentions: bool | None = None,
                output_hidden_states: bool | None = None, return_dict: bool | None = None,
                cache_position: np.ndarray | None = None) -> Any:  # fmt: skip
        if past_key_values is not None:
            raise NotImplementedError("KV caches are not used by the codec")
        if attention_mask is not None:
            raise NotImplementedError("padding masks are not used by the codec")
        output_attentions = bool(output_attentions) if output_attentions is not None else False
        use_cache = use_cache if use_cache is not None else self.config.get("use_cache", False)
        return_dict = return_dict if return_dict is not None else self.config.get("return_dict", True)
        batch, length = hidden_states.shape[:2]
        if cache_position is None:
            cache_position = np.arange(length, dtype=np.int64)
        if position_ids is None:
            position_ids = cache_position[None]
        mask = causal_mask(batch, length, None, self.config.get("_attn_implementation", "sdpa"), hidden_states.dtype)
        attentions = []
        for layer in self.layers:
            outputs = layer(hidden_states, attention_mask=mask, position_ids=position_ids, past_key_values=None,
                            output_attentions=output_attentions, use_cache=use_cache, cache_position=cache_position)  # fmt: skip
            hidden_states = outputs[0]
            if output_attentions:
                attentions.append(outputs[1])
        if not return_dict:
            return (hidden_states, tuple(attentions)) if output_attentions else (hidden_states,)
        out: dict[str, Any] = {"last_hidden_state": hidden_states}
        if output_attentions:
            out["attentions"] = tuple(attentions)
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
    diff = x[:, None, :] - y[None, :, :]
    return np.sqrt(np.sum(diff * diff, axis=-1))


class MimiEuclideanCodebook(Parametrized):
    """embed = embed_sum / clamp(cluster_usage, min=epsilon); encode = index of the nearest embed."""

    _params = ("cluster_usage", "embed_sum")
    _optional = ("initialized",)

    def __init__(self, config: dict[str, Any], epsilon: float = 1e-5) -> None:
        self.codebook_size = config["codebook_size"]
        self.epsilon = epsilon
        self.initialized: np.ndarray | None = None
        self.cluster_usage: np.ndarray | None = None
        self.embed_sum: np.ndarray | None = None
        self._embed: np.ndarray | None = None

    @property
    def embed(self) -> np.ndarray:
        if self._embed is None:  # cached on first use, as official
            usage = np.maximum(self.cluster_usage, np.asarray(self.epsilon, dtype=self.cluster_usage.dtype))
            self._embed = self.embed_sum / usage[:, None]
        return self._embed

    @tapped
    def quantize(self, hidden_states: np.ndarray) -> np.ndarray:
        # (Official: distances in float32 via .float(); here in the input's precision.)
        dtype = np.promote_types(hidden_states.dtype, np.float32)
        dists = euclidean_distances(hidden_states.astype(dtype), self.embed.astype(dtype))
        return np.argmin(dists, axis=-1).astype(np.int64)

    @tapped
    def encode(self, hidden_states: np.ndarray) -> np.ndarray:
        shape = hidden_states.shape
        embed_ind = self.quantize(hidden_states.reshape(-1, shape[-1]))
        return embed_ind.reshape(shape[:-1])

    @tapped
    def decode(self, embed_ind: np.ndarray) -> np.ndarray:
        return ops.embedding(embed_ind, self.embed)


class MimiVectorQuantization(Module):
    def __init__(self, config: dict[str, Any]) -> None:
        self.codebook = MimiEuclideanCodebook(config)

    @tapped
    def encode(self, hidden_states: np.ndarray) -> np.ndarray:
        return self.codebook.encode(np.ascontiguousarray(hidden_states.transpose(0, 2, 1)))

    @tapped
    def decode(self, embed_ind: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(self.codebook.decode(embed_ind).transpose(0, 2, 1))


class MimiResidualVectorQuantizer(Module):
    def __init__(self, config: dict[str, Any], num_quantizers: int | None = None) -> None:
        self.codebook_size = config["codebook_size"]
        self.num_quantizers = num_quantizers if num_quantizers is not None else config["num_quantizers"]
        self.layers = [MimiVectorQuantization(config) for _ in range(self.num_quantizers)]
        self.input_proj: Conv1d | None = None
        self.output_proj: Conv1d | None = None
        if config["vector_quantization_hidden_dimension"] != config["hidden_size"]:
            dim, hidden = config["vector_quantization_hidden_dimension"], config["hidden_size"]
            self.input_proj = Conv1d(hidden, dim, 1, bias=False)
            self.output_proj = Conv1d(dim, hidden, 1, bias=False)

    @tapped
    def encode(self, embeddings: np.ndarray, num_quantizers: int | None = None) -> np.ndarray:
        """Codes (K, B, T): each layer quantizes what the previous ones left (residual -= decoded)."""
        if self.input_proj is not None:
            embeddings = self.input_proj(embeddings)
        num_quantizers = num_quantizers if num_quantizers is not None else self.num_quantizers
        residual = embeddings
        all_indices = []
        for layer in self.layers[:num_quantizers]:
            indices = layer.encode(residual)
            residual = residual - layer.decode(indices)
            all_indices.append(indices)
        return np.stack(all_indices)

    @tapped
    def decode(self, codes: np.ndarray) -> np.ndarray:
        quantized_out: Any = 0
        for i, indices in enumerate(np.swapaxes(codes, 0, 1)):
            quantized_out = quantized_out + self.layers[i].decode(indices)
        if self.output_proj is not None:
            quantized_out = self.output_proj(quantized_out)
        return quantized_out


class MimiSplitResidualVectorQuantizer(Module):
    def __init__(self, config: dict[str, Any]) -> None:
        self.max_num_quantizers = config["num_quantizers"]
        self.num_semantic_quantizers = config["num_semantic_quantizers"]
        self.num_acoustic_quantizers = config["num_quantizers"] - config["num_semantic_quantizers"]
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


def mimi_config(config: dict[str, Any]) -> dict[str, Any]:
    """MimiConfig defaults and derived values (head_dim, frame rates) over a config.json dict."""
    out = {
        "sampling_rate": 24000, "audio_channels": 1, "hidden_size": 512, "num_filters": 64, "num_residual_layers": 1,
        "upsampling_ratios": [8, 6, 5, 4], "kernel_size": 7, "last_kernel_size": 3, "residual_kernel_size": 3,
        "dilation_growth_rate": 2, "use_causal_conv": True, "pad_mode": "constant", "compress": 2,
        "trim_right_ratio": 1.0, "codebook_size": 2048, "codebook_dim": 256, "num_quantizers": 32,
        "use_conv_shortcut": False, "vector_quantization_hidden_dimension": 256, "num_semantic_quantizers": 1,
        "upsample_groups": 512, "num_hidden_layers": 8, "intermediate_size": 2048, "num_attention_heads": 8,
        "num_key_value_heads": 8, "head_dim": None, "hidden_act": "gelu", "max_position_embeddings": 8000,
        "norm_eps": 1e-5, "use_cache": False, "use_streaming": False, "rope_theta": 10000.0, "sliding_window": 250,
        "attention_dropout": 0.0, "layer_scale_initial_scale": 0.01, "attention_bias": False,
    }  # fmt: skip
    out.update(config)
    out["head_dim"] = out["head_dim"] or out["hidden_size"] // out["num_attention_heads"]
    out["encodec_frame_rate"] = math.ceil(out["sampling_rate"] / math.prod(out["upsampling_ratios"]))
    frame_rate = out.get("frame_rate", out.get("_frame_rate"))
    if frame_rate is None:  # MimiConfig.frame_size: every encoder stride, times 2 for the downsample
        frame_rate = out["sampling_rate"] / (math.prod(out["upsampling_ratios"]) * 2)
    out["frame_rate"] = frame_rate
    return out


class Qwen3TTSTokenizerV2Encoder(Module):
    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config = mimi_config(config)
        self.encoder = MimiEncoder(config)
        self.encoder_transformer = MimiTransformerModel(config)
        self.downsample: MimiConv1d | None = None
        if config["frame_rate"] != config["encodec_frame_rate"]:
            self.downsample = MimiConv1d(
                config, config["hidden_size"], config["hidden_size"],
                kernel_size=2 * int(config["encodec_frame_rate"] / config["frame_rate"]), stride=2, bias=False,
                pad_mode="replicate",
            )  # fmt: skip
        self.quantizer = MimiSplitResidualVectorQuantizer(config)

    def _encode_frame(self, input_values: np.ndarray, num_quantizers: int) -> np.ndarray:
        embeddings = self.encoder(input_values, padding_cache=None)
        outputs = self.encoder_transformer(np.ascontiguousarray(embeddings.transpose(0, 2, 1)), past_key_values=None,
                                           return_dict=True)  # fmt: skip
        embeddings = np.ascontiguousarray(outputs["last_hidden_state"].transpose(0, 2, 1))
        if self.downsample is None:
            raise NotImplementedError("a Mimi encoder without a downsample layer")
        embeddings = self.downsample(embeddings, padding_cache=None)
        codes = self.quantizer.encode(embeddings, num_quantizers)
        return np.swapaxes(codes, 0, 1)

    @tapped
    def encode(self, input_values: np.ndarray, padding_mask: Any = None, num_quantizers: int | None = None,
               encoder_past_key_values: Any = None, padding_cache: Any = None, use_streaming: bool | None = None,
               return_dict: bool | None = None) -> Any:  # fmt: skip
        """Codes (B, num_quantizers, frames). The padding mask is accepted and, as officially, unused."""
        return_dict = return_dict if return_dict is not None else self.config.get("return_dict", True)
        use_streaming = use_streaming if use_streaming is not None else self.config["use_streaming"]
        if use_streaming or encoder_past_key_values is not None or padding_cache is not None:
            raise NotImplementedError("streaming encode is not used by the codec")
        num_quantizers = self.config["num_quantizers"] if num_quantizers is None else num_quantizers
        if num_quantizers > self.config["num_quantizers"]:
            raise ValueError(f"at most {self.config['num_quantizers']} quantizers, asked for {num_quantizers}")
        channels = input_values.shape[1]
        if channels < 1 or channels > 2:
            raise ValueError(f"Number of audio channels must be 1 or 2, but got {channels}")
        codes = self._encode_frame(input_values, num_quantizers)
        return {"audio_codes": codes} if return_dict else (codes, None, None)
