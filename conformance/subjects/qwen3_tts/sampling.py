"""The processed next-token distribution of every generation step, as a module the recorder can hook.

transformers' `generate` (4.57.3, generation/utils.py `_sample`) turns each step's raw logits into the scores
it samples from (or takes the argmax of) with a `LogitsProcessorList` it builds per call in
`GenerationMixin._get_logits_processor` from the generation config: repetition penalty, min_new_tokens (the
end token at -inf while fewer tokens are new), suppressed tokens, then with sampling temperature, top-k and
top-p. The list is a plain object, invisible to module hooks, and the sampled token depends on torch's random
generator. `install(model)` makes it visible: the talker and the code predictor each get a `logits_processor`
submodule (`LogitsProcessing`), and their `_get_logits_processor` returns a callable that describes the list
transformers built (every processor's settings, read from the processor objects) and calls that submodule with
the step's `input_ids` (the history, which holds the sampled tokens), the raw scores and those settings. The
submodule rebuilds the same official processors from its keyword arguments and applies them, so a recorded call
is a pure function of its recorded inputs: a candidate replays it on the golden history (teacher forcing of the
sampled tokens), the -inf masks are judged exactly and the finite scores with the float tolerances.

A processor the description does not know (another generation config) raises instead of being dropped.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

# transformers' order in `_get_logits_processor` for the processors the Qwen3-TTS generate calls can build
ORDER = ("repetition_penalty", "min_length", "min_new_tokens", "suppress_tokens", "temperature", "top_k", "top_p")


def describe(processors: Any) -> dict[str, Any]:
    """The settings of a transformers `LogitsProcessorList`, as `LogitsProcessing.forward` keywords."""
    from transformers.generation import logits_process as lp

    settings: dict[str, Any] = {}
    seen: list[str] = []
    for processor in processors:
        if isinstance(processor, lp.RepetitionPenaltyLogitsProcessor):
            if processor.prompt_ignore_length:
                raise NotImplementedError("a repetition penalty with prompt_ignore_length is not described")
            seen.append("repetition_penalty")
            settings["repetition_penalty"] = float(processor.penalty)
        elif isinstance(processor, lp.MinLengthLogitsProcessor):
            seen.append("min_length")
            settings["min_length"] = int(processor.min_length)
            settings["eos_token_id"] = torch.as_tensor(processor.eos_token_id).reshape(-1).to(torch.int64).cpu()
        elif isinstance(processor, lp.MinNewTokensLengthLogitsProcessor):
            seen.append("min_new_tokens")
            settings["min_new_tokens"] = int(processor.min_new_tokens)
            settings["prompt_length"] = int(processor.prompt_length_to_skip)
            settings["eos_token_id"] = torch.as_tensor(processor.eos_token_id).reshape(-1).to(torch.int64).cpu()
        elif isinstance(processor, lp.SuppressTokensLogitsProcessor):
            seen.append("suppress_tokens")
            settings["suppress_tokens"] = processor.suppress_tokens.reshape(-1).to(torch.int64).cpu()
        elif isinstance(processor, lp.TemperatureLogitsWarper):
            seen.append("temperature")
            settings["temperature"] = float(processor.temperature)
        elif isinstance(processor, lp.TopKLogitsWarper):
            seen.append("top_k")
            settings["top_k"] = int(processor.top_k)  # already max(top_k, min_tokens_to_keep)
        elif isinstance(processor, lp.TopPLogitsWarper):
            seen.append("top_p")
            settings["top_p"] = float(processor.top_p)
            settings["min_tokens_to_keep"] = int(processor.min_tokens_to_keep)
        else:
            raise NotImplementedError(f"logits processor {type(processor).__name__} is not described for recording")
    if seen != sorted(seen, key=ORDER.index):
        raise NotImplementedError(f"logits processors in an unexpected order: {seen}")
    return settings


def _known(processor: Any) -> bool:
    """Whether `describe` knows this processor (one of transformers' classes the official generate builds)."""
    from transformers.generation import logits_process as lp

    return isinstance(processor, (lp.RepetitionPenaltyLogitsProcessor, lp.MinLengthLogitsProcessor,
                                  lp.MinNewTokensLengthLogitsProcessor, lp.SuppressTokensLogitsProcessor,
                                  lp.TemperatureLogitsWarper, lp.TopKLogitsWarper, lp.TopPLogitsWarper))  # fmt: skip


def build(settings: dict[str, Any], device: Any = None) -> Any:
    """The official processors (transformers' classes, transformers' order) these settings describe."""
    from transformers.generation import logits_process as lp

    keep = int(settings.get("min_tokens_to_keep") or 1)
    processors = lp.LogitsProcessorList()
    if settings.get("repetition_penalty") is not None:
        processors.append(lp.RepetitionPenaltyLogitsProcessor(penalty=settings["repetition_penalty"]))
    if settings.get("min_length") is not None:
        processors.append(
            lp.MinLengthLogitsProcessor(
                settings["min_length"],
                torch.as_tensor(settings["eos_token_id"]).to(torch.int64),
                device=device or "cpu",
            )
        )
    if settings.get("min_new_tokens") is not None:
        processors.append(lp.MinNewTokensLengthLogitsProcessor(
            prompt_length_to_skip=settings["prompt_length"], min_new_tokens=settings["min_new_tokens"],
            eos_token_id=torch.as_tensor(settings["eos_token_id"]).to(torch.int64), device=device or "cpu"))  # fmt: skip
    if settings.get("suppress_tokens") is not None:
        tokens = [int(t) for t in torch.as_tensor(settings["suppress_tokens"]).reshape(-1)]
        processors.append(lp.SuppressTokensLogitsProcessor(tokens, device=device or "cpu"))
    if settings.get("temperature") is not None:
        processors.append(lp.TemperatureLogitsWarper(settings["temperature"]))
    if settings.get("top_k") is not None:
        processors.append(lp.TopKLogitsWarper(top_k=settings["top_k"], min_tokens_to_keep=keep))
    if settings.get("top_p") is not None:
        processors.append(lp.TopPLogitsWarper(top_p=settings["top_p"], min_tokens_to_keep=keep))
    return processors


class LogitsProcessing(torch.nn.Module):
    """The logits processors of one generation step (transformers' `LogitsProcessorList.__call__`): raw scores
    (B, vocab) and the history `input_ids` (B, T) in, processed scores (B, vocab) out. Keywords name each
    processor's settings (absent processors: None)."""

    def forward(self, input_ids: torch.Tensor, scores: torch.Tensor, *, repetition_penalty: float | None = None,
                min_length: int | None = None, min_new_tokens: int | None = None, prompt_length: int | None = None,
                eos_token_id: torch.Tensor | None = None, suppress_tokens: torch.Tensor | None = None,
                temperature: float | None = None, top_k: int | None = None, top_p: float | None = None,
                min_tokens_to_keep: int | None = None) -> torch.Tensor:  # fmt: skip
        settings = {"repetition_penalty": repetition_penalty, "min_length": min_length, "min_new_tokens": min_new_tokens,
                    "prompt_length": prompt_length, "eos_token_id": eos_token_id, "suppress_tokens": suppress_tokens,
                    "temperature": temperature, "top_k": top_k, "top_p": top_p,
                    "min_tokens_to_keep": min_tokens_to_keep}  # fmt: skip
        return build(settings, scores.device)(input_ids, scores)


def _processing_getter(owner: Any, module: LogitsProcessing) -> Any:
    original = owner._get_logits_processor

    def get_logits_processor(*args: Any, **kwargs: Any) -> Any:
        processors = list(original(*args, **kwargs))
        # a caller's own processors (generate's `logits_processor=`, e.g. one forcing a candidate's tokens) come
        # last in a greedy run: they act on the processed scores, outside the recorded module
        described = 0
        while described < len(processors) and _known(processors[described]):
            described += 1
        settings, extra = describe(processors[:described]), processors[described:]
        if any(_known(p) for p in extra):
            describe(processors)  # raises: a caller's processor between transformers' own is not described

        def process(input_ids: torch.Tensor, scores: torch.Tensor, **_: Any) -> torch.Tensor:
            scores = module(input_ids, scores, **settings)
            for processor in extra:
                scores = processor(input_ids, scores)
            return scores

        return process

    return get_logits_processor


def install(model: Any) -> None:
    """Give the talker and the code predictor of an official Qwen3TTSForConditionalGeneration a hookable
    `logits_processor` submodule that computes every step's processed scores (idempotent)."""
    talker = getattr(model, "talker", None)
    if talker is None:
        return
    for owner in (talker, talker.code_predictor):
        if isinstance(getattr(owner, "logits_processor", None), LogitsProcessing):
            continue
        owner.logits_processor = LogitsProcessing()
        owner._get_logits_processor = _processing_getter(owner, owner.logits_processor)


@contextlib.contextmanager
def replay_multinomial(tokens: np.ndarray) -> Iterator[None]:
    """Within this block `torch.multinomial` (transformers' `_sample` draws each token with it) returns the next
    column of `tokens` (B, draws) instead of drawing: an isolated replay of a sampling call on the golden
    history. More draws than recorded raise."""
    original = torch.multinomial
    columns = iter(np.asarray(tokens, dtype=np.int64).T)

    def multinomial(probs: torch.Tensor, num_samples: int = 1, *args: Any, **kwargs: Any) -> torch.Tensor:
        column = next(columns, None)
        if column is None:
            raise IndexError("the replayed call draws more tokens than the golden recorded")
        return torch.from_numpy(column.copy()).to(probs.device).reshape(-1, 1).expand(-1, num_samples)

    torch.multinomial = multinomial  # type: ignore[assignment]
    try:
        yield
    finally:
        torch.multinomial = original  # type: ignore[assignment]
