"""Verdict records produced by the check engine and read by the report writers (JSON-serialisable)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from .provenance import provenance_differences

PASS, FAIL, XFAIL, XPASS, NOT_COVERED, ERROR, SKIPPED = (
    "pass",
    "fail",
    "xfail",
    "xpass",
    "not_covered",
    "error",
    "skipped",
)
# isolated replay could not call the candidate's module with the golden's arguments (a TypeError: missing or
# unexpected keyword, other arity): not a numeric verdict, and not the candidate's crash either
INTERFACE = "interface_mismatch"
STATUSES = (PASS, FAIL, XFAIL, XPASS, NOT_COVERED, INTERFACE, ERROR, SKIPPED)
FAILING = (FAIL, ERROR)
UNJUDGED = (NOT_COVERED, INTERFACE)  # the golden tensor got no numeric verdict: the run is incomplete
PARTIAL = "partial"  # the run's verdict when --allow-partial lets modules the candidate lacks through (exit 0)
INCOMPLETE = "incomplete"
NOT_APPLICABLE = "not_applicable"  # a case's verdict when the candidate's port profile does not support it
# Exit codes of a check (the CI contract): 0 conform (or partial with --allow-partial), 1 a divergence
# beyond policy or golden tensors the candidate did not cover, 2 bad input or usage, or a candidate that
# crashed (while loading, preparing or running a case: its verdict is `error`, never a divergence).
EXIT_OK, EXIT_DIVERGED, EXIT_ERROR = 0, 1, 2


def _clean(value: Any) -> Any:
    """JSON-safe: infinities and NaN become strings, tuples lists."""
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return value
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


@dataclass
class TensorResult:
    """The verdict on one golden tensor (one role of one call of one module) in one mode."""

    case: str
    mode: str
    key: str
    call: int
    role: str
    status: str
    dtype: str = ""
    shape: list[int] = field(default_factory=list)
    metrics: dict[str, Any] | None = None
    thresholds: dict[str, float] = field(default_factory=dict)
    source: str = ""
    xfail: str | None = None
    min_tolerance: dict[str, float] = field(default_factory=dict)
    margin: float = 0.0  # worst metric / threshold (a fraction of the budget used; > 1 fails)
    noise: dict[str, float] | None = None
    message: str = ""
    seq_start: int = 0
    seq_end: int = 0
    tier: str = "full"
    note: str = ""  # what the verdict took into account without failing (e.g. an input equal by value only)
    precision: str = ""  # the precision judged at, when not float32 (`noise` is then that precision twin's)

    @property
    def name(self) -> str:
        return f"{self.key}#{self.call}/{self.role}"

    @property
    def is_input(self) -> bool:
        return not self.role.startswith("outputs")

    def to_json(self) -> dict[str, Any]:
        return _clean(asdict(self))


@dataclass
class Blame:
    """The first module, in execution order, whose inputs conform and whose outputs do not."""

    mode: str
    key: str
    call: int
    seq_end: int
    reason: str
    outputs: list[str] = field(default_factory=list)  # failing output tensor names
    inputs: list[str] = field(default_factory=list)  # its input tensor names (all conform)
    replay_bundle: str | None = None
    kind: str = "module"  # "module": this call diverged on conforming inputs; "input": divergence entered
    # through an input of this call that no recorded module produced (`inputs` names it)

    def to_json(self) -> dict[str, Any]:
        return _clean(asdict(self))


@dataclass
class TokenFinding:
    """A top-1 disagreement on discrete outputs, classified by the reference's own top-1 margin."""

    case: str
    # "teacher_forced" (a logits head re-run on golden hidden states), "teacher_forced_model" (a whole-model
    # generation step re-run on the golden history: the headline), or "free_running" (chained codes)
    mode: str
    key: str
    call: int
    classification: str  # agree, exact_tie, near_tie, token_swap, logit_drift
    golden_token: int
    candidate_token: int
    golden_second: int
    margin: float
    # the token's index over the subject's token axes (a whole-model step or a generated token; None for a logits
    # head, whose call is its step), and those axes: ["position"], ["frame", "codebook"]
    index: list[int] | None = None
    axes: list[str] = field(default_factory=list)
    row: int | None = None  # the row of the call's last-position logits (the batch item)

    def at(self, axis: str) -> int | None:
        """The token index along one named axis ("frame"), or None."""
        if self.index is None or axis not in self.axes:
            return None
        return self.index[self.axes.index(axis)]

    def to_json(self) -> dict[str, Any]:
        # each axis also under its own name ("frame": 0, "codebook": 2): summary.json reads without the layout
        named = dict(zip(self.axes, self.index)) if self.index is not None else {}
        return _clean({**asdict(self), **{k: v for k, v in named.items() if k not in _TOKEN_FIELDS}})


_TOKEN_FIELDS = {"case", "mode", "key", "call", "classification", "golden_token", "candidate_token", "golden_second",
                 "margin", "index", "axes", "row"}  # fmt: skip


@dataclass
class GrowthPoint:
    """Error along the pipeline: one point per call, in execution (completion) order."""

    key: str
    call: int
    seq_end: int
    chained_rel_l2: float | None = None
    chained_max_abs: float | None = None
    isolated_rel_l2: float | None = None
    isolated_max_abs: float | None = None
    input_rel_l2: float | None = None
    threshold_rel_l2: float | None = None
    status: str = PASS

    def to_json(self) -> dict[str, Any]:
        return _clean(asdict(self))


_STAGES = {"load": "loading the candidate", "prepare": "loading or preparing the case",
           "isolated": "running the isolated checks", "chained": "running the case end to end",
           "repeat": "running the case again (--repeat)"}  # fmt: skip


@dataclass
class CaseError:
    """The candidate crashed on a case (while loading, preparing or running it): no numeric verdict."""

    stage: str  # "load", "prepare", "isolated", "chained", "repeat"
    type: str  # the exception's class name
    message: str  # its one-line message
    traceback: str = ""

    @property
    def line(self) -> str:
        return f"{self.type} while {_STAGES.get(self.stage, self.stage)}: {self.message}"

    def to_json(self) -> dict[str, Any]:
        return _clean(asdict(self))


@dataclass
class CaseResult:
    case: str
    family: str
    dtype: str
    modes: list[str]
    tensors: list[TensorResult] = field(default_factory=list)
    blame: dict[str, Blame | None] = field(default_factory=dict)
    growth: list[GrowthPoint] = field(default_factory=list)
    tokens: list[TokenFinding] = field(default_factory=list)
    first_divergence: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    description: str = ""
    error: CaseError | None = None
    # candidate tensors that match no golden tensor (a dump's names no rule maps): {"name", "reason"}
    unmatched: list[dict[str, str]] = field(default_factory=list)
    subject: str | None = None  # the subject that recorded the case (conformance.subjects)
    token_layout: dict[str, Any] | None = None  # where its tokens are and their axes (TokenLayout.to_json)
    signals: list[dict[str, Any]] = field(default_factory=list)  # outputs that are signals (Signal.to_json)
    not_applicable: str | None = None  # why the case does not apply to the candidate (its port profile), if so

    def outputs(self, mode: str | None = None) -> list[TensorResult]:
        return [t for t in self.tensors if not t.is_input and (mode is None or t.mode == mode)]

    def counts(self) -> dict[str, int]:
        out = {status: 0 for status in STATUSES}
        for tensor in self.outputs():
            out[tensor.status] += 1
        return out

    @property
    def verdict(self) -> str:
        counts = self.counts()
        if self.not_applicable is not None and not self.tensors:
            return NOT_APPLICABLE
        if self.error is not None or counts[ERROR]:
            return ERROR
        if counts[FAIL]:
            return FAIL
        if counts[NOT_COVERED] or counts[INTERFACE]:
            return INCOMPLETE
        return PASS

    def to_json(self) -> dict[str, Any]:
        return {
            "case": self.case,
            "subject": self.subject,
            "token_layout": self.token_layout,
            "signals": self.signals,
            "error": {**self.error.to_json(), "line": self.error.line} if self.error else None,
            "family": self.family,
            "dtype": self.dtype,
            "description": self.description,
            "modes": self.modes,
            "verdict": self.verdict,
            "not_applicable": self.not_applicable,
            "counts": self.counts(),
            "blame": {mode: (b.to_json() if b else None) for mode, b in self.blame.items()},
            "first_divergence": _clean(self.first_divergence),
            "tokens": [t.to_json() for t in self.tokens],
            "growth": [g.to_json() for g in self.growth],
            "notes": self.notes,
            "unmatched": self.unmatched,
            "seconds": self.seconds,
            "tensors": [t.to_json() for t in self.tensors],
        }


@dataclass
class RunResult:
    candidate: str
    goldens: str
    policy: dict[str, Any]
    command: str
    started_utc: str
    seconds: float
    golden_provenance: dict[str, Any]
    cases: list[CaseResult] = field(default_factory=list)
    modes: list[str] = field(default_factory=list)
    allow_partial: bool = False
    artifacts: dict[str, Any] = field(default_factory=dict)
    # what the candidate is (distribution, version, location, library versions; a dump's metadata and hashes)
    candidate_provenance: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # run-wide notes (e.g. a calibration fallback)

    def counts(self) -> dict[str, int]:
        out = {status: 0 for status in STATUSES}
        for case in self.cases:
            for status, n in case.counts().items():
                out[status] += n
        return out

    @property
    def verdict(self) -> str:
        counts = self.counts()
        if counts[ERROR] or any(case.error is not None for case in self.cases):
            return ERROR
        if counts[FAIL]:
            return FAIL
        if counts[NOT_COVERED] or counts[INTERFACE]:
            # --allow-partial lets a partial port through the gate, but never as a pass of the whole
            return PARTIAL if self.allow_partial else INCOMPLETE
        return PASS

    @property
    def exit_code(self) -> int:
        verdict = self.verdict
        if verdict == ERROR:
            return EXIT_ERROR
        return EXIT_OK if verdict in (PASS, PARTIAL) else EXIT_DIVERGED

    @property
    def provenance_differences(self) -> list[dict[str, Any]]:
        """Where the candidate is not what the golden was recorded with (another official version, fork,
        transformers or torch): each {"field", "golden", "candidate"}."""
        return provenance_differences(self.golden_provenance, self.candidate_provenance)

    @property
    def error_line(self) -> str | None:
        """One line saying why the run is an error (the candidate crashed), or None."""
        crashed = [case for case in self.cases if case.error is not None]
        if crashed:
            first = crashed[0]
            assert first.error is not None
            more = f" (and {len(crashed) - 1} more case(s))" if len(crashed) > 1 else ""
            return f"the candidate crashed on case {first.case}{more}: {first.error.line}"
        for case in self.cases:
            for tensor in case.tensors:
                if tensor.status == ERROR:
                    return f"the candidate raised in {tensor.name} ({tensor.mode}, case {case.case}): {tensor.message}"
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": "conformance-summary/1",
            "verdict": self.verdict,
            "exit_code": self.exit_code,
            "counts": self.counts(),
            "error": self.error_line,
            "candidate": self.candidate,
            "candidate_provenance": _clean(self.candidate_provenance),
            "provenance_differences": self.provenance_differences,
            "notes": self.notes,
            "goldens": self.goldens,
            "modes": self.modes,
            "allow_partial": self.allow_partial,
            "policy": _clean(self.policy),
            "command": self.command,
            "started_utc": self.started_utc,
            "seconds": round(self.seconds, 3),
            "golden_provenance": _clean(self.golden_provenance),
            "cases": [c.to_json() for c in self.cases],
        }
