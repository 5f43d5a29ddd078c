"""The code predictor (`talker.code_predictor`): a small decoder with 1-D RoPE that, for each frame, runs
autoregressively over codebooks 1..G-1 from [talker hidden state, embedding(codebook 0)] (official:
Qwen3TTSTalkerCodePredictor* in qwen_tts/core/models/modeling_qwen3_tts.py, with Qwen3TTSDecoderLayer,
Qwen3TTSAttention and Qwen3TTSRotaryEmbedding: decoder.py and impl.common).

Step s of its generate embeds the previous code with `codec_embedding[s - 1]`, projects it with
`small_to_mtp_projection` (a Linear when the widths differ, Identity otherwise) and predicts with
`lm_head[s]`; the prefill (two positions) predicts codebook 1 with `lm_head[0]` on both positions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..common import generation
from ..common.config import Config
from ..common.layers import Embedding, Identity, Linear, RMSNorm
from ..common.nn import Module, tapped
from ..common.rope import RotaryEmbedding
from ..common.transformer import DecoderStack, cache_positions
from .decoder import Qwen3TTSDecoderLayer


@dataclass
class CodePredictorConfig(Config):
    """Qwen3TTSTalkerCodePredictorConfig (qwen_tts/core/models/configuration_qwen3_tts.py), the fields used."""

    vocab_size: int = 2048  # codes per codebook
    hidden_size: int = 1024  # C, the predictor's width (the talker's may differ: small_to_mtp_projection)
    intermediate_size: int = 3072  # the MLP's inner width
    num_hidden_layers: int = 5
    num_attention_heads: int = 16  # H
    num_key_value_heads: int | None = 8  # H_kv (None: as many as query heads)
    head_dim: int = 128  # D
    hidden_act: str = "silu"
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000
    rope_scaling: dict | None = None  # only the default RoPE type is implemented
    attention_bias: bool = False
    use_sliding_window: bool = False  # not implemented
    layer_types: list[str] | None = None  # every layer "full_attention" (sliding windows are not implemented)
    num_code_groups: int = 32  # G codebooks per frame: the predictor fills codebooks 1..G-1

    def __post_init__(self) -> None:
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.use_sliding_window or any(t != "full_attention" for t in (self.layer_types or [])):
            raise NotImplementedError("sliding-window attention in the code predictor is not implemented")
        if self.rope_scaling is not None and self.rope_scaling.get("rope_type", "default") != "default":
            raise NotImplementedError("only the default RoPE type is implemented")


class CodePredictorModel(DecoderStack):
    """Qwen3TTSTalkerCodePredictorModel (`talker.code_predictor.model`): the decoder stack with 1-D RoPE over
    (B, T, C) embeddings, and the embedding tables of codebooks 1..G-1 (in the talker's width)."""

    def __init__(self, config: CodePredictorConfig, embedding_dim: int) -> None:
        self.config = config
        self.layers = [Qwen3TTSDecoderLayer(config, i) for i in range(config.num_hidden_layers)]
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
        use_cache = True if use_cache is None else use_cache
        past_key_values, cache_position = cache_positions(past_key_values, inputs_embeds.shape[1], use_cache,
                                                          cache_position)  # fmt: skip
        if position_ids is None:
            position_ids = np.asarray(cache_position)[None]  # (1, T)
        return self.decode(inputs_embeds, attention_mask, position_ids, past_key_values, cache_position, use_cache,
                           bool(output_attentions), output_hidden_states)  # fmt: skip


class CodePredictorForConditionalGeneration(Module):
    """Qwen3TTSTalkerCodePredictorModelForConditionalGeneration (`talker.code_predictor`): one lm_head per
    codebook 1..G-1. Shapes: B batch, T rows, C the predictor's width, C_talker the talker's."""

    def __init__(self, config: CodePredictorConfig, talker_config: Any) -> None:
        self.config = config
        self.model = CodePredictorModel(config, talker_config.hidden_size)
        self.lm_head = [
            Linear(config.hidden_size, config.vocab_size, bias=False) for _ in range(config.num_code_groups - 1)
        ]
        if config.hidden_size != talker_config.hidden_size:
            self.small_to_mtp_projection: Module = Linear(talker_config.hidden_size, config.hidden_size, bias=True)
        else:
            self.small_to_mtp_projection = Identity()
        # transformers builds a LogitsProcessorList per generate call; here a module at the path the recorder
        # gives the official one (conformance sampling.py), so each step's processed scores are checked
        self.logits_processor = generation.LogitsProcessor()

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
        else:  # the previous code (B, 1), embedded by its own codebook's table: (B, 1, C_talker)
            inputs_embeds = self.model.get_input_embeddings()[generation_steps - 1](input_ids)
        inputs_embeds = self.small_to_mtp_projection(inputs_embeds)  # (B, T, C)
        outputs = self.model(input_ids=None, attention_mask=attention_mask, position_ids=position_ids,
                             past_key_values=past_key_values, inputs_embeds=inputs_embeds, use_cache=use_cache,
                             output_attentions=output_attentions, output_hidden_states=output_hidden_states,
                             cache_position=cache_position, **kwargs)  # fmt: skip
        logits = self.lm_head[generation_steps](outputs["last_hidden_state"])  # (B, T, vocab)
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
        """HF generate over the remaining codebooks (impl.common.generation); no EOS, no repetition penalty."""
        return generation.generate(self, num_layers=self.config.num_hidden_layers, **kwargs)
