"""The talker: text embedding + projection, the decoder stack with interleaved multimodal RoPE, the codec
head, and one generation step that runs the code predictor (official: Qwen3TTSTalker* classes in
qwen_tts/core/models/modeling_qwen3_tts.py).

Positions come from the attention mask (`get_rope_index`: cumsum - 1, in float32 as the official computes
them), and during generation from `cache_position + rope_deltas` with `rope_deltas` kept on the module
from the prefill, exactly like the official. All three MRoPE rows are equal for text, which makes the
interleaved multimodal RoPE equal to plain 1-D RoPE; we still pick each frequency from its row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..common import generation
from ..common.config import Config
from ..common.layers import Embedding, Linear, RMSNorm, activation
from ..common.nn import Module, tapped
from ..common.rope import RotaryEmbedding
from ..common.transformer import DecoderStack, cache_positions
from .code_predictor import CodePredictorConfig, CodePredictorForConditionalGeneration
from .decoder import Qwen3TTSDecoderLayer


@dataclass
class TalkerConfig(Config):
    """Qwen3TTSTalkerConfig (qwen_tts/core/models/configuration_qwen3_tts.py), the fields used."""

    vocab_size: int = 3072  # codec ids: codebook-0 codes, then the control ids below and the speaker ids
    hidden_size: int = 1024  # C
    intermediate_size: int = 2048  # the MLP's inner width
    num_hidden_layers: int = 20
    num_attention_heads: int = 16  # H
    num_key_value_heads: int = 2  # H_kv
    head_dim: int | None = None  # D (None: hidden_size / num_attention_heads)
    hidden_act: str = "silu"
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000
    rope_scaling: dict | None = None  # needs "mrope_section" (frequencies per position row) and "interleaved"
    attention_bias: bool = False
    use_sliding_window: bool = False  # not implemented
    num_code_groups: int = 32  # G codebooks per frame
    text_hidden_size: int = 2048  # width of the text embedding, projected to C by text_projection
    text_vocab_size: int = 151936  # the Qwen text vocabulary (no official default: config.json gives it)
    codec_eos_token_id: int = 4198  # codebook-0 id that ends a generation
    codec_think_id: int = 4202  # prompt tags: think (a language is given) or nothink (auto) ...
    codec_nothink_id: int = 4203
    codec_think_bos_id: int = 4204  # ... between think_bos and think_eos
    codec_think_eos_id: int = 4205
    codec_pad_id: int = 4196  # codec side of rows that carry text only
    codec_bos_id: int = 4197  # codec side of the row that starts generation
    spk_id: dict = field(default_factory=dict)  # speaker name -> its codec id (CustomVoice)
    spk_is_dialect: dict = field(default_factory=dict)  # speaker name -> dialect language, or false
    codec_language_id: dict = field(default_factory=dict)  # language name -> its codec id
    code_predictor_config: Any = None  # dict from config.json, CodePredictorConfig after __post_init__

    def __post_init__(self) -> None:
        if not isinstance(self.code_predictor_config, CodePredictorConfig):
            self.code_predictor_config = CodePredictorConfig.from_dict(self.code_predictor_config or {})
        if self.head_dim is None:
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.use_sliding_window:
            raise NotImplementedError("sliding-window attention in the talker is not implemented")
        if self.rope_scaling is None or "mrope_section" not in self.rope_scaling:
            raise NotImplementedError("the talker needs rope_scaling with an mrope_section")
        if self.rope_scaling.get("rope_type", self.rope_scaling.get("type", "default")) != "default":
            raise NotImplementedError("only the default RoPE type is implemented")


class TalkerResizeMLP(Module):
    """Qwen3TTSTalkerResizeMLP (`talker.text_projection`): (B, T, text width) -> fc2(act(fc1(x))) -> (B, T, C)."""

    def __init__(self, input_size: int, intermediate_size: int, output_size: int, act: str, bias: bool = False) -> None:
        self.linear_fc1 = Linear(input_size, intermediate_size, bias=bias)
        self.linear_fc2 = Linear(intermediate_size, output_size, bias=bias)
        self.act_fn = activation(act)

    def forward(self, hidden_state: np.ndarray, **kwargs: Any) -> np.ndarray:
        return self.linear_fc2(self.act_fn(self.linear_fc1(hidden_state)))


class TalkerModel(DecoderStack):
    """Qwen3TTSTalkerModel (`talker.model`): the decoder stack over (B, T, C) prompt/step embeddings with
    multimodal RoPE, and the codec and text embedding tables (embedding is done by the callers)."""

    def __init__(self, config: TalkerConfig) -> None:
        self.config = config
        self.layers = [Qwen3TTSDecoderLayer(config, i) for i in range(config.num_hidden_layers)]
        self.norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = RotaryEmbedding(config.head_dim, config.rope_theta)
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
        batch, length = inputs_embeds.shape[:2]
        past_key_values, cache_position = cache_positions(past_key_values, length, use_cache, cache_position)
        # three rows of positions (temporal, height, width; equal for text), (3, B, T); a fourth row in front, if
        # given, is the text positions the layers receive
        if position_ids is None:
            position_ids = np.broadcast_to(np.asarray(cache_position)[None, None], (3, batch, length))  # (3, B, T)
        elif np.ndim(position_ids) == 2:
            position_ids = np.broadcast_to(np.asarray(position_ids)[None], (3, *np.shape(position_ids)))  # (3, B, T)
        if np.ndim(position_ids) == 3 and np.shape(position_ids)[0] == 4:
            text_position_ids, position_ids = position_ids[0], position_ids[1:]
        else:
            text_position_ids = position_ids[0]  # (B, T)
        return self.decode(inputs_embeds, attention_mask, position_ids, past_key_values, cache_position, use_cache,
                           output_attentions, output_hidden_states, layer_position_ids=text_position_ids)  # fmt: skip


class TalkerForConditionalGeneration(Module):
    """Qwen3TTSTalkerForConditionalGeneration (`talker`): the decoder over one row per prompt token or frame,
    the codec head predicting codebook 0, and per frame the code predictor filling codebooks 1..G-1.
    Shapes: B batch, T rows, C width, G codebooks."""

    def __init__(self, config: TalkerConfig) -> None:
        self.config = config
        self.model = TalkerModel(config)
        self.text_projection = TalkerResizeMLP(config.text_hidden_size, config.text_hidden_size, config.hidden_size,
                                               config.hidden_act, bias=True)  # fmt: skip
        self.codec_head = Linear(config.hidden_size, config.vocab_size, bias=False)
        self.code_predictor = CodePredictorForConditionalGeneration(config.code_predictor_config, config)
        self.rope_deltas: np.ndarray | None = None
        # transformers builds a LogitsProcessorList per generate call; here a module at the path the recorder
        # gives the official one (conformance sampling.py), so each step's processed scores are checked
        self.logits_processor = generation.LogitsProcessor()

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
        if inputs_embeds is not None and inputs_embeds.shape[1] > 1:  # prefill: the prompt rows (B, T, C)
            generation_step = -1
            codec_ids = None
        else:  # one frame: the code predictor fills codebooks 1.. from [past hidden, embedding(code 0)]
            last_id_hidden = self.get_input_embeddings()(input_ids)  # code 0 (B, 1) -> (B, 1, C)
            predictor_kwargs: dict[str, Any] = {}
            if subtalker_dosample:
                predictor_kwargs["generator"] = generator
            predictor_result = self.code_predictor.generate(
                inputs_embeds=np.concatenate([past_hidden, last_id_hidden], axis=1),
                max_new_tokens=self.config.num_code_groups - 1, do_sample=subtalker_dosample, top_p=subtalker_top_p,
                top_k=subtalker_top_k, temperature=subtalker_temperature, output_hidden_states=True,
                return_dict_in_generate=True, **predictor_kwargs,
            )  # fmt: skip
            sequences = predictor_result["sequences"]  # codes 1..G-1 (B, G - 1)
            codec_ids = np.concatenate([input_ids, sequences], axis=-1)  # the frame (B, G)
            embeddings = self.code_predictor.get_input_embeddings()
            codec_hiddens = np.concatenate(
                [last_id_hidden] + [embeddings[i](sequences[..., i : i + 1]) for i in range(self.config.num_code_groups - 1)],
                axis=1,
            )  # (B, G, C)  # fmt: skip
            # next input: sum of all codebook embeddings + the next trailing text embedding (or tts_pad)
            inputs_embeds = codec_hiddens.sum(axis=1, keepdims=True)  # (B, 1, C)
            if generation_step < trailing_text_hidden.shape[1]:
                inputs_embeds = inputs_embeds + trailing_text_hidden[:, generation_step][:, None]  # (B, 1, C)
            else:
                inputs_embeds = inputs_embeds + tts_pad_embed
        if attention_mask is not None:
            attention_mask = np.asarray(attention_mask)
            prefill = cache_position is None or int(np.asarray(cache_position)[0]) == 0
            if prefill or self.rope_deltas is None:
                delta0 = (1 - attention_mask).sum(axis=-1)[:, None]  # padding per row (B, 1)
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
                delta = (np.asarray(cache_position)[0] + self.rope_deltas).astype(np.float32)  # (B, 1)
                position_ids = (np.arange(length, dtype=np.float32)[None] + delta).astype(np.float32)  # (B, T)
                position_ids = np.broadcast_to(position_ids[None], (3, batch, length))  # (3, B, T)
        outputs = self.model(input_ids=None, attention_mask=attention_mask, position_ids=position_ids,
                             past_key_values=past_key_values, inputs_embeds=inputs_embeds, use_cache=use_cache,
                             output_attentions=output_attentions, output_hidden_states=output_hidden_states,
                             cache_position=cache_position)  # fmt: skip
        hidden_states = outputs["last_hidden_state"]  # (B, T, C)
        logits = self.codec_head(hidden_states)  # (B, T, vocab)
        out: dict[str, Any] = {"logits": logits}
        if outputs.get("past_key_values") is not None:
            out["past_key_values"] = outputs["past_key_values"]
        out["hidden_states"] = (outputs.get("hidden_states"), codec_ids)
        if outputs.get("attentions") is not None:
            out["attentions"] = outputs["attentions"]
        out["past_hidden"] = hidden_states[:, -1:, :]  # (B, 1, C): the code predictor's first row next step
        out["generation_step"] = generation_step + 1
        if trailing_text_hidden is not None:
            out["trailing_text_hidden"] = trailing_text_hidden
        if tts_pad_embed is not None:
            out["tts_pad_embed"] = tts_pad_embed
        return out

    def get_rope_index(self, attention_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positions cumsum(mask) - 1 (1 at padding) in float32, the same for all three rows (3, B, T), and
        the deltas max(position) + 1 - number of real tokens (B, 1)."""
        attention_mask = np.asarray(attention_mask)  # (B, T)
        position_ids = np.cumsum(attention_mask.astype(np.float32), axis=-1) - np.float32(1)
        position_ids = np.where(attention_mask == 0, np.float32(1), position_ids).astype(np.float32)
        position_ids = np.broadcast_to(position_ids[None], (3, *attention_mask.shape))  # (3, B, T)
        max_position_ids = position_ids.max(axis=0).max(axis=-1, keepdims=True)  # (B, 1)
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
        """HF generate on the talker (impl.common.generation); the cache gets one layer per decoder layer."""
        return generation.generate(self, num_layers=self.config.num_hidden_layers, **kwargs)
