"""Every setting a generation case's official run actually used, recorded into the case provenance (`settings`) and
exported with the case, so a port reproduces the case from the export alone instead of finding them by trial.

The official wrapper merges the caller's arguments with the checkpoint's generation_config.json and its own hard
defaults (`Qwen3TTSModel._merge_generate_kwargs`, `qwen_tts/inference/qwen3_tts_model.py` line 287), and
`Qwen3TTSForConditionalGeneration.generate` (`modeling_qwen3_tts.py` line 2022) adds settings no caller passes
(`min_new_tokens=2`, the codec EOS id, the 1023 suppressed control codes) before transformers' `generate` applies
them on the talker's own generation config; the code predictor runs transformers' `generate` once per frame with
the `subtalker_*` settings and `max_new_tokens = num_code_groups - 1` (line 1671). A greedy case therefore still
runs with `repetition_penalty=1.05` from generation_config.json. What is recorded, per level, is what each call
received, with the called function's own defaults filled in and, for transformers' `generate`, the effective
generation config (the model's, updated by the call's keyword arguments, as transformers does it) as its
differences from transformers' defaults:

    {"generate": {argument: value},                    # Qwen3TTSForConditionalGeneration.generate
     "talker.generate": {"generation_config": {...}, "model_kwargs": {...}},
     "talker.code_predictor.generate": {"generation_config": {...}, "model_kwargs": {...}, "calls": int},
     "frames": {"max_new_tokens": int, "generated": int, "convention": str}}

Tensors are described (`{"tensor": [shape], "dtype": str}`), not copied: they are the case's recorded inputs and
call arguments.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
from collections.abc import Iterator
from typing import Any

# transformers' generation settings a port must reproduce, recorded even where they hold transformers' defaults (a
# greedy run's do_sample=False, the code predictor's repetition_penalty of 1.0); every other field only when the
# effective config differs from transformers' defaults
CORE_FIELDS = ("do_sample", "num_beams", "max_new_tokens", "min_new_tokens", "temperature", "top_k", "top_p",
               "repetition_penalty", "eos_token_id", "pad_token_id", "suppress_tokens", "begin_suppress_tokens",
               "no_repeat_ngram_size", "bad_words_ids")  # fmt: skip
VOLATILE = ("transformers_version", "_from_model_config")
FRAMES_CONVENTION = (
    "max_new_tokens = N runs the talker N times and yields N - 1 frames unless EOS comes first: the code predictor "
    "completes frame f - 1 during talker step f, and the official generate keeps only completed frames "
    "(modeling_qwen3_tts.py line 2280)"
)


def describe(value: Any) -> Any:
    """A JSON-able account of an argument: scalars as they are, tensors by shape and dtype, containers walked."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    shape = getattr(value, "shape", None)
    if shape is not None and hasattr(value, "dtype"):
        if len(tuple(shape)) == 0 and hasattr(value, "item"):
            return value.item()
        return {"tensor": [int(d) for d in shape], "dtype": str(value.dtype).replace("torch.", "")}
    if isinstance(value, dict):
        return {str(k): describe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [describe(v) for v in value]
    return repr(value)


def _bound(function: Any, owner: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The call's arguments by name, with the function's own defaults applied (self left out)."""
    try:
        bound = inspect.signature(function).bind(owner, *args, **kwargs)
    except TypeError:
        return {k: describe(v) for k, v in kwargs.items()}
    bound.apply_defaults()
    out = {}
    for name, value in list(bound.arguments.items())[1:]:
        if inspect.signature(function).parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
            out.update({k: describe(v) for k, v in value.items()})
        else:
            out[name] = describe(value)
    return out


def _transformers_generate(model: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """What transformers' generate makes of a call: the model's generation config updated by the keyword arguments
    (`GenerationMixin._prepare_generation_config`), as its differences from the defaults, and the keyword
    arguments it hands on to the model's forward (the non-tensor ones; tensors are recorded calls)."""
    config = copy.deepcopy(model.generation_config)
    model_kwargs = config.update(**kwargs)
    effective = {name: getattr(config, name, None) for name in CORE_FIELDS}  # always, defaults included
    effective.update({k: v for k, v in config.to_diff_dict().items() if k not in VOLATILE})
    return {
        "generation_config": describe(dict(sorted(effective.items()))),
        "model_kwargs": {k: describe(v) for k, v in model_kwargs.items() if not hasattr(v, "shape")},
    }


class GenerationSpy:
    """Watches the official generate calls of one TTS model while a case runs (installed on the instances, above
    any recorder's wrappers) and turns what they received into the case's `settings`."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.top: dict[str, Any] | None = None
        self.talker: dict[str, Any] | None = None
        self.predictor: dict[str, Any] | None = None
        self.predictor_calls = 0
        self.frames: int | None = None

    def settings(self) -> dict[str, Any]:
        if self.top is None:
            return {}
        out: dict[str, Any] = {"generate": self.top}
        if self.talker is not None:
            out["talker.generate"] = self.talker
        if self.predictor is not None:
            out["talker.code_predictor.generate"] = {**self.predictor, "calls": self.predictor_calls}
        out["frames"] = {"max_new_tokens": self.top.get("max_new_tokens"), "generated": self.frames,
                         "convention": FRAMES_CONVENTION}  # fmt: skip
        return out

    def _on_top(self, args: tuple[Any, ...], kwargs: dict[str, Any], result: Any) -> None:
        self.top = _bound(type(self.model).generate, self.model, args, kwargs)
        with contextlib.suppress(Exception):
            self.frames = int(result[0][0].shape[0])

    def _on_talker(self, args: tuple[Any, ...], kwargs: dict[str, Any], result: Any) -> None:
        if self.talker is None:
            self.talker = _transformers_generate(self.model.talker, kwargs)

    def _on_predictor(self, args: tuple[Any, ...], kwargs: dict[str, Any], result: Any) -> None:
        self.predictor_calls += 1
        if self.predictor is None:
            self.predictor = _transformers_generate(self.model.talker.code_predictor, kwargs)


@contextlib.contextmanager
def _spy(owner: Any, method: str, on_call: Any) -> Iterator[None]:
    had_instance_attr = method in vars(owner)
    inner = getattr(owner, method)

    def spied(*args: Any, **kwargs: Any) -> Any:
        result = inner(*args, **kwargs)
        on_call(args, kwargs, result)
        return result

    setattr(owner, method, spied)
    try:
        yield
    finally:
        if had_instance_attr:
            setattr(owner, method, inner)
        else:
            delattr(owner, method)


@contextlib.contextmanager
def watch(model: Any) -> Iterator[GenerationSpy]:
    """Spy on `model.generate`, its talker's and its code predictor's while the block runs."""
    spy = GenerationSpy(model)
    talker = getattr(model, "talker", None)
    predictor = getattr(talker, "code_predictor", None)
    with contextlib.ExitStack() as stack:
        stack.enter_context(_spy(model, "generate", spy._on_top))
        if talker is not None:
            stack.enter_context(_spy(talker, "generate", spy._on_talker))
        if predictor is not None:
            stack.enter_context(_spy(predictor, "generate", spy._on_predictor))
        yield spy
