"""The code predictor (`talker.code_predictor`): a small decoder with 1-D RoPE that, for each frame, runs
autoregressively over codebooks 1..G-1 from [talker hidden state, embedding(codebook 0)] (official:
Qwen3TTSTalkerCodePredictor*, Qwen3TTSDecoderLayer, Qwen3TTSAttention, Qwen3TTSRotaryEmbedding).

Step s of its generate embeds the previous code with `codec_embedding[s - 1]`, projects it with
`small_to_mtp_projection` (a Linear when the widths differ, Identity otherwise) and predicts with
`lm_head[s]`; the prefill (two positions) predicts codebook 1 with `lm_head[0]` on both positions.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np

from . import generation
from .layers import (
    Embedding,
    Identity,
    Linear,
    RMSNorm,
    TextMLP,
    apply_rotary_pos_emb,
    cache_seq_length,
    cache_update,
    causal_mask,
    compute_dtype,
    default_inv_freq,
    eager_attention_forward,
    new_cache,
)
from .nn import Module, tapped


class RotaryEmbedding(Module):
    """Qwen3TTSRotaryEmbedding: cos/sin (batch, positions, head_dim) from position_ids (batch, positions)."""

    params = ()

    def __init__(self, head_dim: int, theta: float, attention_scaling: float = 1.0) -> None:
        self.head_dim, self.theta, self.attention_scaling = head_dim, theta, attention_scaling

    def forward(self, x: np.ndarray, position_ids: np.ndarray, **kwargs: Any) -> tuple[np.ndarray, np.ndarray]:
        dtype = compute_dtype(x.dtype)  # official: "Force float32"
        freqs = np.asarray(position_ids).astype(dtype)[..., None] * default_inv_freq(self.head_dim, self.theta, dtype)
        emb = np.concatenate([freqs, freqs], axis=-1)
        cos = np.cos(emb) * np.asarray(self.attention_scaling, dtype)
        sin = np.sin(emb) * np.asarray(self.attention_scaling, dtype)
        return cos.astype(x.dtype), sin.astype(x.dtype)


class Attention(Module):
    """Qwen3TTSAttention: GQA with per-head q/k RMSNorm and 1-D RoPE."""

    def __init__(self, config: Any, layer_idx: int) -> None:
        self.layer_idx = layer_idx
        self.head_dim = config.head_dim
        self.scaling = self.head_dim**-0.5
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
        query, key = apply_rotary_pos_emb(query, key, cos, sin)
        if past_key_values is not None:
            key, value = cache_update(past_key_values, self.layer_idx, key, value)
        output, weights = eager_attention_forward(query, key, value, attention_mask, self.scaling)
        return self.o_proj(output.reshape(batch, length, -1)), weights


class DecoderLayer(Module):
    """Qwen3TTSDecoderLayer: x + attn(norm(x)), then h + mlp(norm(h)); returns a 1-tuple."""

    def __init__(self, config: Any, layer_idx: int) -> None:
        self.self_attn = Attention(config, layer_idx)
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


class CodePredictorModel(Module):
    """Qwen3TTSTalkerCodePredictorModel (`talker.code_predictor.model`)."""

    def __init__(self, config: Any, embedding_dim: int) -> None:
        self.config = config
        self.layers = [DecoderLayer(config, i) for i in range(config.num_hidden_layers)]
        self.norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = RotaryEmbedding(config.head_dim, config.rope_theta)
        self.codec_embedding = [Embedding(config.vocab_size, embedding_dim) for _ in range(config.num_code_groups - 1)]

    def get_input_embeddings(self) -> list[Embedding]:
        return self.codec_embedding

    def forward(self, input_ids: Any = None, attention_mask: np.ndarray | None = None, position_ids: Any = None,
                past_key_values: dict | None = None, inputs_embeds: np.ndarray | None = None,
                use_cache: bool | None = None, output_attentions: bool | None = None,
                output_hidden_states: bool | None = None, cache_position: np.ndarray | None = None,
                generation_steps: int | None = None, **kwargs: Any) -> dict[str, Any]:  # fmt: skip
        if input_ids is not None or inputs_embeds is None:
            raise ValueError("`input_ids` is expected to be `None`; pass inputs_embeds")
        output_attentions = bool(output_attentions)
        use_cache = True if use_cache is None else use_cache
        if use_cache and past_key_values is None:
            past_key_values = new_cache()
        batch, length = inputs_embeds.shape[:2]
        past_seen = cache_seq_length(past_key_values)
        if cache_position is None:
            cache_position = np.arange(past_seen, past_seen + length, dtype=np.int64)
        if position_ids is None:
            position_ids = np.asarray(cache_position)[None]
        mask = causal_mask(attention_mask, cache_position, batch, past_seen + length, inputs_embeds.dtype)
        hidden_states = inputs_embeds
        position_embeddings = self.rotary_emb(hidden_states, position_ids)
        all_hidden: list[np.ndarray] = []
        all_attentions: list[np.ndarray] = []
        for layer in self.layers[: self.config.num_hidden_layers]:
            if output_hidden_states:
                all_hidden.append(hidden_states)
            outputs = layer(hidden_states, attention_mask=mask, position_ids=position_ids,
                            past_key_values=past_key_values, output_attentions=output_attentions, use_cache=use_cache,
                            cache_position=cache_position, position_embeddings=position_embeddings)  # fmt: skip
            hidden_states = outputs[0]
            if output_attentions:
                all_attentions.append(outputs[1])
        hidden_states = self.norm(hidden_states)
        if output_hidden_states:
            all_hidden.append(hidden_states)
        out: dict[str, Any] = {"last_hidden_state": hidden_states}
        if use_cache:
            out["past_key_values"] = past_key_values
        if output_hidden_states:
            out["hidden_states"] = tuple(all_hidden)
        if output_attentions:
            out["attentions"] = tuple(all_attentions)
        return out


class CodePredictorForConditionalGeneration(Module):
    """Qwen3TTSTalkerCodePredictorModelForConditionalGeneration (`talker.code_predictor`)."""

    def __init__(self, config: Any, talker_config: Any) -> None:
        self.config = config
        self.model = CodePredictorModel(config, talker_config.hidden_size)
        self.lm_head = [
            Linear(config.hidden_size, config.vocab_size, bias=False) for _ in range(config.num_code_groups - 1)
        ]
        if config.hidden_size != talker_config.hidden_size:
            self.small_to_mtp_projection: Module = Linear(talker_config.hidden_size, config.hidden_size, bias=True)
        else:
            self.small_to_mtp_projection = Identity()

    def get_input_embeddings(self) -> list[Embedding]:
        return self.model.codec_embedding

    def forward(self, input_ids: np.ndarray | None = None, attention_mask: np.ndarray | None = None,
                position_ids: Any = None, past_key_values: dict | None = None,
                inputs_embeds: np.ndarray | None = None, labels: Any = None, use_cache: bool | None = None,
                output_attentions: bool | None = None, output_hidden_states: bool | None = None,
                cache_position: np.ndarray | None = None, generation_steps: int | None = None,
                **kwargs: Any) -> dict[str, Any]:  # fmt: skip
        if labels is not None:
            raise NotImplementedError("training losses are not implemented")
        kwargs.pop("generator", None)
        output_attentions = bool(output_attentions)  # the config's default (False), passed on explicitly
        if inputs_embeds is not None and inputs_embeds.shape[1] > 1:  # prefill: [talker hidden, code 0]
            generation_steps = inputs_embeds.shape[1] - 2
        else:  # the previous code, embedded by its own codebook's table
            inputs_embeds = self.model.get_input_embeddings()[generation_steps - 1](input_ids)
        inputs_embeds = self.small_to_mtp_projection(inputs_embeds)
        outputs = self.model(input_ids=None, attention_mask=attention_mask, position_ids=position_ids,
                             past_key_values=past_key_values, inputs_embeds=inputs_embeds, use_cache=use_cache,
                             output_attentions=output_attentions, output_hidden_states=output_hidden_states,
                             cache_position=cache_position, **kwargs)  # fmt: skip
        logits = self.lm_head[generation_steps](outputs["last_hidden_state"])
        out: dict[str, Any] = {"logits": logits}
        for name in ("past_key_values", "hidden_states", "attentions"):
            if outputs.get(name) is not None:
                out[name] = outputs[name]
        out["generation_steps"] = generation_steps + 1
        return out

    def update_model_kwargs_for_generation(
        self, outputs: dict[str, Any], model_kwargs: dict[str, Any]
    ) -> dict[str, Any]:
        return {**model_kwargs, "generation_steps": outputs["generation_steps"]}

    @tapped
    def generate(self, **kwargs: Any) -> Any:
        """HF generate over the remaining codebooks (see generation.py); no EOS, no repetition penalty."""
        return generation.generate(self, num_layers=self.config.num_hidden_layers, **kwargs)


def code_predictor_config(raw: dict[str, Any]) -> SimpleNamespace:
    """The code predictor config with the official class defaults for keys a config.json may omit."""
    defaults = {"vocab_size": 2048, "hidden_size": 1024, "intermediate_size": 3072, "num_hidden_layers": 5,
                "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 128, "hidden_act": "silu",
                "rms_norm_eps": 1e-6, "rope_theta": 10000, "rope_scaling": None, "attention_bias": False,
                "use_sliding_window": False, "layer_types": None, "num_code_groups": 32}  # fmt: skip
    config = SimpleNamespace(**{**defaults, **raw})
    if config.num_key_value_heads is None:
        config.num_key_value_heads = config.num_attention_heads
    if config.use_sliding_window or any(t != "full_attention" for t in (config.layer_types or [])):
        raise NotImplementedError("sliding-window attention in the code predictor is not implemented")
    if config.rope_scaling is not None and config.rope_scaling.get("rope_type", "default") != "default":
        raise NotImplementedError("only the default RoPE type is implemented")
    return config
