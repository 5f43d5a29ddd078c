"""What the check engine asks of a candidate (the impl, the official model itself, a port's dump).

A candidate can do one or both of:

* **isolated**: run one component given the golden inputs recorded for its module
  (`run_isolated(case, call, args, kwargs) -> outputs`), so its output can be compared with the golden
  output of that call alone;
* **chained**: run a whole case from the case's inputs, reporting every call of every component to a
  sink as it happens (`run_chained(case, sink)`), so each intermediate can be compared with its golden.

Components are named by the official module key (`model.layers.3.self_attn`,
`vocoder.decoder.quantizer:decode`); a call's outputs (and args/kwargs) are nested structures
of numpy arrays and plain values, flattened by the engine with the recorder's naming. A component the
candidate does not implement is reported as *not covered*, never as a pass.
"""

from __future__ import annotations

import difflib
import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..store.reader import Case, GoldenStore
from ..store.schema import CallRecord
from .results import CaseResult

# sink(key, phase, args, kwargs, outputs): phase "call" when a component starts (args/kwargs set),
# "return" when it returns (outputs set). Calls of one key are numbered in the order they start.
Sink = Callable[[str, str, tuple[Any, ...], dict[str, Any], Any], None]


@dataclass(frozen=True)
class GoldenSlice:
    """A candidate's value that covers part of a golden tensor: `value` is judged against `golden[index]` (a port that
    dumps the logits of the last position only, mapped with `slice = "[:, -1:, :]"`). `text` is the selection as
    written, for the verdict's note."""

    value: Any
    index: tuple[Any, ...]
    text: str


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
        """The outputs of this call on the golden inputs. Raises NotCovered for a module the candidate lacks and
        InterfaceMismatch when the module cannot take the golden's arguments (see `check_call`)."""
        raise NotCovered(call.key)

    def can_chain(self, case: Case) -> bool:
        return False

    def run_chained(self, case: Case, sink: Sink) -> None:
        raise NotCovered(case.name)

    def release(self) -> None:
        """Free per-case state (called after each case)."""

    def case_outputs(self, case: Case) -> dict[str, Any] | None:
        """The case's final outputs as the candidate produced them (by case output name: codes, waveform,
        sample_rate...), judged in the "outputs" mode; None when the candidate gives none."""
        return None

    def black_box(self, case: Case) -> bool:
        """Whether the candidate gives only the case's final outputs: then only those are judged (mode "outputs"),
        and no module is reported not covered."""
        return False

    def not_applicable(self, case: Case, semantics: dict[str, str]) -> str | None:
        """Why this case is not applicable to the candidate (a layout or option it declares it does not support,
        given the case's `semantics`), or None."""
        return None

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


class InterfaceMismatch(Exception):
    """Isolated replay cannot call the candidate's module with the golden's arguments (other keyword names, other
    arity): the verdict is `interface_mismatch`, neither a numeric divergence nor a crash of the module."""


def signature_of(target: Callable[..., Any]) -> inspect.Signature | None:
    """The parameters a candidate's module takes. Module objects (torch's, the impl's) are called through a
    generic `__call__(*args, **kwargs)`: their `forward` says what they take. None when Python cannot tell
    (builtins, extension functions)."""
    forward = getattr(target, "forward", None)
    if callable(forward) and not inspect.isroutine(target):
        target = forward
    try:
        return inspect.signature(target)
    except (TypeError, ValueError):
        return None


def check_call(target: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any]) -> None:
    """Raise InterfaceMismatch when `target` cannot take these arguments. Binding them to its signature before
    the call tells an interface mismatch from a TypeError raised inside the module's own code (a crash)."""
    signature = signature_of(target)
    if signature is None:
        return
    try:
        signature.bind(*args, **kwargs)
    except TypeError as exc:
        raise InterfaceMismatch(describe_mismatch(signature, len(args), list(kwargs), str(exc))) from None


def describe_mismatch(signature: inspect.Signature, n_args: int, kwargs: list[str], error: str = "") -> str:
    """The difference between what the golden passes and what the candidate takes, in a line:
    "candidate takes pos_ids, golden passes position_ids"."""
    params = list(signature.parameters.values())
    kinds = inspect.Parameter
    positional = [p for p in params if p.kind in (kinds.POSITIONAL_ONLY, kinds.POSITIONAL_OR_KEYWORD)]
    keyword_names = [p.name for p in params if p.kind in (kinds.POSITIONAL_OR_KEYWORD, kinds.KEYWORD_ONLY)]
    takes_varargs = any(p.kind == kinds.VAR_POSITIONAL for p in params)
    takes_varkw = any(p.kind == kinds.VAR_KEYWORD for p in params)
    bound = {p.name for p in positional[:n_args]} | set(kwargs)
    unbound = [name for name in keyword_names if name not in bound]
    parts = []
    if n_args > len(positional) and not takes_varargs:
        parts.append(f"golden passes {n_args} positional arguments, candidate takes {len(positional)}")
    unexpected = [] if takes_varkw else [name for name in kwargs if name not in keyword_names]
    matched: set[str] = set()
    for name in unexpected:
        close = difflib.get_close_matches(name, [n for n in unbound if n not in matched], n=1, cutoff=0.5)
        if close:
            matched.add(close[0])
            parts.append(f"candidate takes {close[0]}, golden passes {name}")
        else:
            parts.append(f"golden passes {name}, which the candidate does not take")
    duplicated = [p.name for p in positional[:n_args] if p.name in kwargs]
    parts += [f"golden passes {name} both by position and by keyword" for name in duplicated]
    required = [p.name for p in params if p.default is p.empty and p.kind not in (kinds.VAR_POSITIONAL, kinds.VAR_KEYWORD)
                and p.name not in bound and p.name not in matched]  # fmt: skip
    parts += [f"candidate requires {name}, which the golden does not pass" for name in required]
    if not parts:
        parts.append(error or "the arguments do not bind")
    plain = signature.replace(parameters=[p.replace(annotation=p.empty) for p in params],
                              return_annotation=inspect.Signature.empty)  # fmt: skip
    return f"interface mismatch: {'; '.join(parts)} (candidate signature {plain})"


class CandidateFactory(ABC):
    """Builds a candidate from its command-line spec (`impl`, `official:float64`, `dump:PATH`)."""

    @abstractmethod
    def create(self, spec: str, **options: Any) -> Candidate: ...
