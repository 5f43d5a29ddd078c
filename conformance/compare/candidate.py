"""What the check engine asks of a candidate (the impl, the official model itself, a port's dump).

A candidate can do one or both of:

* **isolated**: run one component given the golden inputs recorded for its module
  (`run_isolated(case, call, args, kwargs) -> outputs`), so its output can be compared with the golden
  output of that call alone;
* **chained**: run a whole case from the case's inputs, reporting every call of every component to a
  sink as it happens (`run_chained(case, sink)`), so each intermediate can be compared with its golden.

Components are named by the official module key (`talker.model.layers.3.self_attn`,
`speech_tokenizer.decoder.quantizer:decode`); a call's outputs (and args/kwargs) are nested structures
of numpy arrays and plain values, flattened by the engine with the recorder's naming. A component the
candidate does not implement is reported as *not covered*, never as a pass.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from ..store.reader import Case, GoldenStore
from ..store.schema import CallRecord
from .results import CaseResult

# sink(key, phase, args, kwargs, outputs): phase "call" when a component starts (args/kwargs set),
# "return" when it returns (outputs set). Calls of one key are numbered in the order they start.
Sink = Callable[[str, str, tuple[Any, ...], dict[str, Any], Any], None]


class NotCovered(Exception):
    """The candidate has no implementation of this component (or cannot run this case)."""


class Candidate:
    """Base class of candidates. Subclasses implement what they support; the rest is not covered."""

    name: str = "candidate"
    dtype: str | None = None  # the precision the candidate computes in, when it has one
    default_modes: tuple[str, ...] = ("isolated", "chained")  # what `check` runs when --mode is not given

    def prepare(self, store: GoldenStore, case: Case) -> None:
        """Load what the case needs (weights from the checkpoint named in its provenance). Raises
        ConformanceError when that is impossible (missing checkpoint)."""

    def covers(self, call: CallRecord) -> bool:
        """Whether `run_isolated` can run this call."""
        return False

    def run_isolated(self, case: Case, call: CallRecord, args: list[Any], kwargs: dict[str, Any]) -> Any:
        raise NotCovered(call.key)

    def can_chain(self, case: Case) -> bool:
        return False

    def run_chained(self, case: Case, sink: Sink) -> None:
        raise NotCovered(case.name)

    def release(self) -> None:
        """Free per-case state (called after each case)."""

    def review(self, case: Case, result: CaseResult, mode: str) -> None:
        """Called once a mode of a case has been judged and blamed: a candidate may add notes or refine
        the blame with what only it knows (a dump blames through the golden producers of each input)."""

    def provenance(self) -> dict[str, Any]:
        """What this candidate is, for the reports: `kind`, a `label` naming what ran, and for Python
        candidates the distribution that provides the imported package (name, version, location) and the
        versions of the libraries it ran with; for dumps, the dump's metadata and file hashes."""
        return {"kind": self.name, "label": self.description}

    @property
    def description(self) -> str:
        return self.name


class UnloadableCandidate(Candidate):
    """Stands for a candidate whose construction raised (a fork that fails on import, a port library that
    cannot load): every case gets an `error` verdict with that exception, and the reports are still written."""

    def __init__(self, spec: str, exc: BaseException) -> None:
        self.name = spec
        self.exc = exc

    def prepare(self, store: GoldenStore, case: Case) -> None:
        raise CandidateCrash("load", self.exc)

    @property
    def description(self) -> str:
        return f"{self.name} (failed to load)"


class CandidateCrash(Exception):
    """An exception of the candidate, re-raised with the stage it happened in."""

    def __init__(self, stage: str, original: BaseException) -> None:
        super().__init__(str(original))
        self.stage = stage
        self.original = original


class CandidateFactory(ABC):
    """Builds a candidate from its command-line spec (`impl`, `official:float64`, `dump:PATH`)."""

    @abstractmethod
    def create(self, spec: str, **options: Any) -> Candidate: ...
