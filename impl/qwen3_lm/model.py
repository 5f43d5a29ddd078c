"""transformers' Qwen3ForCausalLM (models/qwen3/modeling_qwen3.py, transformers 4.57) in NumPy, from the
blocks of impl.common: token embedding, decoder layers (grouped-query attention with per-head q/k
RMSNorm and RoPE, SwiGLU MLP, pre-norm residuals), final norm, lm_head (tied to the embedding or not).

    model = load("folder/of/save_pretrained", np.float32)  # bound at "": model.layers.0.self_attn.q_proj ...
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions)["logits"]  # (B, T, vocab)
    sequences = model.generate(ids, attention_mask=mask, max_new_tokens=8)  # greedy with a KV cache

A padded batch is left-padded with attention_mask 0 at the padding; `generate` derives the positions
from the mask (cumsum - 1) as transformers does. A plain forward takes positions from cache_position
(as the official does): pass position_ids for a padded batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..common import generation
from ..common.attention import Attention
from ..common.config import Config
from ..common.layers import Embedding, GatedMLP, Linear, RMSNorm
from ..common.nn import Module, tapped
from ..common.rope import RotaryEmbedding
from ..common.transformer import DecoderLayer, DecoderStack, cache_positions
from ..common.weights import load_checkpoint_tensors, load_config, load_weights


@dataclass
class Qwen3Config(Config):
    """Qwen3Config (transformers/models/qwen3/configuration_qwen3.py), the fields used."""

    vocab_size: int = 151936
    hidden_size: int = 4096  # C
    intermediate_size: int = 22016  # the MLP's inner width
    num_hidden_layers: int = 32
    num_attention_heads: int = 32  # H
    num_key_value_heads: int | None = 32  # H_kv (None: as many as query heads)
    head_dim: int = 128  # D
    hidden_act: str = "silu"
    rms_norm_eps: float = 1e-6
    use_cache: bool = True  # what a forward without use_cache does
    tie_word_embeddings: bool = False  # lm_head.weight is model.embed_tokens.weight
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None  # only the default RoPE type is implemented
    attention_bias: bool = False
    use_sliding_window: bool = False  # not implemented
    eos_token_id: int | list[int] | None = None  # generation stops at it (generation_config.json overrides)
    pad_token_id: int | None = None  # what finished rows are padded with (default: the first EOS)
    attn_implementation: str = "eager"  # "eager" (attention weights returned, what goldens record) or "sdpa"

    def __post_init__(self) -> None:
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.use_sliding_window:
            raise NotImplementedError("sliding-window attention layers are not implemented")
        if self.rope_scaling is not None and self.rope_scaling.get("rope_type", "default") != "default":
            raise NotImplementedError("only the default RoPE type is implemented")


class Qwen3DecoderLayer(DecoderLayer):
    """Qwen3DecoderLayer: x + attn(norm(x)), then h + mlp(norm(h)); returns the hidden states (B, T, C)."""

    def __init__(self, config: Qwen3Config, layer_idx: int) -> None:
        attention = Attention(config.hidden_size, config.num_attention_heads, config.num_key_value_heads,
                              config.head_dim, layer_idx, bias=config.attention_bias, qk_norm="rms",
                              eps=config.rms_norm_eps, implementation=config.attn_implementation)  # fmt: skip
        super().__init__(attention, GatedMLP(config.hidden_size, config.intermediate_size, config.hidden_act),
                         RMSNorm(config.hidden_size, eps=config.rms_norm_eps),
                         RMSNorm(config.hidden_size, eps=config.rms_norm_eps), returns_tuple=False)  # fmt: skip


class Qwen3Model(DecoderStack):
    """Qwen3Model (`model`): ids (B, T) -> embeddings (B, T, C) -> layers -> norm."""

    def __init__(self, config: Qwen3Config) -> None:
        self.config = config
        self.embed_tokens = Embedding(config.vocab_size, config.hidden_size)
        self.layers = [Qwen3DecoderLayer(config, i) for i in range(config.num_hidden_layers)]
        self.norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = RotaryEmbedding(config.head_dim, config.rope_theta)

    def forward(self, input_ids: Any = None, attention_mask: np.ndarray | None = None, position_ids: Any = None,
                past_key_values: dict | None = None, inputs_embeds: np.ndarray | None = None,
                use_cache: bool | None = None, cache_position: np.ndarray | None = None,
                **kwargs: Any) -> dict[str, Any]:  # fmt: skip
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)  # (B, T, C)
        use_cache = self.config.use_cache if use_cache is None else use_cache
        past_key_values, cache_position = cache_positions(past_key_values, inputs_embeds.shape[1], use_cache,
                                                          cache_position)  # fmt: skip
        if position_ids is None:
            position_ids = np.asarray(cache_position)[None]  # (1, T)
        return self.decode(inputs_embeds, attention_mask, position_ids, past_key_values, cache_position, use_cache)


class Qwen3ForCausalLM(Module):
    """Qwen3ForCausalLM (the root, path ""): the model and its lm_head, (B, T) ids -> (B, T, vocab) logits."""

    def __init__(self, config: Qwen3Config) -> None:
        self.config = config
        self.model = Qwen3Model(config)
        self.lm_head = Linear(config.hidden_size, config.vocab_size, bias=False)
        self.unused_weights: list[str] = []  # checkpoint tensors the model has no place for

    def forward(self, input_ids: Any = None, attention_mask: np.ndarray | None = None, position_ids: Any = None,
                past_key_values: dict | None = None, inputs_embeds: np.ndarray | None = None, labels: Any = None,
                use_cache: bool | None = None, cache_position: np.ndarray | None = None, logits_to_keep: int = 0,
                **kwargs: Any) -> dict[str, Any]:  # fmt: skip
        if labels is not None:
            raise NotImplementedError("training losses are not implemented")
        outputs = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                             past_key_values=past_key_values, inputs_embeds=inputs_embeds, use_cache=use_cache,
                             cache_position=cache_position, **kwargs)  # fmt: skip
        hidden_states = outputs["last_hidden_state"]  # (B, T, C)
        if logits_to_keep:  # generate asks for the last position only
            hidden_states = hidden_states[:, -logits_to_keep:]
        out: dict[str, Any] = {"logits": self.lm_head(hidden_states)}  # (B, T or logits_to_keep, vocab)
        if "past_key_values" in outputs:
            out["past_key_values"] = outputs["past_key_values"]
        return out

    def update_model_kwargs_for_generation(self, outputs: dict[str, Any], model_kwargs: dict[str, Any]
                                           ) -> dict[str, Any]:  # fmt: skip
        return model_kwargs

    @tapped
    def generate(self, input_ids: np.ndarray, attention_mask: np.ndarray | None = None, max_new_tokens: int = 20,
                 **kwargs: Any) -> Any:  # fmt: skip
        """GenerationMixin.generate from prompt ids (B, T), left-padded with attention_mask 0: greedy unless
        do_sample (with an explicit numpy generator), a KV cache, the config's EOS and pad tokens. Returns
        the sequences (B, T + new tokens), or a dict with return_dict_in_generate."""
        kwargs.setdefault("eos_token_id", self.config.eos_token_id)
        kwargs.setdefault("pad_token_id", self.config.pad_token_id)
        return generation.generate(self, input_ids=input_ids, attention_mask=attention_mask,
                                   max_new_tokens=max_new_tokens, num_layers=self.config.num_hidden_layers,
                                   logits_to_keep=1, **kwargs)  # fmt: skip


def load(folder: str | Path, dtype: Any = np.float32, attn_implementation: str = "eager") -> Qwen3ForCausalLM:
    """The model of a save_pretrained folder (config.json, model.safetensors or its shards, and
    generation_config.json if present), computing in `dtype`, bound at "". Weights follow
    impl.common.weights' rule; with tie_word_embeddings the lm_head is the embedding table (save_pretrained
    stores it once)."""
    folder = Path(folder)
    raw = load_config(folder)
    if (folder / "generation_config.json").exists():  # generate's EOS and pad tokens take precedence
        generation_config = load_config(folder, "generation_config.json")
        raw = {**raw, **{k: generation_config[k] for k in ("eos_token_id", "pad_token_id") if k in generation_config}}
    config = Qwen3Config.from_dict(raw, attn_implementation=attn_implementation)
    model = Qwen3ForCausalLM(config).bind("")
    tensors = load_checkpoint_tensors(folder, dtype)
    if config.tie_word_embeddings and "model.embed_tokens.weight" in tensors:
        tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"]
    model.unused_weights = load_weights(model, tensors, dtype, source=str(folder))
    return model
