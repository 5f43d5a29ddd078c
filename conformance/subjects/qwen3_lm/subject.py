"""The Qwen3 causal LM (transformers' Qwen3ForCausalLM, the architecture the Qwen3-TTS talker extends and most LLM
ports target) as a subject, built on the torch-model kit (conformance/subjects/torch_model.py) like a user's own.

Importing this module needs numpy and h5py only: recording, the official candidate and the impl import torch,
transformers or impl/ when they are used.

* Official code: transformers (its version is what the goldens record as the official version); the model loads
  through `Qwen3ForCausalLM.from_pretrained(..., attn_implementation="eager")`.
* Tokens: `generate` returns the sequences (batch, prompt + new tokens), recorded as `:generate#0/outputs/0`; axes
  (sequence, position), positions counted from the start of the (left-padded) prompt, generation from the prompt's
  width on. Forward call k of the root (`(root)#k`, k = 0 the prefill) chose the token at position width + k of
  every sequence with its last-position logits, which `lm_head#k` computed: `(root)#k` replayed in isolation is
  teacher forcing of the whole model on the golden KV cache.
* No signals: the report has no audio panel for it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ...errors import UsageError
from ...store.reader import Case
from .. import LogitsCall, OfficialPackage, TokenLayout
from ..torch_model import TorchSubject

NAME = "qwen3_lm"
TITLE = "Qwen3 causal LM"
OFFICIAL = OfficialPackage(distribution="transformers", version="4.57.3", import_name="transformers")
SEQUENCES = (":generate", 0, "outputs/0")
AXES = ("sequence", "position")
ROOT = "(root)"


class Qwen3LMSubject(TorchSubject):
    name = NAME
    title = TITLE
    official = OFFICIAL
    token_logits = ("lm_head",)
    seed = 20260301
    sizes = ("tiny",)  # a published checkpoint records with --checkpoint
    methods = (("", "generate", False),)  # its outputs are argmax decisions: recorded, not re-run by the oracle

    def cases(self) -> Sequence[Any]:
        from .cases import CASES

        return CASES

    # -- the official model ------------------------------------------------------------------------------------
    def load(self, folder: Path, dtype: str) -> Any:
        import torch
        import transformers

        torch_dtype = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16}[dtype]
        model = transformers.Qwen3ForCausalLM.from_pretrained(folder, dtype=torch_dtype, attn_implementation="eager")
        return model.eval()

    def build_checkpoint(self, folder: Path, *, seed: int, size: str) -> None:
        from .checkpoints import build_checkpoint

        build_checkpoint(folder, seed=seed, size=size)

    def precision(self, dtype: str) -> contextlib.AbstractContextManager[Any]:
        if dtype != "float64":
            return contextlib.nullcontext()
        from .precision import clean_precision

        return clean_precision()

    def to_torch(self, value: Any, name: str, dtype: Any) -> Any:
        if name == "past_key_values" and isinstance(value, dict) and "layers" in value:
            return _dynamic_cache(value, dtype)
        return super().to_torch(value, name, dtype)

    def libraries(self) -> dict[str, str]:
        import transformers

        return {"transformers": transformers.__version__}

    # -- candidates ----------------------------------------------------------------------------------------------
    def candidate(self, spec: str, *, checkpoint: Path | None = None) -> Any:
        if spec == "impl" or spec.startswith("impl:"):
            dtype = spec.partition(":")[2] or None
            if dtype not in (None, "float32", "float64"):
                raise UsageError(f"impl dtype must be float32 or float64, not {dtype!r}")
            from .impl_binding import ImplCandidate

            return ImplCandidate(dtype, checkpoint)
        if spec.startswith("official"):
            import importlib.util

            if importlib.util.find_spec("torch") is None:  # the checking side itself never imports torch
                raise UsageError("the official candidate needs torch and transformers (pip install "
                                 "'conformance[record]')")  # fmt: skip
            return super().candidate(spec, checkpoint=checkpoint)
        raise UsageError(f"unknown candidate {spec!r} (impl[:float32|float64], official[:...], dump:PATH)")

    # -- tokens ----------------------------------------------------------------------------------------------
    def tokens(self, case: Case) -> TokenLayout | None:
        if not case.has_call(*SEQUENCES[:2]):
            return None
        return TokenLayout(SEQUENCES, AXES, step_axis=1, batch_axis=0, generated_from=_prompt_width(case))

    def logits_for(self, case: Case, index: tuple[int, ...]) -> LogitsCall | None:
        sequence, position = (int(i) for i in index)
        step = position - _prompt_width(case)
        return LogitsCall("lm_head", step, row=sequence) if step >= 0 and case.has_call("lm_head", step) else None

    def model_step(self, case: Case, key: str, call: int, role: str) -> tuple[int, ...] | None:
        if key != ROOT or role != "outputs/logits" or not case.has_call(*SEQUENCES[:2]):
            return None
        return 0, _prompt_width(case) + call


def _prompt_width(case: Case) -> int:
    """Where generation starts along the sequences: the (padded) prompt's width."""
    return int(case.input("input_ids").shape[-1])


def _dynamic_cache(value: dict[str, Any], dtype: Any) -> Any:
    """A recorded {"layers": [{"keys", "values"}]} as the DynamicCache the official model takes."""
    import numpy as np
    import torch
    from transformers.cache_utils import DynamicCache

    cache = DynamicCache()
    for index, layer in enumerate(value["layers"]):
        keys, values = layer.get("keys"), layer.get("values")
        if isinstance(keys, np.ndarray) and isinstance(values, np.ndarray):
            cache.update(torch.from_numpy(keys).to(dtype, copy=True), torch.from_numpy(values).to(dtype, copy=True),
                         index)  # fmt: skip
    return cache


SUBJECT = Qwen3LMSubject()
