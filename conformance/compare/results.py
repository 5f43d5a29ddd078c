"""Verdict records produced by the check engine and read by the report writers (JSON-serialisable)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

PASS, FAIL, XFAIL, XPASS, NOT_COVERED, ERROR, SKIPPED = (
    "pass",
    "fail",
    "xfail",
    "xpass",
    "not_covered",
    "error",
    "skipped",
)
STATUSES = (PASS, FAIL, XFAIL, XPASS, NOT_COVERED, ERROR, SKIPPED)
FAILING = (FAIL, ERROR)
PARTIAL = "partial"  # the run's verdict when --allow-partial lets modules the candidate lacks through (exit 0)


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

    def to_json(self) -> dict[str, Any]:
        return _clean(asdict(self))


@dataclass
class TokenFinding:
    """A top-1 disagreement on discrete outputs, classified by the reference's own top-1 margin."""

    case: str
    mode: str  # "teacher_forced" (isolated logits) or "free_running" (chained codes)
    key: str
    call: int
    classification: str  # agree, exact_tie, near_tie, token_swap, logit_drift
    golden_token: int
    candidate_token: int
    golden_second: int
    margin: float
    frame: int | None = None
    codebook: int | None = None
    position: int | None = None

    def to_json(self) -> dict[str, Any]:
        return _clean(asdict(self))


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
        if counts[FAIL] or counts[ERROR]:
            return FAIL
        if counts[NOT_COVERED]:
            return "incomplete"
        return PASS

    def to_json(self) -> dict[str, Any]:
        return {
            "case": self.case,
            "family": self.family,
            "dtype": self.dtype,
            "description": self.description,
            "modes": self.modes,
            "verdict": self.verdict,
            "counts": self.counts(),
            "blame": {mode: (b.to_json() if b else None) for mode, b in self.blame.items()},
            "first_divergence": _clean(self.first_divergence),
            "tokens": [t.to_json() for t in self.tokens],
            "growth": [g.to_json() for g in self.growth],
            "notes": self.notes,
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

    def counts(self) -> dict[str, int]:
        out = {status: 0 for status in STATUSES}
        for case in self.cases:
            for status, n in case.counts().items():
                out[status] += n
        return out

    @property
    def verdict(self) -> str:
        counts = self.counts()
        if counts[FAIL] or counts[ERROR]:
            return FAIL
        if counts[NOT_COVERED]:
            # --allow-partial lets a partial port through the gate, but never as a pass of the whole
            return PARTIAL if self.allow_partial else "incomplete"
        return PASS

    @property
    def exit_code(self) -> int:
        return 0 if self.verdict in (PASS, PARTIAL) else 1

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": "conformance-summary/1",
            "verdict": self.verdict,
            "exit_code": self.exit_code,
            "counts": self.counts(),
            "candidate": self.candidate,
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
