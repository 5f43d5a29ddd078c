"""The check engine: compare a candidate with a golden store, module by module (numpy only).

Two modes, both always available:

* isolated: each call the candidate implements is run on its golden inputs; its outputs are compared
  with the golden outputs of that call. An error here is the module's own.
* chained: the candidate runs each case from the case's inputs; every call it reports is matched to
  the golden call with the same module key and call index, and its inputs and outputs are compared.
  This shows how error grows along the pipeline.

Thresholds come from the tolerance policy; with calibration on, a tensor's threshold is k times the
official float32-vs-float64 noise of that very tensor (isolated noise measured at record time; chained
noise measured between the float32 golden and its float64 reference golden). Blame is the first call,
in execution (completion) order, whose inputs conform and whose outputs do not.
"""

from __future__ import annotations

import fnmatch
import math
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConformanceError
from ..store import tree
from ..store.reader import Case, GoldenStore, ObjectValue
from ..store.schema import LeafRecord
from .candidate import Candidate, CandidateCrash, NotCovered
from .metrics import CHUNK_ELEMENTS, MetricAccumulator, Metrics, compare_arrays, noise_metrics
from .policy import THRESHOLDS, Policy
from .results import (
    ERROR,
    FAIL,
    NOT_COVERED,
    PASS,
    SKIPPED,
    XFAIL,
    XPASS,
    Blame,
    CaseError,
    CaseResult,
    GrowthPoint,
    RunResult,
    TensorResult,
    TokenFinding,
)
from .stream import streamed_metrics
from .tokens import classify, last_position

STREAM_ELEMENTS = 1 << 22  # elements read per golden chunk by the reader thread
STREAM_RING = 5  # buffers the reader cycles through: the queue holds 2 chunks, the consumer one, the reader one

FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")


class CheckerError(RuntimeError):
    """A failure of the checker itself (not of the candidate): a bug to report, never a verdict."""


@dataclass
class CheckOptions:
    modes: tuple[str, ...] = ("isolated", "chained")
    cases: list[str] | None = None
    modules: list[str] | None = None
    reference: GoldenStore | None = None  # float64 golden for chained noise of a float32 golden
    reference_note: str = ""  # why there is no reference (locate_reference), for the calibration fallback note
    allow_partial: bool = False
    command: str = ""
    on_progress: Callable[[str, int, int], None] | None = None
    subject: Any = None  # subject hooks (token locations, retained outputs)
    keep: set[str] = field(default_factory=set)  # module keys whose candidate outputs are kept for the report
    keep_failing: int = 4  # failing calls per case and mode whose candidate outputs are kept for the report
    keep_failing_bytes: int = 8 << 20  # byte budget per run for those


def _is_array(value: Any) -> bool:
    return isinstance(value, np.ndarray)


def flatten_numpy(value: Any, root: str, top: bool = False) -> dict[str, Any]:
    """Name a candidate's leaves the way the recorder names golden leaves."""
    return tree.flatten(value, root, top, is_tensor=lambda v: isinstance(v, (np.ndarray, np.generic)))


class FailingKeeper:
    """Keeps the candidate's values of failing float output tensors, so the report can show where inside a
    tensor the error sits: the first `calls` failing calls per case and mode, under a byte budget per run.
    Kept values land in `kept[case][(key, call)]` under their role for chained mode (like the subject's
    retained outputs) and under "isolated:<role>" for isolated mode (a module's two outputs differ)."""

    def __init__(self, calls: int, budget: int) -> None:
        self.calls = calls
        self.budget = budget
        self.used = 0
        self.kept: dict[str, dict[tuple[str, int], dict[str, np.ndarray]]] = defaultdict(dict)
        self._calls: dict[tuple[str, str], set[tuple[str, int]]] = defaultdict(set)

    def offer(self, tensor: TensorResult, value: Any) -> None:
        if tensor.status != FAIL or not isinstance(value, np.ndarray) or value.dtype.kind != "f":
            return
        if list(value.shape) != list(tensor.shape):
            return
        calls = self._calls[(tensor.case, tensor.mode)]
        index = (tensor.key, tensor.call)
        if (index not in calls and len(calls) >= self.calls) or value.nbytes > self.budget - self.used:
            return
        role = tensor.role if tensor.mode == "chained" else f"isolated:{tensor.role}"
        slot = self.kept[tensor.case].setdefault(index, {})
        if role not in slot:
            slot[role] = np.array(value, copy=True)
            calls.add(index)
            self.used += value.nbytes


class Judge:
    """Turns (golden leaf, candidate value) into a TensorResult under a policy."""

    def __init__(self, policy: Policy, case: Case, reference: Case | None, mode: str) -> None:
        self.policy = policy
        self.case = case
        self.reference = reference
        self.mode = mode
        self._noise_cache: dict[tuple[str, int, str], dict[str, float] | None] = {}
        self._carried: Any = None

    def noise(self, leaf: LeafRecord) -> dict[str, float] | None:
        """The official float32-vs-float64 noise of this tensor. Isolated: the oracle's re-run of this call
        on the same inputs. Chained: the float32 golden against its float64 reference. Calls the oracle
        does not re-run (whole generation loops) use the reference comparison in both modes: run from
        their recorded inputs, their outputs differ from float64 exactly as in a chained run."""
        return self._noise(leaf)[0]

    def _noise(self, leaf: LeafRecord) -> tuple[dict[str, float] | None, bool]:
        """(noise, whether it is the calibration fallback standing in for a chained noise: _fallback_noise)."""
        if self.mode == "isolated":
            record = self.case.oracle(leaf.key, leaf.call, leaf.role)
            if record is not None:
                return (dict(record.metrics) if record.status == "ok" else None), False
            return (self._chained_noise(leaf) if self.reference is not None else None), False
        if self.reference is None:
            return self._fallback_noise(leaf), True
        return self._chained_noise(leaf), False

    def _fallback_noise(self, leaf: LeafRecord) -> dict[str, float] | None:
        """Without a float64 reference, a tensor's chained noise is unknown. Its isolated noise alone is too
        small: it leaves out the error the tensor inherits from upstream (an exact op such as a ReLU has
        none of its own), and k times it fails correct candidates. What stands in is the tensor's relative
        noise carried along the recorded data flow (`_carried_noise`), times the policy's
        calibration.fallback_factor, measured so that no correct candidate fails (docs/policy.md). Relative
        L2 only: an absolute or elementwise noise does not carry across modules."""
        carried = self._carried_noise()
        if leaf.role.startswith("outputs"):
            value = carried[0].get((leaf.key, leaf.call, leaf.role))
        else:  # an input passed on from an output is stored once, at its producer's location
            value = carried[1].get((leaf.location, leaf.row)) if leaf.location else None
            if value is None:  # made inside the caller (padded, transposed): what the call's outputs carry
                value = carried[2].get((leaf.key, leaf.call))
        if value is None:
            return None
        return {"rel_l2": value * self.policy.calibration.fallback_factor}

    def _carried_noise(self) -> tuple[dict[tuple[str, int, str], float], dict[tuple[str, int], float],
                                      dict[tuple[str, int], float]]:  # fmt: skip
        """Relative noise carried along the data flow, in completion order: an output carries the larger of its
        own isolated rel_l2 noise and the largest carried by the call's inputs (through the outputs that
        produced them: shared storage, as ports/blame.py follows it). By output, by storage, by call."""
        if self._carried is None:
            own: dict[tuple[str, int, str], float] = {}
            for record in self.case.oracle_records():
                rel = record.metrics.get("rel_l2")
                if record.mode == "isolated" and record.status == "ok" and rel is not None and rel == rel:
                    own[(record.key, record.call, record.role)] = rel
            by_output: dict[tuple[str, int, str], float] = {}
            by_storage: dict[tuple[str, int], float] = {}
            by_call: dict[tuple[str, int], float] = {}
            parents: dict[tuple[str, int], Any] = {}
            open_calls: list[Any] = []
            for call in sorted(self.case.calls(), key=lambda c: c.seq_start):
                while open_calls and open_calls[-1].seq_end < call.seq_start:
                    open_calls.pop()
                parents[(call.key, call.call)] = open_calls[-1] if open_calls else None
                open_calls.append(call)

            memo: dict[tuple[str, int], float] = {}

            def inherited(call: Any) -> float:
                """The most any input of the call carries; an input made inside a caller (padded, transposed)
                carries what the enclosing call's inputs carry. (An enclosing call's inputs were all produced
                before it started, so its value is final by the time a call inside it completes.)"""
                index = (call.key, call.call)
                if index in memo:
                    return memo[index]
                carried, made_inside = 0.0, False
                for leaf in self.case.leaves(call.key, call.call):
                    if not leaf.is_tensor or leaf.role.startswith("outputs"):
                        continue
                    value = by_storage.get((leaf.location, leaf.row)) if leaf.location else None
                    if value is None:
                        made_inside = True
                    else:
                        carried = max(carried, value)
                parent = parents.get(index)
                if made_inside and parent is not None:
                    carried = max(carried, inherited(parent))
                memo[index] = carried
                return carried

            for call in self.case.calls_by_completion():
                upstream = inherited(call)
                for leaf in self.case.leaves(call.key, call.call):
                    if not leaf.is_tensor or not leaf.role.startswith("outputs"):
                        continue
                    mine = own.get((leaf.key, leaf.call, leaf.role))
                    if mine is None and not upstream:
                        continue
                    value = max(mine or 0.0, upstream)
                    by_output[(leaf.key, leaf.call, leaf.role)] = value
                    by_call[(call.key, call.call)] = max(value, by_call.get((call.key, call.call), 0.0))
                    if leaf.location:
                        by_storage.setdefault((leaf.location, leaf.row), value)
            self._carried = (by_output, by_storage, by_call)
        return self._carried

    def _chained_noise(self, leaf: LeafRecord) -> dict[str, float] | None:
        """Official float32 chained vs official float64 chained, at this very tensor."""
        if self.reference is None:
            return None
        index = (leaf.key, leaf.call, leaf.role)
        if index not in self._noise_cache:
            try:
                ref_leaf = self.reference.leaf(*index)
            except Exception:
                self._noise_cache[index] = None
                return None
            if ref_leaf.shape != leaf.shape or ref_leaf.tier != "full" or leaf.tier != "full":
                self._noise_cache[index] = None
                return None
            self._noise_cache[index] = noise_metrics(
                self.reference.tensor(ref_leaf).astype(np.float64), self.case.tensor(leaf), leaf.dtype
            )
        return self._noise_cache[index]

    def judge(self, leaf: LeafRecord, value: Any, seq: tuple[int, int]) -> TensorResult:
        result = TensorResult(self.case.name, self.mode, leaf.key, leaf.call, leaf.role, PASS, leaf.dtype,
                              list(leaf.shape), seq_start=seq[0], seq_end=seq[1], tier=leaf.tier)  # fmt: skip
        if value is None:
            result.status, result.message = NOT_COVERED, "the candidate produced no such tensor"
            return result
        if isinstance(value, ObjectValue) or not isinstance(value, (np.ndarray, np.generic)):
            result.status, result.message = FAIL, f"expected a tensor, got {type(value).__name__}"
            return self._apply_xfail(result, None)
        candidate = np.asarray(value)
        if tuple(candidate.shape) != tuple(leaf.shape):
            result.status = FAIL
            result.message = f"shape mismatch: candidate {list(candidate.shape)} vs golden {list(leaf.shape)}"
            return self._apply_xfail(result, None)
        golden_float = leaf.dtype in FLOAT_DTYPES
        if golden_float != (candidate.dtype.kind in "fc"):
            result.status = FAIL
            result.message = f"dtype mismatch: candidate {candidate.dtype.name} vs golden {leaf.dtype}"
            return self._apply_xfail(result, None)
        if leaf.tier != "full":
            return self._judge_summary(result, leaf, candidate)
        if golden_float and self.policy.is_mask(leaf.role):
            return self._judge_mask(result, leaf, candidate)
        if not golden_float:
            metrics = compare_arrays(self.case.tensor(leaf), candidate)
            result.metrics = metrics.as_dict()
            result.thresholds = {"exact": 0.0}
            result.source = "exact (discrete)"
            if not metrics.exact:
                result.status = FAIL
                result.message = (
                    f"{metrics.integer_mismatch} of {metrics.numel} values differ, first at {metrics.first_outside}"
                )
            result.min_tolerance = {}
            return self._apply_xfail(result, None)
        return self._judge_float(result, leaf, lambda atol, rtol: self._metrics(leaf, candidate, atol, rtol))

    def judge_stream(self, leaf: LeafRecord, read: Callable[[int, int], np.ndarray],
                     seq: tuple[int, int] = (0, 0)) -> TensorResult:  # fmt: skip
        """Judge a float tensor whose candidate is read lazily: `read(offset, n)` gives n flat elements.
        The caller has checked its shape (dumps read from files, far larger than memory allows twice)."""
        result = TensorResult(self.case.name, self.mode, leaf.key, leaf.call, leaf.role, PASS, leaf.dtype,
                              list(leaf.shape), seq_start=seq[0], seq_end=seq[1], tier=leaf.tier)  # fmt: skip

        def metrics(atol: float, rtol: float) -> Metrics:
            acc = MetricAccumulator(tuple(leaf.shape), leaf.dtype, atol, rtol)
            return streamed_metrics(
                self.case.iter_tensor_chunks(leaf, max_elements=STREAM_ELEMENTS, ring=STREAM_RING), read, acc
            )

        return self._judge_float(result, leaf, metrics)

    def _judge_float(self, result: TensorResult, leaf: LeafRecord,
                     measure: Callable[[float, float], Metrics]) -> TensorResult:  # fmt: skip
        noise, fallback = self._noise(leaf)
        resolved = self.policy.resolve(leaf.key, leaf.role, leaf.dtype, self.mode, noise)
        metrics = measure(resolved.thresholds.get("atol", 0.0), resolved.thresholds.get("rtol", 0.0))
        thresholds = resolved.final({"rel_l2": 1.0, "max_rel": 1.0, "max_abs": metrics.ref_max_abs,
                                     "mean_abs": metrics.ref_rms, "max_ulp": 1.0})  # fmt: skip
        result.metrics = metrics.as_dict()
        result.thresholds = thresholds
        result.source = resolved.source
        if fallback and resolved.calibrated:
            result.source += (f", fallback: isolated noise carried along the data flow "
                              f"x{self.policy.calibration.fallback_factor:g} (no float64 reference)")  # fmt: skip
        result.noise = noise
        result.status, result.margin, result.message, result.min_tolerance = _verdict(metrics, thresholds)
        return self._apply_xfail(result, resolved.xfail)

    def _metrics(self, leaf: LeafRecord, candidate: np.ndarray, atol: float, rtol: float) -> Metrics:
        if leaf.nbytes <= 4 * CHUNK_ELEMENTS * 4:
            return compare_arrays(self.case.tensor(leaf), candidate, dtype=leaf.dtype, atol=atol, rtol=rtol)
        acc = MetricAccumulator(tuple(leaf.shape), leaf.dtype, atol, rtol)
        return streamed_metrics(
            self.case.iter_tensor_chunks(leaf, max_elements=STREAM_ELEMENTS, ring=STREAM_RING),
            candidate.reshape(-1),
            acc,
        )

    def _judge_mask(self, result: TensorResult, leaf: LeafRecord, candidate: np.ndarray) -> TensorResult:
        """Additive attention masks hold 0 where attention is allowed and a huge negative number where it
        is not; the number itself is the dtype's minimum (official float32 and float64 runs differ) or
        -inf in many ports. What must agree is the pattern."""
        golden = self.case.tensor(leaf)
        limit = self.policy.mask_threshold
        masked_g, masked_c = golden <= limit, candidate <= limit
        differ = masked_g != masked_c
        allowed_g, allowed_c = ~masked_g, ~masked_c
        values = compare_arrays(np.where(allowed_g, golden, 0), np.where(allowed_c, candidate, 0).astype(golden.dtype))
        result.source = f"attention mask: positions <= {limit:g} are masked; the rest compared exactly"
        result.thresholds = {"exact": 0.0}
        result.metrics = {"masked_mismatch": int(differ.sum()), "max_abs_unmasked": values.max_abs}
        if differ.any() or values.max_abs > 0:
            result.status = FAIL
            first = tuple(int(i) for i in np.argwhere(differ)[0]) if differ.any() else values.worst_index
            result.message = f"mask differs: {int(differ.sum())} positions masked differently, first at {first}"
        return self._apply_xfail(result, None)

    def _judge_summary(self, result: TensorResult, leaf: LeafRecord, candidate: np.ndarray) -> TensorResult:
        """Stats tier: compare the candidate's statistics with the recorded ones; hash tier: bit equality."""
        from ..store.schema import checksum
        from ..store.writer import summarize

        golden = self.case.summary(leaf)
        if leaf.tier == "hash":
            raw = candidate.astype(np.dtype(leaf.dtype)) if leaf.dtype in FLOAT_DTYPES[1:] else candidate
            same = checksum(raw) == golden.get("crc32")
            result.status = PASS if same else FAIL
            result.source = "hash tier: bit-exact comparison only"
            result.message = "" if same else "hash tier: the candidate is not bit-identical to the golden"
            return result
        mine = summarize(candidate)
        rel = {}
        for name in ("mean", "std", "l2", "abs_mean"):
            ref = golden.get(name)
            if ref is not None:
                rel[name] = abs(mine.get(name, 0.0) - ref) / max(abs(ref), 1e-30)
        result.metrics = {"statistics": mine, "relative_difference": rel}
        budget = self.policy.resolve(leaf.key, leaf.role, leaf.dtype, self.mode, None).thresholds.get("rtol", 1e-5)
        worst = max(rel.values(), default=0.0)
        result.thresholds = {"statistics_rtol": max(budget, 1e-6)}
        result.margin = worst / result.thresholds["statistics_rtol"]
        result.status = PASS if worst <= result.thresholds["statistics_rtol"] else FAIL
        result.source = "stats tier: statistics only"
        result.message = "compared statistics only (stats tier)"
        return result

    @staticmethod
    def _apply_xfail(result: TensorResult, reason: str | None) -> TensorResult:
        if reason:
            result.xfail = reason
            result.status = XFAIL if result.status == FAIL else XPASS if result.status == PASS else result.status
        return result


def _verdict(metrics: Metrics, thresholds: dict[str, float]) -> tuple[str, float, str, dict[str, float]]:
    """(status, margin, message, minimum passing tolerance per threshold)."""
    worst_margin = 0.0
    failures = []
    minimum: dict[str, float] = {}
    if metrics.nonfinite_mismatch:
        failures.append(f"NaN/Inf where the golden has none (or vice versa) at {metrics.first_nonfinite_mismatch}")
        worst_margin = math.inf
    for name, limit in thresholds.items():
        direction = THRESHOLDS.get(name, ("max", ""))[0]
        if name in ("atol", "rtol"):
            continue
        if name == "frac_outside":
            value = metrics.frac_outside
        else:
            value = metrics.value(name)
        minimum[name] = value
        if direction == "max":
            margin = value / limit if limit > 0 else (0.0 if value == 0 else math.inf)
            bad = value > limit
        else:  # "min": cosine, snr_db
            gap = (1 - value) if name == "cosine" else -value
            allowed = (1 - limit) if name == "cosine" else -limit
            margin = gap / allowed if allowed > 0 else (0.0 if gap <= 0 else math.inf)
            bad = value < limit
        worst_margin = max(worst_margin, margin)
        if bad:
            failures.append(
                f"{name} {value:.3g} > {limit:.3g}" if direction == "max" else f"{name} {value:.6g} < {limit:.6g}"
            )
    if "atol" in thresholds or "rtol" in thresholds:
        atol, rtol = thresholds.get("atol", 0.0), thresholds.get("rtol", 0.0)
        allowed = thresholds.get("frac_outside", 0.0) * metrics.numel
        minimum["atol"] = metrics.min_atol
        minimum["rtol"] = metrics.min_rtol
        # the share of the atol budget used at the rule's rtol (1 = exactly at the limit)
        worst_margin = max(
            worst_margin, metrics.min_atol / atol if atol > 0 else (0.0 if metrics.min_atol <= 0 else math.inf)
        )
        if metrics.n_outside > allowed:
            failures.append(f"{metrics.n_outside} of {metrics.numel} elements outside atol={atol:g} rtol={rtol:g}, "
                            f"first at {metrics.first_outside}")  # fmt: skip
    status = FAIL if failures else PASS
    return status, worst_margin, "; ".join(failures), minimum


def _want(key: str, modules: list[str] | None) -> bool:
    return modules is None or any(fnmatch.fnmatchcase(key, pattern) for pattern in modules)


def _output_leaves(case: Case, key: str, call: int) -> list[LeafRecord]:
    return [leaf for leaf in case.leaves(key, call) if leaf.is_tensor and leaf.role.startswith("outputs")]


def _input_leaves(case: Case, key: str, call: int) -> list[LeafRecord]:
    return [leaf for leaf in case.leaves(key, call) if leaf.is_tensor and not leaf.role.startswith("outputs")]


# -- isolated -----------------------------------------------------------------------------------------------


def run_isolated(case: Case, candidate: Candidate, judge: Judge, options: CheckOptions,
                 result: CaseResult, keeper: FailingKeeper | None = None) -> None:  # fmt: skip
    calls = [c for c in case.calls_by_completion() if _want(c.key, options.modules)]
    for index, call in enumerate(calls):
        if options.on_progress:
            options.on_progress(f"{case.name} isolated", index, len(calls))
        leaves = _output_leaves(case, call.key, call.call)
        if not leaves:
            continue
        seq = (call.seq_start, call.seq_end)
        if not candidate.covers(call):
            for leaf in leaves:
                r = TensorResult(case.name, "isolated", leaf.key, leaf.call, leaf.role, NOT_COVERED, leaf.dtype,
                                 list(leaf.shape), seq_start=seq[0], seq_end=seq[1],
                                 message="the candidate does not implement this module")  # fmt: skip
                result.tensors.append(r)
            continue
        args, kwargs = case.call_inputs(call.key, call.call)
        try:
            outputs = candidate.run_isolated(case, call, args, kwargs)
        except NotCovered:
            for leaf in leaves:
                result.tensors.append(TensorResult(case.name, "isolated", leaf.key, leaf.call, leaf.role, NOT_COVERED,
                                                   leaf.dtype, list(leaf.shape), seq_start=seq[0], seq_end=seq[1],
                                                   message="the candidate does not implement this module"))  # fmt: skip
            continue
        except Exception as exc:  # a candidate's crash is a verdict on that module, not the end of the run
            message = f"the candidate raised {type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
            for leaf in leaves:
                result.tensors.append(TensorResult(case.name, "isolated", leaf.key, leaf.call, leaf.role, ERROR,
                                                   leaf.dtype, list(leaf.shape), seq_start=seq[0], seq_end=seq[1],
                                                   message=message))  # fmt: skip
            continue
        produced = flatten_numpy(outputs, "outputs", top=True)
        for leaf in leaves:
            tensor = judge.judge(leaf, produced.get(leaf.role), seq)
            result.tensors.append(tensor)
            if keeper is not None:
                keeper.offer(tensor, produced.get(leaf.role))
            if judge.policy.tokens.is_logits(leaf.key) and tensor.status != NOT_COVERED:
                _teacher_forced(case, leaf, produced.get(leaf.role), judge.policy, result)


def _teacher_forced(case: Case, leaf: LeafRecord, value: Any, policy: Policy, result: CaseResult) -> None:
    if not isinstance(value, np.ndarray) or tuple(value.shape) != tuple(leaf.shape) or not leaf.shape:
        return
    golden = last_position(case.tensor(leaf))
    mine = last_position(value)
    for row in range(golden.shape[0]):
        finding = classify(golden[row], mine[row], policy.tokens.near_tie_margin)
        finding_record = TokenFinding(case.name, "teacher_forced", leaf.key, leaf.call, finding.classification,
                                      finding.golden_token, finding.candidate_token, finding.golden_second,
                                      finding.margin, position=row)  # fmt: skip
        result.tokens.append(finding_record)


# -- chained --------------------------------------------------------------------------------------------------


class _ChainedSink:
    """Receives the candidate's calls and judges each against the golden call with the same key and index."""

    def __init__(self, case: Case, judge: Judge, options: CheckOptions, result: CaseResult,
                 keeper: FailingKeeper | None = None) -> None:  # fmt: skip
        self.case = case
        self.keeper = keeper
        self.judge = judge
        self.options = options
        self.result = result
        self.counts: dict[str, int] = defaultdict(int)
        self.stack: dict[str, list[int]] = defaultdict(list)
        self.seen: set[tuple[str, int]] = set()
        self.extra_calls: dict[str, int] = defaultdict(int)  # beyond the golden's calls of a recorded module
        self.unrecorded: dict[str, int] = defaultdict(int)  # of modules the golden did not record (not hooked)
        self.kept: dict[tuple[str, int], dict[str, Any]] = {}
        self.total = len(case.calls())
        self.done = 0

    def __call__(self, key: str, phase: str, args: tuple[Any, ...], kwargs: dict[str, Any], outputs: Any) -> None:
        try:
            self._handle(key, phase, args, kwargs, outputs)
        except Exception as exc:  # the checker's own failure must not be blamed on the candidate
            raise CheckerError(f"while checking {key} ({phase}): {type(exc).__name__}: {exc}") from exc

    def _handle(self, key: str, phase: str, args: tuple[Any, ...], kwargs: dict[str, Any], outputs: Any) -> None:
        if phase == "call":
            index = self.counts[key]
            self.counts[key] += 1
            self.stack[key].append(index)
            if self.case.has_call(key, index) and _want(key, self.options.modules):
                record = self.case.get_call(key, index)
                produced = {**flatten_numpy(tuple(args), "args"), **flatten_numpy(dict(kwargs), "kwargs")}
                for leaf in _input_leaves(self.case, key, index):
                    self.result.tensors.append(
                        self.judge.judge(leaf, produced.get(leaf.role), (record.seq_start, record.seq_end))
                    )
            return
        index = self.stack[key].pop()
        if not self.case.has_call(key, index):
            (self.unrecorded if not self.case.has_call(key, 0) else self.extra_calls)[key] += 1
            return
        self.seen.add((key, index))
        self.done += 1
        if self.options.on_progress and self.done % 10 == 0:
            self.options.on_progress(f"{self.case.name} chained", self.done, self.total)
        if not _want(key, self.options.modules):
            return
        record = self.case.get_call(key, index)
        produced = flatten_numpy(outputs, "outputs", top=True)
        if key in self.options.keep:
            self.kept[(key, index)] = {role: np.array(v) for role, v in produced.items() if isinstance(v, np.ndarray)}
        for leaf in _output_leaves(self.case, key, index):
            tensor = self.judge.judge(leaf, produced.get(leaf.role), (record.seq_start, record.seq_end))
            self.result.tensors.append(tensor)
            if self.keeper is not None and (key, index) not in self.kept:
                self.keeper.offer(tensor, produced.get(leaf.role))


def run_chained(case: Case, candidate: Candidate, judge: Judge, options: CheckOptions, result: CaseResult,
                keeper: FailingKeeper | None = None) -> dict[tuple[str, int], dict[str, Any]]:  # fmt: skip
    sink = _ChainedSink(case, judge, options, result, keeper)
    if not candidate.can_chain(case):
        message = "the candidate cannot run this case end to end"
        _mark_unseen(case, options, result, sink.seen, message)
        return {}
    try:
        candidate.run_chained(case, sink)
    except CheckerError:
        raise
    except NotCovered as exc:
        result.notes.append(f"chained run not covered: {exc}")
    except Exception as exc:
        result.notes.append(
            f"chained run stopped: the candidate raised {type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
        )
        _mark_unseen(case, options, result, sink.seen, f"not reached: the candidate raised {type(exc).__name__}", ERROR)
        return sink.kept
    if sink.extra_calls:
        shown = ", ".join(f"{key} ×{n}" for key, n in list(sink.extra_calls.items())[:5])
        result.notes.append(f"the candidate made {sum(sink.extra_calls.values())} more calls of recorded modules "
                            f"than the golden has: {shown}")  # fmt: skip
    if sink.unrecorded:
        roots = sorted({key.split(".")[0].split(":")[0] or key for key in sink.unrecorded})
        result.notes.append(f"{sum(sink.unrecorded.values())} calls of {len(sink.unrecorded)} modules the golden "
                            f"did not record (under {', '.join(roots)}) were not checked")  # fmt: skip
    _mark_unseen(case, options, result, sink.seen, "the candidate never made this call")
    return sink.kept


def _mark_unseen(case: Case, options: CheckOptions, result: CaseResult, seen: set[tuple[str, int]], message: str,
                 status: str = NOT_COVERED) -> None:  # fmt: skip
    for call in case.calls_by_completion():
        if (call.key, call.call) in seen or not _want(call.key, options.modules):
            continue
        for leaf in _output_leaves(case, call.key, call.call):
            result.tensors.append(TensorResult(case.name, "chained", leaf.key, leaf.call, leaf.role, status, leaf.dtype,
                                               list(leaf.shape), seq_start=call.seq_start, seq_end=call.seq_end,
                                               message=message))  # fmt: skip


# -- blame, growth, tokens -------------------------------------------------------------------------------------


def blame(result: CaseResult, mode: str) -> Blame | None:
    by_call: dict[tuple[str, int], list[TensorResult]] = defaultdict(list)
    for tensor in result.tensors:
        if tensor.mode == mode:
            by_call[(tensor.key, tensor.call)].append(tensor)
    ordered = sorted(by_call.items(), key=lambda item: item[1][0].seq_end)
    for (key, call), tensors in ordered:
        outputs = [t for t in tensors if not t.is_input]
        inputs = [t for t in tensors if t.is_input]
        failing = [t for t in outputs if t.status in (FAIL, ERROR)]
        if not failing:
            continue
        if any(t.status in (FAIL, ERROR) for t in inputs):
            continue
        reason = "; ".join(f"{t.role}: {t.message}" for t in failing[:3])
        return Blame(mode, key, call, failing[0].seq_end, reason, [t.name for t in failing], [t.name for t in inputs])
    return None


def growth(result: CaseResult) -> list[GrowthPoint]:
    points: dict[tuple[str, int], GrowthPoint] = {}
    for tensor in result.tensors:
        point = points.setdefault((tensor.key, tensor.call), GrowthPoint(tensor.key, tensor.call, tensor.seq_end))
        metrics = tensor.metrics or {}
        rel = metrics.get("rel_l2") if isinstance(metrics.get("rel_l2"), (int, float)) else None
        mx = metrics.get("max_abs") if isinstance(metrics.get("max_abs"), (int, float)) else None
        if tensor.is_input:
            if tensor.mode == "chained" and rel is not None:
                point.input_rel_l2 = max(point.input_rel_l2 or 0.0, rel)
            continue
        if tensor.mode == "chained":
            if rel is not None:
                point.chained_rel_l2 = max(point.chained_rel_l2 or 0.0, rel)
            if mx is not None:
                point.chained_max_abs = max(point.chained_max_abs or 0.0, mx)
            if "rel_l2" in tensor.thresholds:
                point.threshold_rel_l2 = max(point.threshold_rel_l2 or 0.0, tensor.thresholds["rel_l2"])
        else:
            if rel is not None:
                point.isolated_rel_l2 = max(point.isolated_rel_l2 or 0.0, rel)
            if mx is not None:
                point.isolated_max_abs = max(point.isolated_max_abs or 0.0, mx)
        if tensor.status in (FAIL, ERROR):
            point.status = FAIL
    return sorted(points.values(), key=lambda p: p.seq_end)


def free_running(case: Case, kept: dict[tuple[str, int], dict[str, Any]], policy: Policy, result: CaseResult,
                 subject: Any) -> None:  # fmt: skip
    """First divergent (frame, codebook) of generated codes, classified by the golden's top-1 margin."""
    if subject is None or not hasattr(subject, "codes"):
        return
    located = subject.codes(case)
    if located is None:
        return
    (key, call, role) = located
    mine = kept.get((key, call), {}).get(role)
    if mine is None:
        return
    golden = case.tensor(key, call, role)
    if mine.shape != golden.shape or np.array_equal(mine, golden):
        if mine.shape != golden.shape:
            result.first_divergence = {"frame": None, "codebook": None, "classification": "length",
                                       "message": f"generated {list(mine.shape)} codes, golden {list(golden.shape)}"}  # fmt: skip
        return
    frame, codebook = (int(i) for i in np.argwhere(mine != golden)[0])
    info: dict[str, Any] = {"frame": frame, "codebook": codebook, "golden_token": int(golden[frame, codebook]),
                            "candidate_token": int(mine[frame, codebook])}  # fmt: skip
    logits_at = subject.logits(case, frame, codebook)
    if logits_at is not None:
        logits_key, logits_call = logits_at
        logits = last_position(case.tensor(logits_key, logits_call, "outputs/0"))[0]
        finding = classify(logits, None, policy.tokens.near_tie_margin, candidate_token=int(mine[frame, codebook]))
        info.update(classification=finding.classification, margin=finding.margin, golden_second=finding.golden_second,
                    logits=f"{logits_key}#{logits_call}")  # fmt: skip
        result.tokens.append(TokenFinding(case.name, "free_running", logits_key, logits_call, finding.classification,
                                          finding.golden_token, int(mine[frame, codebook]), finding.golden_second,
                                          finding.margin, frame=frame, codebook=codebook))  # fmt: skip
        seq = case.get_call(logits_key, logits_call).seq_end
        info["seq_end"] = seq
        if policy.tokens.allow_ties and finding.classification in ("exact_tie", "near_tie"):
            # Everything after a tie-broken token legitimately differs: not a failure of the candidate.
            for tensor in result.tensors:
                if tensor.mode == "chained" and tensor.seq_end > seq and tensor.status in (FAIL, ERROR):
                    tensor.status = SKIPPED
                    tensor.message = f"after the generated codes diverged on a {finding.classification} at frame {frame}, codebook {codebook}"
    result.first_divergence = info


# -- the run ----------------------------------------------------------------------------------------------------


def check(store: GoldenStore, candidate: Candidate, policy: Policy, options: CheckOptions) -> RunResult:
    started = time.time()
    names = options.cases or store.cases
    missing = [n for n in names if n not in store.cases]
    if missing:
        from ..errors import UsageError

        raise UsageError(
            f"no case {missing[0]!r} in the golden store (cases: {', '.join(store.cases)})", path=store.path
        )
    first = store.case(names[0]) if names else None
    run = RunResult(
        candidate=candidate.description,
        goldens=str(store.path),
        policy=policy.describe(),
        command=options.command,
        started_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        seconds=0.0,
        golden_provenance=_provenance_summary(store, first),
        modes=list(options.modes),
        allow_partial=options.allow_partial,
    )
    keeper = FailingKeeper(options.keep_failing, options.keep_failing_bytes) if options.keep_failing > 0 else None
    for name in names:
        case = store.case(name)
        result = CaseResult(name, case.provenance.get("family", ""), case.dtype, list(options.modes),
                            description=case.provenance.get("description", ""))  # fmt: skip
        reference = _reference_case(options.reference, case, result, policy)
        if options.reference is None and _calibrates_chained(policy, case, options):
            reason = options.reference_note or "no float64 reference recording of this golden was found"
            result.notes.append(fallback_note(reason, policy, case))
        stage = "prepare"
        try:
            candidate.prepare(store, case)
            if "isolated" in options.modes:
                stage = "isolated"
                t = time.time()
                run_isolated(case, candidate, Judge(policy, case, reference, "isolated"), options, result, keeper)
                result.seconds["isolated"] = round(time.time() - t, 3)
                result.blame["isolated"] = blame(result, "isolated")
                candidate.review(case, result, "isolated")
            if "chained" in options.modes:
                stage = "chained"
                t = time.time()
                keep = set(options.keep)
                if options.subject is not None and hasattr(options.subject, "keep"):
                    keep |= set(options.subject.keep(case))
                chained_options = CheckOptions(**{**options.__dict__, "keep": keep})
                kept = run_chained(case, candidate, Judge(policy, case, reference, "chained"), chained_options, result,
                                   keeper)  # fmt: skip
                free_running(case, kept, policy, result, options.subject)
                result.seconds["chained"] = round(time.time() - t, 3)
                result.blame["chained"] = blame(result, "chained")
                candidate.review(case, result, "chained")
                run.artifacts[name] = kept
        except (ConformanceError, CheckerError, KeyboardInterrupt):
            raise  # bad input (exit 2 with its one line) or a bug of the checker: never a verdict on the candidate
        except Exception as exc:  # the candidate crashed: an error verdict for this case, the other cases still run
            result.error = case_error(stage, exc)
        finally:
            candidate.release()
        for index, roles in (keeper.kept.pop(name, {}) if keeper is not None else {}).items():
            slot = run.artifacts.setdefault(name, {}).setdefault(index, {})
            for role, value in roles.items():
                slot.setdefault(role, value)
        result.growth = growth(result)
        run.cases.append(result)
    run.notes.extend(calibration_notes(run.cases))
    run.candidate = candidate.description  # after loading: a candidate may only then know what it is
    try:
        run.candidate_provenance = candidate.provenance()
    except Exception as exc:  # a candidate that cannot describe itself is still judged
        run.candidate_provenance = {"kind": candidate.name, "label": run.candidate,
                                    "error": f"{type(exc).__name__}: {exc}"}  # fmt: skip
    run.seconds = time.time() - started
    return run


def case_error(stage: str, exc: BaseException) -> CaseError:
    """A candidate's exception as a case's error verdict: its one-line message, the traceback kept whole."""
    import traceback

    if isinstance(exc, CandidateCrash):
        stage, exc = exc.stage, exc.original
    message = " ".join(str(exc).split())[:500] or "(no message)"
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return CaseError(stage, type(exc).__name__, message, text)


CALIBRATION_FALLBACK = "calibration fallback"  # the prefix of the notes that say chained thresholds fell back


def fallback_note(reason: str, policy: Policy, case: Case | None = None) -> str:
    if case is not None and not case.oracle_records():
        return (f"{CALIBRATION_FALLBACK}: {reason}, and the golden holds no isolated noise either (recorded "
                "without the oracle): chained thresholds are the policy's per-dtype defaults")  # fmt: skip
    return (f"{CALIBRATION_FALLBACK}: {reason}; chained thresholds use each tensor's isolated noise, carried "
            f"along the data flow, x{policy.calibration.fallback_factor:g} (calibration.fallback_factor) instead "
            "of its chained float32-vs-float64 noise")  # fmt: skip


def _calibrates_chained(policy: Policy, case: Case, options: CheckOptions) -> bool:
    """Whether this case's chained thresholds would be calibrated on a float64 reference."""
    return policy.calibration.enabled and "chained" in options.modes and case.dtype != "float64"


def calibration_notes(cases: list[CaseResult]) -> list[str]:
    """The run-wide notes of the cases whose chained thresholds fell back: one per reason, naming the cases."""
    by_note: dict[str, list[str]] = defaultdict(list)
    for case in cases:
        for note in case.notes:
            if note.startswith(CALIBRATION_FALLBACK):
                by_note[note].append(case.case)
    out = []
    for note, names in by_note.items():
        scope = "every case" if len(names) == len(cases) else f"{len(names)} case(s): {', '.join(names)}"
        out.append(f"{note} ({scope})")
    return out


def _reference_case(reference: GoldenStore | None, case: Case, result: CaseResult,
                    policy: Policy | None = None) -> Case | None:  # fmt: skip
    if reference is None or case.dtype == "float64":
        return None
    if case.name not in reference.cases:
        if policy is not None:
            missing = f"the float64 reference {reference.path} has no case {case.name}"
            result.notes.append(fallback_note(missing, policy, case))
        return None
    ref = reference.case(case.name)
    # A discrete decision that differs between the float32 and float64 runs makes every later tensor differ
    # wholesale: chained noise is then not a noise measurement. Fall back to the scaled isolated noise.
    for name in case.output_names():
        mine, theirs = case.output(name), ref.output(name)
        discrete = isinstance(mine, np.ndarray) and mine.dtype.kind in "iub"
        if discrete and not (
            isinstance(theirs, np.ndarray) and mine.shape == theirs.shape and np.array_equal(mine, theirs)
        ):
            if policy is not None:
                result.notes.append(fallback_note(f"the float64 reference generated different {name}", policy, case))
            return None
    return ref


def _provenance_summary(store: GoldenStore, case: Case | None) -> dict[str, Any]:
    p = case.provenance if case is not None else {}
    return {
        "path": str(store.path),
        "created_utc": store.created_utc,
        "official_package": p.get("official_package"),
        "official_version": p.get("official_version"),
        "torch": p.get("torch_version"),
        "transformers": p.get("transformers_version"),
        "weights_sha256": p.get("weights_sha256"),
        "config": p.get("config"),
        "dtype": p.get("dtype"),
        "size": p.get("size"),
        "seed": p.get("seed"),
        "threads": p.get("threads"),
        "attn_implementation": p.get("attn_implementation"),
        "software": store.software,
    }


@dataclass
class ReferenceLookup:
    """The float64 reference of a golden store, or why there is none (`note`, for the fallback note)."""

    path: Path | None
    note: str = ""


def locate_reference(store_path: Path) -> ReferenceLookup:
    """The float64 golden paired with a float32 golden: the twin the store names (`record` writes it beside
    the store and names it in a root attribute, with the twin's recording id), else the manifest.json beside
    the store (the committed goldens)."""
    import json

    from ..store.schema import REFERENCE64_ATTR

    try:
        with GoldenStore(store_path) as store:
            named = store.float64_reference
            dtypes = {store.case(name).dtype for name in store.cases[:1]}
    except ConformanceError:
        return ReferenceLookup(None)  # the check itself reports the unreadable store
    if dtypes == {"float64"}:
        return ReferenceLookup(None)
    if named is not None:
        twin = store_path.parent / str(named.get("path", ""))
        if not twin.is_file():
            return ReferenceLookup(None, f"the golden names its float64 reference {twin}, which is missing (keep "
                                         "the two files together, or pass --reference64)")  # fmt: skip
        try:
            with GoldenStore(twin) as reference:
                same = reference.recording_id == named.get("recording_id")
        except ConformanceError as exc:
            return ReferenceLookup(None, f"the golden's float64 reference is unusable: {exc}")
        if not same:
            return ReferenceLookup(None, f"{twin} is not the float64 reference recorded with this golden (its "
                                         f"recording id differs from the one the golden's {REFERENCE64_ATTR} "
                                         "attribute names: it was re-recorded or replaced)")  # fmt: skip
        return ReferenceLookup(twin)
    manifest = store_path.parent / "manifest.json"
    if manifest.exists():
        try:
            data = json.loads(manifest.read_text())
        except (OSError, ValueError):
            data = {}
        for entry in data.get("stores", []) if isinstance(data, dict) else []:
            if entry.get("path") == store_path.name and entry.get("float64_reference"):
                candidate = store_path.parent / entry["float64_reference"]
                if candidate.exists():
                    return ReferenceLookup(candidate)
                return ReferenceLookup(None, f"{manifest} pairs the golden with {candidate}, which is missing")
    return ReferenceLookup(None, "the golden names no float64 reference (recorded with --no-reference64, or "
                                 "before `record` wrote one) and no manifest.json beside it pairs one")  # fmt: skip


def find_reference(store_path: Path) -> Path | None:
    """The float64 golden paired with a float32 golden (see locate_reference), or None."""
    return locate_reference(store_path).path
