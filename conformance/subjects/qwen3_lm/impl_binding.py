"""The NumPy implementation (impl/qwen3_lm) as a check candidate. No torch here.

Its components live at the official module paths (`model.layers.1.self_attn.q_norm`, `lm_head`, the root `(root)`
and its `:generate`), so a golden call is replayed by looking the module up and calling it with the recorded
args and kwargs (KV caches arrive as the recorded {"layers": [{"keys", "values"}]}, which the impl's attention
takes as it is). A whole case runs from its recorded inputs through the impl's mirror of the transformers API,
with the impl's tap reporting every call.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ...compare.candidate import Candidate, NotCovered, Sink, check_call
from ...compare.provenance import imported_versions, package_label, package_provenance
from ...store.reader import Case, GoldenStore
from ...store.schema import CallRecord
from ..torch_model import checkpoint_of
from .cases import GREEDY

IMPL_PACKAGE = "impl.qwen3_lm"
_NP_DTYPES = {"float32": np.float32, "float64": np.float64, "bfloat16": np.float32}


class ImplCandidate(Candidate):
    name = "impl"

    def __init__(self, dtype: str | None = None, checkpoint: Path | None = None) -> None:
        self.forced_dtype = dtype
        self.checkpoint = checkpoint
        self.model: Any = None
        self._loaded: dict[tuple[str, str], Any] = {}

    @property
    def description(self) -> str:
        return f"impl ({package_label(package_provenance(IMPL_PACKAGE))}, NumPy {np.__version__}, " \
               f"{self.dtype or 'golden dtype'})"  # fmt: skip

    def provenance(self) -> dict[str, Any]:
        return {"kind": self.name, "label": self.description, "package": package_provenance(IMPL_PACKAGE),
                "conformance": __import__("conformance").__version__, "libraries": imported_versions(("numpy",)),
                "dtype": self.dtype or self.forced_dtype}  # fmt: skip

    def prepare(self, store: GoldenStore, case: Case) -> None:
        from impl.qwen3_lm import load

        self.dtype = self.forced_dtype or case.dtype or "float32"
        folder = checkpoint_of(store, case, self.checkpoint)
        key = (str(folder), self.dtype)
        if key not in self._loaded:
            self._loaded[key] = load(folder, _NP_DTYPES[self.dtype], attn_implementation="eager")
        self.model = self._loaded[key]

    def _resolve(self, key: str) -> Any:
        path, _, method = key.partition(":")
        try:
            module = self.model.get("" if path == "(root)" else path)
        except (AttributeError, IndexError, TypeError):
            return None
        target = getattr(module, method, None) if method else module
        return target if callable(target) else None

    def covers(self, call: CallRecord) -> bool:
        return self._resolve(call.key) is not None

    def run_isolated(self, case: Case, call: CallRecord, args: list[Any], kwargs: dict[str, Any]) -> Any:
        target = self._resolve(call.key)
        if target is None:
            raise NotCovered(call.key)
        check_call(target, args, kwargs)
        return target(*args, **kwargs)

    def can_chain(self, case: Case) -> bool:
        return case.provenance.get("family") in ("prefill", "generation")

    def run_chained(self, case: Case, sink: Sink) -> None:
        from impl.qwen3_lm import nn

        family = case.provenance.get("family")
        ids = case.input("input_ids")
        with nn.tapping(sink):
            if family == "prefill":
                self.model(input_ids=ids)
            elif family == "generation":
                self.model.generate(ids, attention_mask=case.input("attention_mask"),
                                    max_new_tokens=int(case.input("max_new_tokens")), **GREEDY)  # fmt: skip
            else:
                raise NotCovered(case.name)
