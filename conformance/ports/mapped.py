"""A Python candidate seen through a map's `[modules]` and `[[kwargs]]` sections (numpy only).

A fork or a Python port may keep a module under another path (`model.rope` for the official
`model.rotary_emb`) or take a keyword under another name (`pos_ids` for `position_ids`). With a map
(`--map`, the TOML format of mapping.py) the engine still speaks golden names: isolated replay reaches the
candidate's module at its own path with its own keywords, and the calls a chained run reports come back
under the golden's module keys and keywords. Without one, a moved module is *not covered* and a renamed
keyword an *interface mismatch*.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from ..compare.candidate import Candidate, Sink
from ..compare.results import CaseResult
from ..errors import MappingError
from ..store.reader import Case, GoldenStore
from ..store.schema import CallRecord
from .mapping import Mapping, load_mapping


def load_python_map(path: Path) -> Mapping:
    """The map of a Python candidate: it must say something to one ([modules] or [[kwargs]])."""
    mapping = load_mapping(path)
    if not mapping.renames_python_names:
        raise MappingError("the map has no [modules] or [[kwargs]] section, the ones a Python candidate uses "
                           "([names], [[rename]] and [[ignore]] route the tensors of a dump)", path=path)  # fmt: skip
    return mapping


class MappedCandidate(Candidate):
    """Wraps a Python candidate (impl, official, a fork): golden names in, the candidate's names out, and back."""

    def __init__(self, inner: Candidate, mapping: Mapping) -> None:
        self.inner = inner
        self.map = mapping
        self.name = inner.name
        self.dtype = inner.dtype
        self.default_modes = inner.default_modes
        self._checked: set[str] = set()

    @property
    def description(self) -> str:
        return self.inner.description

    def provenance(self) -> dict[str, Any]:
        return {**self.inner.provenance(), "map": self.map.label}

    def __getattr__(self, name: str) -> Any:  # what only the wrapped candidate knows (its models, its roots)
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def prepare(self, store: GoldenStore, case: Case) -> None:
        where = str(store.path)
        if where not in self._checked:  # a rule that names nothing the golden has is a typo, not a no-op
            keys = {key for name in store.cases for key in store.case(name).keys()}  # noqa: SIM118 (a Case, not a dict)
            self.map.check_python_names(keys, where)
            self._checked.add(where)
        self.inner.prepare(store, case)
        self.dtype = self.inner.dtype

    def _candidate_call(self, call: CallRecord) -> CallRecord:
        key = self.map.candidate_key(call.key)
        if key == call.key:
            return call
        module, _, method = key.partition(":")
        return replace(call, key=key, module=module, method=method or call.method)

    def covers(self, call: CallRecord) -> bool:
        return self.inner.covers(self._candidate_call(call))

    def run_isolated(self, case: Case, call: CallRecord, args: list[Any], kwargs: dict[str, Any]) -> Any:
        return self.inner.run_isolated(
            case, self._candidate_call(call), args, self.map.candidate_kwargs(call.key, kwargs)
        )

    def can_chain(self, case: Case) -> bool:
        return self.inner.can_chain(case)

    def run_chained(self, case: Case, sink: Sink) -> None:
        def golden_names(key: str, phase: str, args: tuple[Any, ...], kwargs: dict[str, Any], outputs: Any) -> None:
            golden = self.map.golden_key(key)
            sink(golden, phase, args, self.map.golden_kwargs(golden, kwargs) if kwargs else kwargs, outputs)

        self.inner.run_chained(case, golden_names)

    def release(self) -> None:
        self.inner.release()

    def review(self, case: Case, result: CaseResult, mode: str) -> None:
        self.inner.review(case, result, mode)
