"""The talker: text embedding + projection, the decoder stack with interleaved multimodal RoPE, the codec
head, and one generation step that runs the code predictor (official: Qwen3TTSTalker* classes in
qwen_tts/core/models/modeling_qwen3_tts.py).

Positions come from the attention mask (`get_rope_index`: cumsum - 1, in float32 as the official computes
them), and during generation from `cache_position + rope_deltas` with `rope_deltas` kept on the module
from the prefill, exactly like the official. All three MRoPE rows are equal for text, which makes the
interleaved multimodal RoPE equal to plain 1-D RoPE; we still pick each frequency from its row.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np

from . import generation
from .code_predictor import CodePredictorForConditionalGeneration
from .layers import (
    Embedding,
    Linear,
    RMSNorm,
    TextMLP,
    activation,
    cache_seq_length,
    cache_update,
    causal_mask,
    compute_dtype,
    default_inv_freq,
    eager_attention_forward,
    new_cache,
)
from .nn import Module, tapped
from .ops import rotate_half


class TalkerResizeMLP(Module):
    """Qwen3TTSTalkerResizeMLP (`talker.text_projection`): fc2(act(fc1(x))), text width -> talker width."""

    def __init__(self, input_size: int, intermediate_size: int, output_size: int, act: str, bias: bool = False) -> None:
        self.linear_fc1 = Linear(input_size, intermediate_size, bias=bias)
        self.linear_fc2 = Linear(intermediate_size, output_size, bias=bias)
        self.act_fn = activation(act)

    def forward(self, hidden_state: np.ndarray, **kwargs: Any) -> np.ndarray:
        return self.linear_fc2(self.act_fn(self.linear_fc1(hidden_state)))


class TalkerRotaryEmbedding(Module):
    """Qwen3TTSTalkerRotaryEmbedding: cos/sin of shape (3, batch, positions, head_dim), one row per MRoPE
    axis (temporal, height, width), from position_ids (3, batch, positions)."""

    params = ()

    def __init__(self, head_dim: int, theta: float, attention_scaling: float = 1.0) -> None:
        self.head_dim, self.theta, self.attention_scaling = head_dim, theta, attention_scaling

    def forward(self, x: np.ndarray, position_ids: np.ndarray, **kwargs: Any) -> tuple[np.ndarray, np.ndarray]:
        dtype = compute_dtype(x.dtype)  # official: "Force float32"
        inv_freq = default_inv_freq(self.head_dim, self.theta, dtype)
        freqs = np.asarray(position_ids).astype(dtype)[..., None] * inv_freq  # (3, B, L, D/2)
        emb = np.concatenate([freqs, freqs], axis=-1)
        cos = np.cos(emb) * np.asarray(self.attention_scaling, dtype)
        sin = np.sin(emb) * np.asarray(self.attention_scaling, dtype)
        return cos.astype(x.dtype), sin.astype(x.dtype)


def apply_multimodal_rotary_pos_emb(q: np.ndarray, k: np.ndarray, cos: np.ndarray, sin: np.ndarray,
                                    mrope_section: list[int], mrope_interleaved: bool = False
                                    ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Merge the three rows of cos/sin (3, B, L, D) into one (B, 1, L, D), then x cos + rotate_half(x) sin.

    Interleaved: frequency j of the first half comes from row i for j = i, i+3, ... < 3 * section[i]
    (i = 1, 2), from row 0 otherwise; the second half repeats the first. Not interleaved: consecutive
    blocks of section sizes (repeated for both halves) cycle through rows 0, 1, 2."""
    if mrope_interleaved:
        modality_num = len(mrope_section)

        def interleave(x: np.ndarray) -> np.ndarray:
            x_t = x[0].copy()
            for i, n in enumerate(mrope_section[1:], 1):
                x_t[..., i : n * modality_num : modality_num] = x[i, ..., i : n * modality_num : modality_num]
            return x_t

        half = cos.shape[-1] // 2
        cos = np.concatenate([interleave(cos[..., :half])] * 2, axis=-1)[:, None]
        sin = np.concatenate([interleave(sin[..., :half])] * 2, axis=-1)[:, None]
    else:
        sections = list(mrope_section) * 2
        bounds = np.cumsum(sections)[:-1]
        cos = np.concatenate([m[i % 3] for i, m in enumerate(np.split(cos, bounds, axis=-1))], axis=-1)[:, None]
        sin = np.concatenate([m[i % 3] for i, m in enumerate(np.split(sin, bounds, axis=-1))], axis=-1)[:, None]
    return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin


class TalkerAttention(Module):
    """Qwen3TTSTalkerAttention: GQA with per-head q/k RMSNorm and multimodal RoPE."""

    def __init__(self, config: Any, layer_idx: int) -> None:
        self.layer_idx = layer_idx
        self.head_dim = config.head_dim
        self.scaling = self.head_dim**-0.5
        self.rope_scaling = config.rope_scaling
        bias = config.attention_bias
        self.q_proj = Linear(config.hidden_size, config.num_attention_heads * self.head_dim, bias=bias)
        self.k_proj = Linear(config.hidden_size, config.num_key_value_heads * self.head_dim, bias=bias)
        self.v_proj = Linear(config.hidden_size, config.num_key_value_heads * self.head_dim, bias=bias)
        self.o_proj = Linear(config.num_attention_heads * self.head_dim, config.hidden_size, bias=bias)
        self.q_norm = RMSNorm(self.head_dim, eps=config.rms_norm_eps)
        self.k_norm = RMSNorm(self.head_dim, eps=config.rms_norm_eps)

    def forward(self, hidden_states: np.ndarray, position_embeddings: tuple[np.ndarray, np.ndarray],
                attention_mask: np.ndarray | None, past_key_values: dict | None = None,
                cache_position: np.ndarray | None = None, **kwargs: Any) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        batch, length = hidden_states.shape[:2]
        shape = (batch, length, -1, self.head_dim)
        query = self.q_norm(self.q_proj(hidden_states).reshape(shape)).transpose(0, 2, 1, 3)
        key = self.k_norm(self.k_proj(hidden_states).reshape(shape)).transpose(0, 2, 1, 3)
        value = self.v_proj(hidden_states).reshape(shape).transpose(0, 2, 1, 3)
        cos, sin = position_embeddings
        query, key = apply_multimodal_rotary_pos_emb(query, key, cos, sin, self.rope_scaling["mrope_section"],
                                                     self.rope_scaling.get("interleaved", False))  # fmt: skip
        if past_key_values is not None:
            key, value = cache_update(past_key_values, self.layer_idx, key, value)
        output, weights = eager_attention_forward(query, key, value, attention_mask, self.scaling)
        return self.o_proj(output.reshape(batch, length, -1)), weights


class TalkerDecoderLayer(Module):
    """Qwen3TTSTalkerDecoderLayer: x + attn(norm(x)), then h + mlp(norm(h)). Returns a 1-tuple (or
    (hidden, attention weights) with output_attentions)."""

    def __init__(self, config: Any, layer_idx: int) -> None:
        self.self_attn = TalkerAttention(config, layer_idx)
        self.mlp = TextMLP(config.hidden_size, config.intermediate_size, config.hidden_act)
        self.input_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(self, hidden_states: np.ndarray, attention_mask: np.ndarray | None = None, position_ids: Any = None,
                past_key_values: dict | None = None, output_attentions: bool | None = False,
                use_cache: bool | None = False, cache_position: np.ndarray | None = None,
                position_embeddings: tuple[np.ndarray, np.ndarray] | None = None, **kwargs: Any) -> tuple:  # fmt: skip
        residual = hidden_states
        hidden_states = self.input_layernorm(hidden_states)
        hidden_states, weights = self.self_attn(
            hidden_states=hidden_states, attention_mask=attention_mask, position_ids=position_ids,
            past_key_values=past_key_values, output_attentions=output_attentions, use_cache=use_cache,
            cache_position=cache_position, position_embeddings=position_embeddings, **kwargs,
        )  # fmt: skip
        hidden_states = residual + hidden_states
        residual = hidden_states
        hidden_states = residual + self.mlp(self.post_attention_layernorm(hidden_states))
        return (hidden_states, weights) if output_attentions else (hidden_states,)


class TalkerModel(Module):
    """Qwen3TTSTalkerModel (`talker.model`): codec and text embeddings, decoder layers, final norm."""

    def __init__(self, config: Any) -> None:
        self.config = config
        self.layers = [TalkerDecoderLayer(config, i) for i in range(config.num_hidden_layers)]
        self.norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = TalkerRotaryEmbedding(config.head_dim, config.rope_theta)
        self.codec_embedding = Embedding(config.vocab_size, config.hidden_size)
        self.text_embedding = Embedding(config.text_vocab_size, config.text_hidden_size)

    def forward(self, input_ids: Any = None, attention_mask: np.ndarray | None = None, position_ids: Any = None,
                past_key_values: dict | None = None, inputs_embeds: np.ndarray | None = None,
                use_cache: bool | None = None, output_attentions: bool | None = None,
                output_hidden_states: bool | None = None, cache_position: np.ndarray | None = None,
                **kwargs: Any) -> dict[str, Any]:  # fmt: skip
        output_attentions = bool(output_attentions)
        use_cache = True if use_cache is None else use_cache
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            raise NotImplementedError("the official talker model has no embed_tokens: pass inputs_embeds")
        if use_cache and past_key_values is None:
            past_key_values = new_cache()
        batch, length = inputs_embeds.shape[:2]
        past_seen = cache_seq_length(past_key_values)
        if cache_position is None:
            cache_position = np.arange(past_seen, past_seen + length, dtype=np.int64)
        # the three rows of position ids are temporal, height and width
        if position_ids is None:
            position_ids = np.broadcast_to(np.asarray(cache_position)[None, None], (3, batch, length))
        elif np.ndim(position_ids) == 2:
            position_ids = np.broadcast_to(np.asarray(position_ids)[None], (3, *np.shape(position_ids)))
        if np.ndim(position_ids) == 3 and np.shape(position_ids)[0] == 4:
            text_position_ids, position_ids = position_ids[0], position_ids[1:]
        else:
            text_position_ids = position_ids[0]
        mask = causal_mask(attention_mask, cache_position, batch, past_seen + length, inputs_embeds.dtype)
        hidden_states = inputs_embeds
        position_embeddings = self.rotary_emb(hidden_states, position_ids)
        all_hidden: list[np.ndarray] = []
        all_attentions: list[np.ndarray] = []
        for layer in self.layers:
            if output_hidden_states:
                all_hidden.append(hidden_states)
            outputs = layer(hidden_states, attention_mask=mask, position_ids=text_position_ids,
                            past_key_values=past_key_values, output_attentions=output_attentions, use_cache=use_cache,
                            cache_position=cache_position, position_embeddings=position_embeddings)  # fmt: skip
            hidden_states = outputs[0]
            if output_attentions:
                all_attentions.append(outputs[1])
        hidden_states = self.norm(hidden_states)
        if output_hidden_states:
            all_hidden.append(hidden_states)
        out: dict[str, Any] = {"last_hidden_state": hidden_states}
        if past_key_values is not None:
            out["past_key_values"] = past_key_values
        if output_hidden_states:
            out["hidden_states"] = tuple(all_hidden)
        if output_attentions:
            out["attentions"] = tuple(all_attentions)
        return out


class TalkerForConditionalGeneration(Module):
    """Qwen3TTSTalkerForConditionalGeneration (`talker`)."""

    def __init__(self, config: Any) -> None:
        self.config = config
        self.model = TalkerModel(config)
        self.text_projection = TalkerResizeMLP(config.text_hidden_size, config.text_hidden_size, config.hidden_size,
                                               config.hidden_act, bias=True)  # fmt: skip
        self.codec_head = Linear(config.hidden_size, config.vocab_size, bias=False)
        self.code_predictor = CodePredictorForConditionalGeneration(config.code_predictor_config, config)
        self.rope_deltas: np.ndarray | None = None

    def get_input_embeddings(self) -> Embedding:
        return self.model.codec_embedding

    def get_text_embeddings(self) -> Embedding:
        return self.model.text_embedding

    def forward(self, input_ids: np.ndarray | None = None, attention_mask: np.ndarray | None = None,
                position_ids: Any = None, past_key_values: dict | None = None,
                inputs_embeds: np.ndarray | None = None, labels: Any = None, use_cache: bool | None = None,
                output_attentions: bool | None = None, output_hidden_states: bool | None = None,
                cache_position: np.ndarray | None = None, past_hidden: np.ndarray | None = None,
                trailing_text_hidden: np.ndarray | None = None, tts_pad_embed: np.ndarray | None = None,
                generation_step: int | None = None, subtalker_dosample: bool | None = None,
                subtalker_top_p: float | None = None, subtalker_top_k: int | None = None,
                subtalker_temperature: float | None = None, **kwargs: Any) -> dict[str, Any]:  # fmt: skip
        if labels is not None:
            raise NotImplementedError("training losses are not implemented")
        generator = kwargs.pop("generator", None)
        if inputs_embeds is not None and inputs_embeds.shape[1] > 1:  # prefill
            generation_step = -1
            codec_ids = None
        else:  # one frame: the code predictor fills codebooks 1.. from [past hidden, embedding(code 0)]
            last_id_hidden = self.get_input_embeddings()(input_ids)
            predictor_kwargs: dict[str, Any] = {}
            if subtalker_dosample:
                predictor_kwargs["generator"] = generator
            predictor_result = self.code_predictor.generate(
                inputs_embeds=np.concatenate([past_hidden, last_id_hidden], axis=1),
                max_new_tokens=self.config.num_code_groups - 1, do_sample=subtalker_dosample, top_p=subtalker_top_p,
                top_k=subtalker_top_k, temperature=subtalker_temperature, output_hidden_states=True,
                return_dict_in_generate=True, **predictor_kwargs,
            )  # fmt: skip
            sequences = predictor_result["sequences"]
            codec_ids = np.concatenate([input_ids, sequences], axis=-1)
            embeddings = self.code_predictor.get_input_embeddings()
            codec_hiddens = np.concatenate(
                [last_id_hidden] + [embeddings[i](sequences[..., i : i + 1]) for i in range(self.config.num_code_groups - 1)],
                axis=1,
            )  # fmt: skip
            # next input: sum of all codebook embeddings + the next trailing text embedding (or tts_pad)
            inputs_embeds = codec_hiddens.sum(axis=1, keepdims=True)
            if generation_step < trailing_text_hidden.shape[1]:
                inputs_embeds = inputs_embeds + trailing_text_hidden[:, generation_step][:, None]
            else:
                inputs_embeds = inputs_embeds + tts_pad_embed
        if attention_mask is not None:
            attention_mask = np.asarray(attention_mask)
            prefill = cache_position is None or int(np.asarray(cache_position)[0]) == 0
            if prefill or self.rope_deltas is None:
                delta0 = (1 - attention_mask).sum(axis=-1)[:, None]
                rope_position_ids, rope_deltas = self.get_rope_index(attention_mask)
                self.rope_deltas = (rope_deltas - delta0).astype(np.float32)
                # (a step replayed alone on a fresh module: the official would use positions of the whole
                # mask and fail; the deltas are what its prefill stored, so continue as a step)
                if prefill or inputs_embeds.shape[1] == attention_mask.shape[1]:
                    position_ids = rope_position_ids
                    prefill = True
            if not prefill:
                # positions continue from the cache: cache_position + rope_deltas (float32, as the official's)
                batch, length = inputs_embeds.shape[:2]
                delta = (np.asarray(cache_position)[0] + self.rope_deltas).astype(np.float32)
                position_ids = (np.arange(length, dtype=np.float32)[None] + delta).astype(np.float32)
                position_ids = np.broadcast_to(position_ids[None], (3, batch, length))
        outputs = self.model(input_ids=None, attention_mask=attention_mask, position_ids=position_ids,
                             past_key_values=past_key_values, inputs_embeds=inputs_embeds, use_cache=use_cache,
                             output_attentions=output_attentions, output_hidden_states=output_hidden_states,
                             cache_position=cache_position)  # fmt: skip
        hidden_states = outputs["last_hidden_state"]
        logits = self.codec_head(hidden_states)
        out: dict[str, Any] = {"logits": logits}
        if outputs.get("past_key_values") is not None:
            out["past_key_values"] = outputs["past_key_values"]
        out["hidden_states"] = (outputs.get("hidden_states"), codec_ids)
        if outputs.get("attentions") is not None:
            out["attentions"] = outputs["attentions"]
        out["past_hidden"] = hidden_states[:, -1:, :]
        out["generation_step"] = generation_step + 1
        if trailing_text_hidden is not None:
            out["trailing_text_hidden"] = trailing_text_hidden
        if tts_pad_embed is not None:
            out["tts_pad_embed"] = tts_pad_embed
        return out

    def get_rope_index(self, attention_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positions cumsum(mask) - 1 (1 at padding) in float32, the same for all three rows, and the
        deltas max(position) + 1 - number of real tokens."""
        attention_mask = np.asarray(attention_mask)
        position_ids = np.cumsum(attention_mask.astype(np.float32), axis=-1) - np.float32(1)
        position_ids = np.where(attention_mask == 0, np.float32(1), position_ids).astype(np.float32)
        position_ids = np.broadcast_to(position_ids[None], (3, *attention_mask.shape))
        max_position_ids = position_ids.max(axis=0).max(axis=-1, keepdims=True)
        deltas = (max_position_ids + 1 - attention_mask.sum(axis=-1, keepdims=True)).astype(np.float32)
        return position_ids, deltas

    def update_model_kwargs_for_generation(
        self, outputs: dict[str, Any], model_kwargs: dict[str, Any]
    ) -> dict[str, Any]:
        kwargs = dict(model_kwargs)
        kwargs["past_hidden"] = outputs["past_hidden"]
        kwargs["generation_step"] = outputs["generation_step"]
        kwargs["trailing_text_hidden"] = outputs.get("trailing_text_hidden")
        kwargs["tts_pad_embed"] = outputs.get("tts_pad_embed")
        return kwargs

    @tapped
    def generate(self, **kwargs: Any) -> Any:
        """HF generate on the talker (see generation.py); the cache gets one layer per decoder layer."""
        return generation.generate(self, num_layers=self.config.num_hidden_layers, **kwargs)


def talker_config(raw: dict[str, Any]) -> SimpleNamespace:
    """The talker config with the official class defaults for keys a config.json may omit."""
    defaults = {"vocab_size": 3072, "hidden_size": 1024, "intermediate_size": 2048, "num_hidden_layers": 20,
                "num_attention_heads": 16, "num_key_value_heads": 2, "hidden_act": "silu", "rms_norm_eps": 1e-6,
                "rope_theta": 10000, "rope_scaling": None, "attention_bias": False, "use_sliding_window": False,
                "num_code_groups": 32, "text_hidden_size": 2048}  # fmt: skip
    config = SimpleNamespace(**{**defaults, **raw})
    if getattr(config, "head_dim", None) is None:
        config.head_dim = config.hidden_size // config.num_attention_heads
    if config.use_sliding_window:
        raise NotImplementedError("sliding-window attention in the talker is not implemented")
    if config.rope_scaling is None or "mrope_section" not in config.rope_scaling:
        raise NotImplementedError("the talker needs rope_scaling with an mrope_section")
    if config.rope_scaling.get("rope_type", config.rope_scaling.get("type", "default")) != "default":
        raise NotImplementedError("only the default RoPE type is implemented")
    from .code_predictor import code_predictor_config

    config.code_predictor_config = code_predictor_config(raw.get("code_predictor_config") or {})
    return config
