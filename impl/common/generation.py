"""transformers' `GenerationMixin.generate` (decoder-only, greedy or sampling), in NumPy.

A causal LM is driven from prompt ids; the Qwen3-TTS talker and code predictor from `inputs_embeds` (no
prompt ids), with model-specific kwargs carried from one step to the next by each model's
`update_model_kwargs_for_generation` (`_update_model_kwargs_for_generation` officially). What is
mirrored (transformers 4.57.3, generation/utils.py `_sample`, logits_process.py):

- `input_ids` starts as the prompt ids, or empty (batch, 0) from embeddings: `sequences` hold the prompt
  and the generated tokens; the repetition penalty sees all of them, min_new_tokens only the new ones;
- step inputs: the first forward gets the prompt (ids, or `inputs_embeds` with `input_ids=None`), later
  ones the last token;
  `position_ids` = cumsum(attention_mask) - 1 (1 at padding), cut to the step's length; `cache_position`
  arange(prompt) then one position per step; the attention mask grows by a column of ones per step;
- next-token logits are cast to float32 before the processors and the argmax (utils.py, `_sample`:
  `outputs.logits[:, -1, :].to(copy=True, dtype=torch.float32)`), in float64 mode too;
- processors in transformers' order: repetition penalty, min_new_tokens (EOS to -inf while fewer tokens
  than asked were generated), suppress tokens; with sampling then temperature, top-k, top-p;
- stopping at max_new_tokens or when every row has produced EOS; rows that finished are padded with the
  pad token, which is the EOS token when none is configured.

Sampling draws from an explicit seeded `numpy.random.Generator` (it cannot match torch's RNG; teacher
forcing checks what sampling would do).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .attention import new_cache
from .functional import softmax
from .nn import Module

# -- logits processors (each returns new scores, float32) --------------------------------------------------------


def apply_repetition_penalty(input_ids: np.ndarray, scores: np.ndarray, penalty: float) -> np.ndarray:
    """RepetitionPenaltyLogitsProcessor: for tokens already generated, s * p if s < 0 else s / p."""
    if input_ids.shape[1] == 0:
        return scores
    rows = np.arange(scores.shape[0])[:, None]
    score = scores[rows, input_ids]
    penalty32 = np.asarray(penalty, dtype=scores.dtype)
    score = np.where(score < 0, score * penalty32, score / penalty32)
    out = scores.copy()
    out[rows, input_ids] = score
    return out


def apply_min_length(input_ids: np.ndarray, scores: np.ndarray, minimum: int, eos_token_ids: list[int]) -> np.ndarray:
    """MinLengthLogitsProcessor: EOS impossible while the sequence is shorter than `minimum`."""
    if input_ids.shape[-1] >= minimum:
        return scores
    out = scores.copy()
    out[:, eos_token_ids] = -np.inf
    return out


def apply_min_new_tokens(input_ids: np.ndarray, scores: np.ndarray, prompt_length: int, minimum: int,
                   eos_token_ids: list[int]) -> np.ndarray:  # fmt: skip
    """MinNewTokensLengthLogitsProcessor: EOS impossible while fewer than `minimum` tokens are new."""
    if input_ids.shape[-1] - prompt_length >= minimum:
        return scores
    out = scores.copy()
    out[:, eos_token_ids] = -np.inf
    return out


def apply_suppress_tokens(scores: np.ndarray, tokens: list[int]) -> np.ndarray:
    """SuppressTokensLogitsProcessor: these tokens get -inf."""
    out = scores.copy()
    out[:, np.asarray(tokens, dtype=np.int64)] = -np.inf
    return out


def apply_temperature(scores: np.ndarray, temperature: float) -> np.ndarray:
    return scores / np.asarray(temperature, dtype=scores.dtype)


def apply_top_k(scores: np.ndarray, top_k: int, min_tokens_to_keep: int = 1) -> np.ndarray:
    """TopKLogitsWarper: keep the k best scores (ties with the k-th included)."""
    k = min(max(top_k, min_tokens_to_keep), scores.shape[-1])
    kth = -np.sort(-scores, axis=-1)[:, k - 1 : k]
    return np.where(scores < kth, -np.inf, scores).astype(scores.dtype)


def apply_top_p(scores: np.ndarray, top_p: float, min_tokens_to_keep: int = 1) -> np.ndarray:
    """TopPLogitsWarper: drop the least likely tokens whose cumulative probability is <= 1 - top_p."""
    order = np.argsort(scores, axis=-1, kind="stable")  # ascending
    sorted_scores = np.take_along_axis(scores, order, axis=-1)
    cumulative = np.cumsum(softmax(sorted_scores, axis=-1), axis=-1)
    remove_sorted = cumulative <= (1 - top_p)
    remove_sorted[:, -min_tokens_to_keep:] = False
    remove = np.zeros_like(remove_sorted)
    np.put_along_axis(remove, order, remove_sorted, axis=-1)
    return np.where(remove, -np.inf, scores).astype(scores.dtype)


def processor_settings(*, prompt_ids: int, min_new_tokens: int | None, eos: list[int], do_sample: bool,
                       temperature: float | None, top_k: int | None, top_p: float | None,
                       repetition_penalty: float | None, suppress_tokens: list[int] | None) -> dict[str, Any]:  # fmt: skip
    """The processors transformers' `_get_logits_processor` builds for these settings, as `LogitsProcessor`
    keywords (absent ones left out). `min_new_tokens` also sets min_length = min_new_tokens + prompt ids
    (`_prepare_generated_length`), so EOS is masked by two processors."""
    settings: dict[str, Any] = {}
    if repetition_penalty is not None and repetition_penalty != 1.0:
        settings["repetition_penalty"] = repetition_penalty
    if min_new_tokens and eos:
        settings["min_length"] = min_new_tokens + prompt_ids
        settings["min_new_tokens"], settings["prompt_length"] = min_new_tokens, prompt_ids
        settings["eos_token_id"] = np.asarray(eos, dtype=np.int64)
    if suppress_tokens is not None:
        settings["suppress_tokens"] = np.asarray(suppress_tokens, dtype=np.int64)
    if do_sample:
        if temperature is not None and temperature != 1.0:
            settings["temperature"] = temperature
        if top_k is not None and top_k != 0:
            settings["top_k"] = top_k
        if top_p is not None and top_p < 1.0:
            settings["top_p"], settings["min_tokens_to_keep"] = top_p, 1
    return settings


class LogitsProcessor(Module):
    """transformers' `LogitsProcessorList` of one generate call (`<model>.logits_processor`): the history
    `input_ids` (B, T) and raw next-token scores (B, vocab) in, the scores sampled from (or argmaxed) out. Each
    keyword configures one processor (None: absent), applied in transformers' order."""

    def forward(self, input_ids: np.ndarray, scores: np.ndarray, *, repetition_penalty: float | None = None,
                min_length: int | None = None, min_new_tokens: int | None = None, prompt_length: int | None = None,
                eos_token_id: Any = None, suppress_tokens: Any = None, temperature: float | None = None,
                top_k: int | None = None, top_p: float | None = None,
                min_tokens_to_keep: int | None = None) -> np.ndarray:  # fmt: skip
        input_ids = np.asarray(input_ids, dtype=np.int64)
        eos = [int(t) for t in np.asarray(eos_token_id).reshape(-1)] if eos_token_id is not None else []
        if repetition_penalty is not None:
            scores = apply_repetition_penalty(input_ids, scores, repetition_penalty)
        if min_length is not None:
            scores = apply_min_length(input_ids, scores, int(min_length), eos)
        if min_new_tokens is not None:
            scores = apply_min_new_tokens(input_ids, scores, int(prompt_length or 0), int(min_new_tokens), eos)
        if suppress_tokens is not None:
            scores = apply_suppress_tokens(scores, [int(t) for t in np.asarray(suppress_tokens).reshape(-1)])
        if temperature is not None:
            scores = apply_temperature(scores, temperature)
        if top_k is not None:
            scores = apply_top_k(scores, int(top_k))
        if top_p is not None:
            scores = apply_top_p(scores, top_p, int(min_tokens_to_keep or 1))
        return scores


class ReplayTokens:
    """Teacher forcing of sampling: hands out recorded tokens (B, steps) one step at a time instead of drawing
    them, so a sampled golden generation is re-run on its own history (`generate(generator=...)`)."""

    def __init__(self, tokens: np.ndarray) -> None:
        self.tokens = np.asarray(tokens, dtype=np.int64)  # (B, steps)
        self.step = 0

    def next(self, scores: np.ndarray) -> np.ndarray:
        if self.step >= self.tokens.shape[1]:
            raise IndexError("the replayed generation asks for more tokens than were recorded")
        token = self.tokens[:, self.step]
        self.step += 1
        return token


def sample(scores: np.ndarray, generator: np.random.Generator | ReplayTokens) -> np.ndarray:
    """multinomial(softmax(scores)) by inverse CDF on one uniform draw per row (or the next replayed token)."""
    if isinstance(generator, ReplayTokens):
        return generator.next(scores)
    probs = softmax(scores.astype(np.float64), axis=-1)
    cdf = np.cumsum(probs, axis=-1)
    draws = generator.random(scores.shape[0]) * cdf[:, -1]
    picks = np.array([np.searchsorted(cdf[b], draws[b], side="right") for b in range(scores.shape[0])])
    return np.minimum(picks, scores.shape[-1] - 1).astype(np.int64)


# -- the loop -------------------------------------------------------------------------------------------------------


def generate(
    model: Any,
    *,
    input_ids: np.ndarray | None = None,
    inputs_embeds: np.ndarray | None = None,
    attention_mask: np.ndarray | None = None,
    max_new_tokens: int = 20,
    min_new_tokens: int | None = None,
    do_sample: bool = False,
    temperature: float | None = 1.0,
    top_k: int | None = 50,
    top_p: float | None = 1.0,
    eos_token_id: int | list[int] | None = None,
    pad_token_id: int | None = None,
    repetition_penalty: float | None = 1.0,
    suppress_tokens: list[int] | None = None,
    output_hidden_states: bool | None = None,
    return_dict_in_generate: bool = False,
    generator: np.random.Generator | ReplayTokens | None = None,
    num_layers: int = 0,
    **model_kwargs: Any,
) -> Any:
    """HF `generate` from prompt ids (B, T) or `inputs_embeds` (B, T, C) for a model whose forward follows
    the HF causal-LM signature and which has `update_model_kwargs_for_generation`. Returns {"sequences",
    "hidden_states", "past_key_values"} (GenerateDecoderOnlyOutput's non-None fields) when
    `return_dict_in_generate`, else the sequences (B, prompt ids + new tokens)."""
    if do_sample and generator is None:
        raise ValueError("sampling needs an explicit numpy Generator (generator=np.random.default_rng(seed))")
    prompt = inputs_embeds if inputs_embeds is not None else input_ids
    batch, prompt_len = prompt.shape[:2]
    eos = [] if eos_token_id is None else ([eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id))
    pad_token_id = eos[0] if pad_token_id is None and eos else pad_token_id  # transformers: the first EOS by default
    from_embeddings = inputs_embeds is not None
    input_ids = np.zeros((batch, 0), dtype=np.int64) if from_embeddings else np.asarray(input_ids, dtype=np.int64)
    prompt_ids = input_ids.shape[1]  # what min_new_tokens and max_new_tokens do not count
    if attention_mask is None:
        attention_mask = np.ones((batch, prompt_len), dtype=np.int64)
    cache = new_cache(num_layers)
    cache_position = np.arange(prompt_len, dtype=np.int64)
    extra = dict(model_kwargs)
    if output_hidden_states is not None:
        extra["output_hidden_states"] = output_hidden_states
    extra["use_cache"] = True
    if generator is not None:
        extra["generator"] = generator
    settings = processor_settings(prompt_ids=prompt_ids, min_new_tokens=min_new_tokens, eos=eos, do_sample=do_sample,
                                  temperature=temperature, top_k=top_k, top_p=top_p,
                                  repetition_penalty=repetition_penalty, suppress_tokens=suppress_tokens)  # fmt: skip
    # a model with a `logits_processor` module reports each step's processed scores; otherwise they are computed
    # untapped (a module of no official path would be reported as the root)
    processor = getattr(model, "logits_processor", None) or LogitsProcessor().forward
    hidden_states: list[Any] = []
    unfinished = np.ones(batch, dtype=bool)
    first = True
    while True:
        step_len = prompt_len if first else 1
        position_ids = np.cumsum(attention_mask, axis=-1) - 1
        position_ids = np.where(attention_mask == 0, 1, position_ids)[:, -step_len:].astype(np.int64)
        inputs: dict[str, Any] = {"cache_position": cache_position, "past_key_values": cache}
        if first and from_embeddings:
            inputs["input_ids"], inputs["inputs_embeds"] = None, inputs_embeds
        elif first:
            inputs["input_ids"], inputs["inputs_embeds"] = input_ids, None
        else:
            inputs["input_ids"], inputs["inputs_embeds"] = input_ids[:, -1:].copy(), None
        inputs["position_ids"] = position_ids
        inputs["attention_mask"] = attention_mask
        inputs.update(extra)
        outputs = model(**inputs, return_dict=True)
        first = False
        # _update_model_kwargs_for_generation
        cache = outputs["past_key_values"]
        attention_mask = np.concatenate([attention_mask, np.ones((batch, 1), dtype=attention_mask.dtype)], axis=-1)
        cache_position = cache_position[-1:] + 1
        extra = model.update_model_kwargs_for_generation(outputs, extra)
        if output_hidden_states:
            hidden_states.append(outputs["hidden_states"])

        scores = outputs["logits"][:, -1, :].astype(np.float32)  # HF casts next-token logits to float32
        scores = processor(input_ids, scores, **settings)
        next_tokens = sample(scores, generator) if do_sample else np.argmax(scores, axis=-1).astype(np.int64)
        if eos:
            next_tokens = np.where(unfinished, next_tokens, pad_token_id)
        input_ids = np.concatenate([input_ids, next_tokens[:, None]], axis=-1)
        if input_ids.shape[-1] - prompt_ids >= max_new_tokens:
            unfinished[:] = False
        if eos:
            unfinished &= ~np.isin(input_ids[:, -1], eos)
        if not unfinished.any():
            break
    if not return_dict_in_generate:
        return input_ids
    out: dict[str, Any] = {"sequences": input_ids}
    if output_hidden_states:
        out["hidden_states"] = tuple(hidden_states)
    out["past_key_values"] = cache
    return out
