"""The check engine: compare a candidate with a golden store, module by module (numpy only).

Two modes, both always available, and a third on request:

* isolated: each call the candidate implements is run on its golden inputs; its outputs are compared
  with the golden outputs of that call. An error here is the module's own.
* chained: the candidate runs each case from the case's inputs; every call it reports is matched to
  the golden call with the same module key and call index, and its inputs and outputs are compared.
  This shows how error grows along the pipeline.
* repeat (`CheckOptions.repeat` >= 2, with chained): the candidate runs each case again; every tensor of runs
  2..N is compared bit for bit with run 1 (by CRC-32, shape and dtype, kept as the tensors pass: never the
  arrays), and the first call whose outputs differ between runs while its inputs did not is blamed as
  nondeterministic (an uninitialised buffer, a race, an unseeded sampler).

Thresholds come from the tolerance policy; with calibration on, a tensor's threshold is k times the
official float32-vs-float64 noise of that very tensor (isolated noise measured at record time; chained
noise measured between the float32 golden and its float64 reference golden). Blame is the first call,
in execution (completion) order, whose inputs conform and whose outputs do not.
"""

from __future__ import annotations

import fnmatch
import math
import time
import traceback
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import subjects
from ..errors import ConformanceError, UsageError
from ..metrics import CHUNK_ELEMENTS, MetricAccumulator, Metrics, compare_arrays, noise_metrics
from ..precisions import noise_mode, record_command
from ..store import manifest, tree
from ..store.producers import producers
from ..store.reader import Case, GoldenStore, ObjectValue
from ..store.schema import REFERENCE64_ATTR, LeafRecord, checksum
from ..store.writer import summarize
from .candidate import Candidate, CandidateCrash, GoldenSlice, InterfaceMismatch, NotCovered
from .outputs import (
    BLACK_BOX_NOTE,
    OUTPUTS,
    length_difference,
    prefix,
    run_candidate_references,
    run_outputs,
    sequence_axis,
)
from .policy import THRESHOLDS, Policy
from .results import (
    ERROR,
    FAIL,
    INTERFACE,
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
# a case note a candidate adds when its tensors say it runs at another precision than it is judged at (a float16
# dump judged on float32 noise): lifted to the run's notes, which the console prints
PRECISION_HINT = "precision hint"
BEYOND_PRECISION = "beyond the precision"  # a tensor past a decision the official model itself flips at the precision


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
    # the subject of every case (its tokens, signals, retained outputs: conformance.subjects.Subject); None: each
    # case's own, named in its golden provenance and found through the registry
    subject: Any = None
    keep: set[str] = field(default_factory=set)  # module keys whose candidate outputs are kept for the report
    keep_failing: int = 4  # failing calls per case and mode whose candidate outputs are kept for the report
    keep_failing_bytes: int = 8 << 20  # byte budget per run for those
    repeat: int = 1  # chained runs per case; from 2 on, runs 2..N are compared bit for bit with run 1 (mode "repeat")
    # re-run the official model on the candidate's own outputs (Subject.reference_from_candidate: needs torch)
    reference_from_candidate: bool = False
    checkpoint: Path | None = None  # where those official weights are (default: the golden's provenance)
    precision: str | None = None  # the candidate's precision, over the policy's (conformance/precisions.py)


def _is_array(value: Any) -> bool:
    return isinstance(value, np.ndarray)


def flatten_numpy(value: Any, root: str, top: bool = False) -> dict[str, Any]:
    """Name a candidate's leaves the way the recorder names golden leaves."""
    return tree.flatten(value, root, top, is_tensor=lambda v: isinstance(v, (np.ndarray, np.generic, GoldenSlice)))


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

    def __init__(self, policy: Policy, case: Case, reference: Case | None, mode: str,
                 axes: list[Any] | None = None) -> None:  # fmt: skip
        self.policy = policy
        self.case = case
        self.reference = reference
        self.mode = mode
        self.axes = axes or []  # the subject's sequence axes (SequenceAxis): another length there is a divergence
        self._noise_cache: dict[tuple[str, int, str], dict[str, float] | None] = {}
        self._sampled: dict[tuple[str, str], dict[str, float]] | None = None
        self._carried: Any = None

    def noise(self, leaf: LeafRecord) -> dict[str, float] | None:
        """The official float32-vs-float64 noise of this tensor. Isolated: the oracle's re-run of this call
        on the same inputs. Chained: the float32 golden against its float64 reference. Calls the oracle
        does not re-run (whole generation loops) use the reference comparison in both modes: run from
        their recorded inputs, their outputs differ from float64 exactly as in a chained run."""
        return self._noise(leaf)[0]

    def precision(self, leaf: LeafRecord) -> str | None:
        """The precision this tensor is judged at (None: float32, the golden's own noise)."""
        return self.policy.precision_for(leaf.key, leaf.role, leaf.dtype, self.mode)

    def near_tie_margin(self, leaf: LeafRecord) -> float:
        """The top-1 margin below which a flip of these logits is a near tie: the policy's, widened at a reduced
        precision to twice the largest error that precision's official twin made on these very logits (two logits
        each off by that much swap when their gap is below twice it)."""
        margin = self.policy.tokens.near_tie_margin
        precision = self.precision(leaf)
        noise = self._twin_noise(leaf, precision) if precision is not None else None
        largest = (noise or {}).get("max_abs")
        return max(margin, 2 * largest) if largest is not None and math.isfinite(largest) else margin

    def _twin_record(self, leaf: LeafRecord, precision: str) -> Any:
        """The precision twin's record of this tensor: isolated, the twin's re-run of the call on the golden inputs
        (else, for calls the oracle does not re-run, its whole-case run); chained, its whole-case run. Both
        against the clean float64 oracle."""
        modes = [noise_mode(self.mode, precision)]
        if self.mode == "isolated":
            modes.append(noise_mode("chained", precision))
        for mode in modes:
            record = self.case.oracle(leaf.key, leaf.call, leaf.role, mode)
            if record is not None:
                return record
        return None

    def _twin_noise(self, leaf: LeafRecord, precision: str) -> dict[str, float] | None:
        """The noise of the official model at `precision` for this tensor (see _twin_record)."""
        record = self._twin_record(leaf, precision)
        return dict(record.metrics) if record is not None and record.status == "ok" else None

    def beyond_precision(self, leaf: LeafRecord) -> str | None:
        """Why this tensor cannot be judged at the precision it is judged at, or None: the official model at that
        precision itself took another discrete decision than float64 (a code, a token) at or before it, so past
        that decision there is no reference at that precision. The decisions themselves are classified by the
        token checks (near ties at the precision's own margin)."""
        precision = self.precision(leaf)
        record = self._twin_record(leaf, precision) if precision is not None else None
        if record is None or record.status != "discrete_mismatch":
            return None
        return (f"{BEYOND_PRECISION}: the official model at {precision} itself takes another discrete decision than "
                f"float64 {'in this call' if self.mode == 'isolated' else 'at or before this tensor'}")  # fmt: skip

    def _noise(self, leaf: LeafRecord) -> tuple[dict[str, float] | None, bool]:
        """(noise, whether it is the calibration fallback standing in for a chained noise: _fallback_noise)."""
        precision = self.precision(leaf)
        if precision is not None:
            return self._twin_noise(leaf, precision), False
        if self.mode == "isolated":
            record = self.case.oracle(leaf.key, leaf.call, leaf.role)
            if record is not None:
                return (dict(record.metrics) if record.status == "ok" else None), False
            sampled = self._sampled_noise().get((leaf.key, leaf.role))
            if sampled is not None:  # a sampled oracle skipped this call: its module's largest sampled noise
                return dict(sampled), False
            return (self._chained_noise(leaf) if self.reference is not None else None), False
        if self.reference is None:
            return self._fallback_noise(leaf), True
        return self._chained_noise(leaf), False

    def _sampled_noise(self) -> dict[tuple[str, str], dict[str, float]]:
        """(key, role) -> the largest isolated noise of each metric over the module's re-run calls, for a golden
        recorded with a sampled oracle (`record --oracle-sample`: calls 0, 1, 2, 4, 8... of each module)."""
        if self._sampled is None:
            found: dict[tuple[str, str], dict[str, float]] = {}
            if "sampled" in str(self.case.provenance.get("oracle", "")):
                for record in self.case.oracle_records():
                    if record.mode != "isolated" or record.status != "ok":
                        continue
                    slot = found.setdefault((record.key, record.role), {})
                    for name, value in record.metrics.items():
                        if value == value and value is not None:
                            slot[name] = max(slot.get(name, value), value)
            self._sampled = found
        return self._sampled

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
                    if mine is None:  # a call a sampled oracle skipped: its module's largest sampled noise
                        mine = self._sampled_noise().get((leaf.key, leaf.role), {}).get("rel_l2")
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
        beyond = self.beyond_precision(leaf)
        if beyond is not None:
            result.status, result.message, result.precision = SKIPPED, beyond, self.precision(leaf) or ""
            return result
        if value is None:
            result.status, result.message = NOT_COVERED, "the candidate produced no such tensor"
            return result
        if isinstance(value, GoldenSlice):
            return self._judge_slice(result, leaf, value)
        if isinstance(value, ObjectValue) or not isinstance(value, (np.ndarray, np.generic)):
            result.status, result.message = FAIL, f"expected a tensor, got {type(value).__name__}"
            return self._apply_xfail(result, None)
        candidate = np.asarray(value)
        golden_float = leaf.dtype in FLOAT_DTYPES
        same_form = tuple(candidate.shape) == tuple(leaf.shape) and golden_float == (candidate.dtype.kind in "fc")
        if not same_form and leaf.tier == "full" and not leaf.role.startswith("outputs"):
            # A module's input may differ from the golden in representation only (position ids as int64 where the
            # golden holds float32, [1, L] where it holds [3, 1, L]): what the module computes with is its value.
            return self._judge_input_by_value(result, leaf, candidate)
        if tuple(candidate.shape) != tuple(leaf.shape):
            along = sequence_axis(self.axes, result.name)
            if along is not None and leaf.tier == "full" and length_difference(leaf.shape, candidate.shape, along.axis):
                return self._judge_prefix(result, leaf, candidate, along.axis)
            result.status = FAIL
            result.message = f"shape mismatch: candidate {list(candidate.shape)} vs golden {list(leaf.shape)}"
            return self._apply_xfail(result, None)
        if golden_float != (candidate.dtype.kind in "fc"):
            result.status = FAIL
            result.message = f"dtype mismatch: candidate {candidate.dtype.name} vs golden {leaf.dtype}"
            return self._apply_xfail(result, None)
        if leaf.tier != "full":
            return self._judge_summary(result, leaf, candidate)
        if golden_float and self.policy.is_mask(leaf.role):
            return self._judge_mask(result, leaf, candidate)
        if not golden_float:
            return self._judge_exact(result, self.case.tensor(leaf), candidate)
        return self._judge_float(result, leaf, lambda atol, rtol: self._metrics(leaf, candidate, atol, rtol))

    def _judge_slice(self, result: TensorResult, leaf: LeafRecord, sliced: GoldenSlice) -> TensorResult:
        """A candidate value that covers part of the golden tensor (a map's `slice`): judged against that part of
        the golden, under the tensor's own thresholds; the note says which part."""
        candidate = np.asarray(sliced.value)
        result.note = f"compared on the golden's {sliced.text}: {list(candidate.shape)} of {list(leaf.shape)}"
        if leaf.tier != "full":
            result.status = NOT_COVERED
            result.message = (
                f"the golden keeps only a {leaf.tier} summary of this tensor: {sliced.text} cannot be taken"
            )
            return result
        golden = self.case.tensor(leaf)[sliced.index]
        if tuple(candidate.shape) != tuple(golden.shape):
            result.status = FAIL
            result.message = (f"shape mismatch: candidate {list(candidate.shape)} vs golden{sliced.text} "
                              f"{list(golden.shape)}")  # fmt: skip
            return self._apply_xfail(result, None)
        golden_float = leaf.dtype in FLOAT_DTYPES
        if golden_float != (candidate.dtype.kind in "fc"):
            result.status = FAIL
            result.message = f"dtype mismatch: candidate {candidate.dtype.name} vs golden {leaf.dtype}"
            return self._apply_xfail(result, None)
        if golden_float and self.policy.is_mask(leaf.role):
            return self._judge_mask(result, leaf, candidate, golden)
        if not golden_float:
            return self._judge_exact(result, golden, candidate)
        return self._judge_float(
            result, leaf, lambda atol, rtol: compare_arrays(golden, candidate, dtype=leaf.dtype, atol=atol, rtol=rtol)
        )

    def _judge_prefix(self, result: TensorResult, leaf: LeafRecord, candidate: np.ndarray, axis: int) -> TensorResult:
        """A tensor of another length along a sequence axis (another number of generated or encoded frames): a
        divergence, with both lengths and the verdict on the common prefix in its message."""
        golden = self.case.tensor(leaf)
        g_len, c_len = golden.shape[axis], candidate.shape[axis]
        common = min(g_len, c_len)
        g, c = prefix(golden, axis, common), prefix(candidate, axis, common)
        if golden.dtype.kind == "f" and candidate.dtype.kind in "fc":
            resolved = self.policy.resolve(leaf.key, leaf.role, leaf.dtype, self.mode, self.noise(leaf))
            metrics = compare_arrays(g, c.astype(g.dtype), dtype=leaf.dtype, atol=resolved.thresholds.get("atol", 0.0),
                                     rtol=resolved.thresholds.get("rtol", 0.0))  # fmt: skip
            thresholds = resolved.final({"rel_l2": 1.0, "max_rel": 1.0, "max_abs": metrics.ref_max_abs,
                                         "mean_abs": metrics.ref_rms, "max_ulp": 1.0})  # fmt: skip
            verdict, _, why, _ = _verdict(metrics, thresholds)
            result.metrics, result.thresholds, result.source = metrics.as_dict(), thresholds, resolved.source
        else:
            differ = int(np.count_nonzero(g != c))
            verdict, why = (FAIL, f"{differ} of {g.size} values differ") if differ else (PASS, "")
            result.metrics, result.source = {"mismatch": differ}, "exact (discrete)"
        result.metrics = {**(result.metrics or {}), "candidate_length": c_len, "golden_length": g_len,
                          "common_prefix": common}  # fmt: skip
        result.status = FAIL
        result.message = (f"length {c_len} where the golden has {g_len} along sequence axis {axis}: the common prefix "
                          f"of {common} " + (f"also differs: {why}" if verdict == FAIL else "conforms"))  # fmt: skip
        return self._apply_xfail(result, None)

    def _judge_input_by_value(self, result: TensorResult, leaf: LeafRecord, candidate: np.ndarray) -> TensorResult:
        """An input whose shape or number kind differs from the golden's, compared by value: shapes equal after
        squeezing size-1 axes or broadcasting, and integer values held in integer or float dtypes, are the same
        input to the module. The verdict says so in its note; anything else fails as a mismatch."""
        golden = self.case.tensor(leaf)
        notes = []
        if tuple(candidate.shape) != tuple(golden.shape):
            equivalent = by_value_shape(tuple(candidate.shape), tuple(golden.shape))
            if equivalent is None:
                result.status = FAIL
                result.message = (f"shape mismatch: candidate {list(candidate.shape)} vs golden {list(leaf.shape)} "
                                  "(not equal after squeezing size-1 axes or broadcasting)")  # fmt: skip
                return self._apply_xfail(result, None)
            how, shape = equivalent
            notes.append(f"shape {list(candidate.shape)} vs the golden's {list(golden.shape)}, equal after {how}")
            if how == "squeezing size-1 axes":
                candidate = candidate.reshape(golden.shape)
            else:
                candidate, golden = np.broadcast_to(candidate, shape), np.broadcast_to(golden, shape)
        golden_float = leaf.dtype in FLOAT_DTYPES
        if golden_float != (candidate.dtype.kind in "fc"):
            golden_ints, candidate_ints = integer_values(golden), integer_values(candidate)
            if golden_ints is None or candidate_ints is None:
                holder = (
                    f"the golden's {leaf.dtype}" if golden_ints is None else f"the candidate's {candidate.dtype.name}"
                )
                result.status = FAIL
                result.message = (f"dtype mismatch: candidate {candidate.dtype.name} vs golden {leaf.dtype} ({holder} "
                                  "holds values that are not integers)")  # fmt: skip
                return self._apply_xfail(result, None)
            notes.append(f"{candidate.dtype.name} vs the golden's {leaf.dtype}, integer values compared exactly")
            golden, candidate, golden_float = golden_ints, candidate_ints, False
        result.note = "compared by value: " + "; ".join(notes)
        if golden_float and self.policy.is_mask(leaf.role):
            return self._judge_mask(result, leaf, candidate, golden)
        if not golden_float:
            return self._judge_exact(result, golden, candidate)
        reference, mine = golden, candidate
        return self._judge_float(
            result, leaf, lambda atol, rtol: compare_arrays(reference, mine, dtype=leaf.dtype, atol=atol, rtol=rtol)
        )

    def _judge_exact(self, result: TensorResult, golden: np.ndarray, candidate: np.ndarray) -> TensorResult:
        """Discrete tensors (ids, codes, lengths) must be identical."""
        metrics = compare_arrays(golden, candidate)
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
        precision = self.precision(leaf)
        resolved = self.policy.resolve(leaf.key, leaf.role, leaf.dtype, self.mode, noise, precision)
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
        if precision is not None:
            result.precision = precision
            result.source += f", at {precision}"
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

    def _judge_mask(self, result: TensorResult, leaf: LeafRecord, candidate: np.ndarray,
                    golden: np.ndarray | None = None) -> TensorResult:  # fmt: skip
        """Additive attention masks hold 0 where attention is allowed and a huge negative number where it
        is not; the number itself is the dtype's minimum (official float32 and float64 runs differ) or
        -inf in many ports. What must agree is the pattern."""
        golden = self.case.tensor(leaf) if golden is None else golden
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


def by_value_shape(candidate: tuple[int, ...], golden: tuple[int, ...]) -> tuple[str, tuple[int, ...]] | None:
    """How a candidate's shape holds the golden's values, if it does: ("squeezing size-1 axes", golden shape)
    when the two differ only in axes of size 1, ("broadcasting", shape) when one broadcasts to the other's shape.
    None when neither (two shapes that only broadcast to a third one hold different values)."""
    if tuple(d for d in candidate if d != 1) == tuple(d for d in golden if d != 1):
        return "squeezing size-1 axes", golden
    try:
        common = tuple(np.broadcast_shapes(candidate, golden))
    except ValueError:
        return None
    return ("broadcasting", common) if common in (candidate, golden) else None


_EXACT_FLOAT_INTEGERS = 2.0**53  # beyond this a float no longer holds every integer


def integer_values(array: np.ndarray) -> np.ndarray | None:
    """The array as int64 when every value is an integer (integer and bool dtypes, or floats holding whole
    numbers exactly), else None."""
    if array.dtype.kind in "biu":
        return array.astype(np.int64)
    if array.dtype.kind != "f":
        return None
    values = np.asarray(array, dtype=np.float64)
    if values.size and not (np.isfinite(values).all() and (np.abs(values) <= _EXACT_FLOAT_INTEGERS).all()
                            and (values == np.round(values)).all()):  # fmt: skip
        return None
    return values.astype(np.int64)


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
                 result: CaseResult, keeper: FailingKeeper | None = None, subject: Any = None) -> None:  # fmt: skip
    subject = subject if subject is not None else options.subject
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
        except InterfaceMismatch as exc:  # its arguments do not bind: no numeric verdict (chained mode still judges)
            for leaf in leaves:
                result.tensors.append(TensorResult(case.name, "isolated", leaf.key, leaf.call, leaf.role, INTERFACE,
                                                   leaf.dtype, list(leaf.shape), seq_start=seq[0], seq_end=seq[1],
                                                   message=str(exc)))  # fmt: skip
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
                _teacher_forced(case, leaf, produced.get(leaf.role), judge.policy, result,
                                near_tie_margin=judge.near_tie_margin(leaf))  # fmt: skip
            step = model_step(subject, case, leaf)
            if step is not None and tensor.status != NOT_COVERED:
                _teacher_forced(case, leaf, produced.get(leaf.role), judge.policy, result, TEACHER_FORCED_MODEL, step,
                                subject, judge.near_tie_margin(leaf))  # fmt: skip


TEACHER_FORCED, TEACHER_FORCED_MODEL = "teacher_forced", "teacher_forced_model"


def model_step(subject: Any, case: Case, leaf: LeafRecord) -> tuple[int, ...] | None:
    """The token index (over the subject's token axes) when this golden output is the logits of a whole-model
    generation step (the subject says which): its isolated replay ran the whole model on the golden history, not
    only a logits head."""
    if subject is None:
        return None
    step = subject.model_step(case, leaf.key, leaf.call, leaf.role)
    return None if step is None else tuple(int(i) for i in step)


def _token_axes(subject: Any, case: Case) -> tuple[tuple[str, ...], int | None]:
    """The axes of the case's tokens and the one that indexes the batch rows (None: one row)."""
    layout = subject.tokens(case) if subject is not None else None
    return (tuple(layout.axes), layout.batch_axis) if layout is not None else ((), None)


def _teacher_forced(case: Case, leaf: LeafRecord, value: Any, policy: Policy, result: CaseResult,
                    mode: str = TEACHER_FORCED, step: tuple[int, ...] | None = None,
                    subject: Any = None, near_tie_margin: float | None = None) -> None:  # fmt: skip
    """Classify the candidate's top-1 on the golden history against the golden's: per logits head
    ("teacher_forced", the head re-run on golden hidden states) or per whole-model step ("teacher_forced_model",
    at the token index `step`)."""
    if not isinstance(value, np.ndarray) or tuple(value.shape) != tuple(leaf.shape) or not leaf.shape:
        return
    golden = last_position(case.tensor(leaf))
    mine = last_position(value)
    axes, batch_axis = _token_axes(subject, case) if step is not None else ((), None)
    for row in range(golden.shape[0]):
        margin = policy.tokens.near_tie_margin if near_tie_margin is None else near_tie_margin
        finding = classify(golden[row], mine[row], margin)
        index = list(step) if step is not None else None
        if index is not None and batch_axis is not None:
            index[batch_axis] = row  # row r of the step's logits chose the token of batch item r
        finding_record = TokenFinding(case.name, mode, leaf.key, leaf.call, finding.classification,
                                      finding.golden_token, finding.candidate_token, finding.golden_second,
                                      finding.margin, index=index, axes=list(axes), row=row)  # fmt: skip
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
                keeper: FailingKeeper | None = None,
                fingerprints: Fingerprints | None = None) -> dict[tuple[str, int], dict[str, Any]]:  # fmt: skip
    sink = _ChainedSink(case, judge, options, result, keeper)
    if not candidate.can_chain(case):
        message = "the candidate cannot run this case end to end"
        _mark_unseen(case, options, result, sink.seen, message)
        return {}
    try:
        candidate.run_chained(case, fingerprints.passing_to(sink) if fingerprints is not None else sink)
    except CheckerError:
        raise
    except NotCovered as exc:
        result.notes.append(f"chained run not covered: {exc}")
    except Exception as exc:  # the candidate crashed mid-case: what it produced before stays judged
        result.error = case_error("chained", exc)
        result.notes.append(
            f"chained run stopped: the candidate raised {type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
        )
        _mark_unseen(case, options, result, sink.seen, f"not reached: the candidate raised {type(exc).__name__}", ERROR)
        return sink.kept
    if sink.extra_calls:
        shown = ", ".join(f"{key} ×{n}" for key, n in list(sink.extra_calls.items())[:5])
        result.notes.append(f"the candidate made {sum(sink.extra_calls.values())} more calls of recorded modules "
                            f"than the golden has: {shown}")  # fmt: skip
    by_value = [t for t in result.tensors if t.mode == "chained" and t.is_input and t.note and t.status == PASS]
    if by_value:
        modules = list(dict.fromkeys(f"{t.key} {t.role}" for t in by_value))
        shown = ", ".join(modules[:3]) + (f" and {len(modules) - 3} more" if len(modules) > 3 else "")
        result.notes.append(f"{len(by_value)} inputs equal the golden by value only, in another dtype or shape "
                            f"(not a failure): {shown}; {by_value[0].note}")  # fmt: skip
    if sink.unrecorded:
        roots = sorted({key.split(".")[0].split(":")[0] or key for key in sink.unrecorded})
        result.notes.append(f"{sum(sink.unrecorded.values())} calls of {len(sink.unrecorded)} modules the golden "
                            f"did not record (under {', '.join(roots)}) were not checked")  # fmt: skip
    _mark_unseen(case, options, result, sink.seen, "the candidate never made this call", judge=judge)
    return sink.kept


def _mark_unseen(case: Case, options: CheckOptions, result: CaseResult, seen: set[tuple[str, int]], message: str,
                 status: str = NOT_COVERED, judge: Judge | None = None) -> None:  # fmt: skip
    for call in case.calls_by_completion():
        if (call.key, call.call) in seen or not _want(call.key, options.modules):
            continue
        for leaf in _output_leaves(case, call.key, call.call):
            beyond = judge.beyond_precision(leaf) if judge is not None and status == NOT_COVERED else None
            result.tensors.append(TensorResult(case.name, "chained", leaf.key, leaf.call, leaf.role,
                                               SKIPPED if beyond else status, leaf.dtype, list(leaf.shape),
                                               seq_start=call.seq_start, seq_end=call.seq_end,
                                               message=beyond or message))  # fmt: skip


# -- repeat: determinism of the candidate -------------------------------------------------------------------------

REPEAT = "repeat"
Fingerprint = tuple[int, tuple[int, ...], str]  # CRC-32 of the bytes, shape, dtype


def fingerprint(value: np.ndarray | np.generic) -> Fingerprint:
    array = np.asarray(value)
    return checksum(array), tuple(array.shape), array.dtype.str


class Fingerprints:
    """A sink that keeps, for every tensor leaf of every call a candidate reports, only its fingerprint: what a
    second run is compared with, at a few bytes per tensor whatever the model's size. Calls are numbered per
    key in the order they start, like the chained sink numbers them."""

    def __init__(self) -> None:
        self.prints: dict[tuple[str, int], dict[str, Fingerprint]] = defaultdict(dict)  # (key, index) -> role -> print
        self.calls: dict[tuple[str, int], int] = {}  # (key, index) -> completion order
        self._counts: dict[str, int] = defaultdict(int)
        self._stack: dict[str, list[int]] = defaultdict(list)

    def __call__(self, key: str, phase: str, args: tuple[Any, ...], kwargs: dict[str, Any], outputs: Any) -> None:
        if phase == "call":
            index = self._counts[key]
            self._counts[key] += 1
            self._stack[key].append(index)
            leaves = {**flatten_numpy(tuple(args), "args"), **flatten_numpy(dict(kwargs), "kwargs")}
        else:
            index = self._stack[key].pop()
            self.calls[(key, index)] = len(self.calls)
            leaves = flatten_numpy(outputs, "outputs", top=True)
        prints = self.prints[(key, index)]
        for role, value in leaves.items():
            if isinstance(value, (np.ndarray, np.generic)):
                prints[role] = fingerprint(value)

    def passing_to(self, sink: Callable[[str, str, tuple[Any, ...], dict[str, Any], Any], None]) -> Callable[..., None]:
        """This sink in front of another (run 1 is fingerprinted while it is judged)."""

        def both(key: str, phase: str, args: tuple[Any, ...], kwargs: dict[str, Any], outputs: Any) -> None:
            try:
                self(key, phase, args, kwargs, outputs)
            except Exception as exc:  # the checker's own failure must not be blamed on the candidate
                raise CheckerError(f"while fingerprinting {key} ({phase}): {type(exc).__name__}: {exc}") from exc
            sink(key, phase, args, kwargs, outputs)

        return both


def run_repeats(case: Case, candidate: Candidate, first: Fingerprints, options: CheckOptions,
                result: CaseResult) -> None:  # fmt: skip
    """Run the case `options.repeat - 1` more times and judge every golden tensor the candidate produced in run 1
    (inputs and outputs of each call) by bit equality across the runs: mode "repeat", pass or fail."""
    if not candidate.can_chain(case):
        result.notes.append("repeat: the candidate cannot run this case end to end")
        return
    if any(t.mode == "chained" and t.status == ERROR for t in result.tensors):
        result.notes.append("repeat: not run, the first chained run stopped on the candidate's exception")
        return
    runs: list[Fingerprints] = []
    for _ in range(options.repeat - 1):
        again = Fingerprints()
        try:
            candidate.run_chained(case, again)
        except CheckerError:
            raise
        except Exception as exc:
            raise CandidateCrash(REPEAT, exc) from exc  # run 1 completed: a crash of a later run is its own error
        runs.append(again)
    differing_unrecorded: dict[str, int] = defaultdict(int)
    for (key, index), _ in sorted(first.calls.items(), key=lambda item: item[1]):
        if not _want(key, options.modules):
            continue
        prints = first.prints[(key, index)]
        if not case.has_call(key, index):
            if any(run.prints.get((key, index)) != prints for run in runs):
                differing_unrecorded[key] += 1
            continue
        record = case.get_call(key, index)
        for leaf in case.leaves(key, index):
            mine = prints.get(leaf.role)
            if not leaf.is_tensor or mine is None:
                continue  # not produced in run 1: the chained verdicts already say so
            tensor = TensorResult(case.name, REPEAT, key, index, leaf.role, PASS, leaf.dtype, list(leaf.shape),
                                  seq_start=record.seq_start, seq_end=record.seq_end, tier=leaf.tier,
                                  source="bit equality between runs of the candidate", thresholds={"exact": 0.0})  # fmt: skip
            theirs = [run.prints.get((key, index), {}).get(leaf.role) for run in runs]
            differ = [number for number, other in enumerate(theirs, start=2) if other != mine]
            tensor.metrics = {"runs": options.repeat, "differing_runs": differ}
            if differ:
                other = theirs[differ[0] - 2]
                tensor.status = FAIL
                tensor.message = f"differs between runs 1 and {differ[0]}" + (
                    f" (run {differ[0]} made no such tensor)" if other is None
                    else "" if other[1:] == mine[1:]
                    else f" (shape/dtype {list(other[1])} {other[2]} vs {list(mine[1])} {mine[2]})"
                )  # fmt: skip
                if len(differ) > 1:
                    tensor.message += f"; also in run(s) {', '.join(map(str, differ[1:]))}"
            result.tensors.append(tensor)
    if differing_unrecorded:
        shown = ", ".join(f"{key} ×{n}" for key, n in list(differing_unrecorded.items())[:5])
        result.notes.append(f"repeat: {sum(differing_unrecorded.values())} calls of modules the golden did not record "
                            f"also differ between runs: {shown}")  # fmt: skip
    for number, run in enumerate(runs, start=2):
        extra = len(set(run.calls) - set(first.calls))
        if extra:
            result.notes.append(f"repeat: run {number} made {extra} calls that run 1 did not make")


def repeat_blame(case: Case, result: CaseResult) -> Blame | None:
    """The first call whose outputs differ between runs while its inputs did not (or, when every differing call
    also took a differing input, the input the difference entered through)."""
    found = blame(result, REPEAT, case)
    if found is None:
        return None
    named = set(found.outputs if found.kind == "module" else found.inputs)
    differing = [t for t in result.tensors if t.mode == REPEAT and t.name in named and t.status == FAIL]
    first_run = min((min(t.metrics["differing_runs"]) for t in differing if t.metrics), default=2)
    if found.kind == "module":
        roles = ", ".join(t.role for t in differing[:3]) + (" ..." if len(differing) > 3 else "")
        detail = f"call {found.call}: {roles}; its inputs were identical"
    else:
        role = differing[0].role if differing else "an input"
        detail = (
            f"the difference enters through `{role}` of {found.key}#{found.call}, made outside the recorded modules"
        )
    found.reason = f"nondeterministic candidate: {found.key} differs between runs 1 and {first_run} ({detail})"
    return found


# -- blame, growth, tokens -------------------------------------------------------------------------------------


def blame(result: CaseResult, mode: str, case: Case | None = None) -> Blame | None:
    """The first call, in completion order, whose inputs conform and whose outputs do not; failing that (every
    failing call also took a failing input), the input through which the divergence entered (`input_blame`)."""
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
    return input_blame(case, result, mode) if case is not None else None


def input_blame(case: Case, result: CaseResult, mode: str) -> Blame | None:
    """When no call diverges on conforming inputs, the divergence came in through an input that no recorded
    module produced (reference tokens computed by an unhooked encoder, a tensor built by glue code): blame the
    first such failing input, in the order calls started, that no failing golden producer explains."""
    failing_inputs = sorted((t for t in result.tensors if t.mode == mode and t.is_input and t.status in (FAIL, ERROR)),
                            key=lambda t: (t.seq_start, t.seq_end))  # fmt: skip
    if not failing_inputs:
        return None
    verdicts = {(t.key, t.call, t.role): t for t in result.tensors if t.mode == mode}
    graph = producers(case)
    for tensor in failing_inputs:
        made_by = graph.get((tensor.key, tensor.call, tensor.role), [])
        judged = [verdicts[index] for index in ((p.key, p.call, p.role) for p in made_by) if index in verdicts]
        if any(source.status in (FAIL, ERROR) for source in judged):
            continue  # a recorded module handed it on already wrong: the divergence entered further up
        if judged:  # its recorded producer returned it right: it changed on the way, in code no hook sees
            where = f"changed after {judged[0].name} returned it, outside the recorded modules"
        elif made_by:
            where = f"produced by {made_by[0].name}, which was not checked"
        else:
            where = "produced outside the recorded modules"
        reason = f"divergence enters through `{tensor.role}` of {tensor.key}#{tensor.call}, {where}: {tensor.message}"
        outputs = [t.name for t in result.tensors if t.mode == mode and (t.key, t.call) == (tensor.key, tensor.call)
                   and not t.is_input and t.status in (FAIL, ERROR)]  # fmt: skip
        return Blame(mode, tensor.key, tensor.call, tensor.seq_end, reason, outputs, [tensor.name], kind="input")
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
    """The first token of the case (where the subject's token layout says) that the candidate generated otherwise
    than the golden, as an index over the layout's axes, classified by the golden's top-1 margin at the logits
    call that chose it."""
    layout = subject.tokens(case) if subject is not None else None
    if layout is None:
        return
    key, call, role = layout.location
    mine = kept.get((key, call), {}).get(role)
    if mine is None:
        return
    golden = case.tensor(key, call, role)
    axes = list(layout.axes)
    if mine.shape != golden.shape or np.array_equal(mine, golden):
        if mine.shape != golden.shape:
            result.first_divergence = {"axes": axes, "index": None, "classification": "length",
                                       "message": f"generated {list(mine.shape)} tokens, golden {list(golden.shape)}"}  # fmt: skip
        return
    # the first in generation order: along the step axis, then the other axes (a batch's sequences) in order
    differing = np.argwhere(mine != golden)
    index = tuple(int(i) for i in min(differing.tolist(), key=lambda at: (at[layout.step_axis], at)))
    info: dict[str, Any] = {"axes": axes, "index": list(index), **dict(zip(axes, index)),
                            "golden_token": int(golden[index]), "candidate_token": int(mine[index])}  # fmt: skip
    logits_at = subject.logits_for(case, index)
    if logits_at is not None:
        logits = last_position(case.tensor(logits_at.key, logits_at.call, "outputs/0"))[logits_at.row]
        finding = classify(logits, None, policy.tokens.near_tie_margin, candidate_token=int(mine[index]))
        info.update(classification=finding.classification, margin=finding.margin, golden_second=finding.golden_second,
                    logits=f"{logits_at.key}#{logits_at.call}")  # fmt: skip
        result.tokens.append(TokenFinding(case.name, "free_running", logits_at.key, logits_at.call,
                                          finding.classification, finding.golden_token, int(mine[index]),
                                          finding.golden_second, finding.margin, index=list(index), axes=axes,
                                          row=logits_at.row))  # fmt: skip
        seq = case.get_call(logits_at.key, logits_at.call).seq_end
        info["seq_end"] = seq
        if policy.tokens.allow_ties and finding.classification in ("exact_tie", "near_tie"):
            # Everything after a tie-broken token legitimately differs: not a failure of the candidate.
            where = layout.describe(index)
            for tensor in result.tensors:
                if tensor.mode == "chained" and tensor.seq_end > seq and tensor.status in (FAIL, ERROR):
                    tensor.status = SKIPPED
                    tensor.message = f"after the generated tokens diverged on a {finding.classification} at {where}"
    result.first_divergence = info


# -- the run ----------------------------------------------------------------------------------------------------


def check(store: GoldenStore, candidate: Candidate, policy: Policy, options: CheckOptions) -> RunResult:
    started = time.time()
    names = options.cases or store.cases
    missing = [n for n in names if n not in store.cases]
    if missing:
        raise UsageError(
            f"no case {missing[0]!r} in the golden store (cases: {', '.join(store.cases)})", path=store.path
        )
    first = store.case(names[0]) if names else None
    policy = policy.at_precision(options.precision)
    require_twins(store, names, policy)
    modes = run_modes(options)
    run = RunResult(
        candidate=candidate.description,
        goldens=str(store.path),
        policy=policy.describe(),
        command=options.command,
        started_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        seconds=0.0,
        golden_provenance=provenance_summary(store, first),
        modes=list(modes),
        allow_partial=options.allow_partial,
    )
    keeper = FailingKeeper(options.keep_failing, options.keep_failing_bytes) if options.keep_failing > 0 else None
    for name in names:
        case = store.case(name)
        result = CaseResult(name, case.provenance.get("family", ""), case.dtype, modes,
                            description=case.provenance.get("description", ""))  # fmt: skip
        subject = options.subject if options.subject is not None else installed_subject(case, result.notes)
        case_policy = policy.for_subject(subject.name if subject else None, subject.token_logits if subject else ())
        describe_subject(result, subject, case)
        reference = reference_case(options.reference, case, case_policy, result.notes)
        if options.reference is None and _calibrates_chained(case_policy, case, options):
            reason = options.reference_note or "no float64 reference recording of this golden was found"
            result.notes.append(fallback_note(reason, case_policy, case))
        stage = "prepare"
        semantics = subject.semantics(case) if subject is not None else {}
        axes = subject.sequence_axes(case) if subject is not None else []
        unsupported = candidate.not_applicable(case, semantics)
        if unsupported is not None:
            result.not_applicable = unsupported
            result.modes = []
            result.notes.append(f"not applicable: {unsupported}")
            run.cases.append(result)
            continue
        try:
            candidate.prepare(store, case)
            black_box = candidate.black_box(case)
            if black_box:
                result.modes = [OUTPUTS]
                result.notes.append(BLACK_BOX_NOTE)
                result.notes[:] = [n for n in result.notes if not n.startswith(CALIBRATION_FALLBACK)]
            if "isolated" in options.modes and not black_box:
                stage = "isolated"
                t = time.time()
                run_isolated(case, candidate, Judge(case_policy, case, reference, "isolated", axes), options, result, keeper,
                             subject)  # fmt: skip
                result.seconds["isolated"] = round(time.time() - t, 3)
                result.blame["isolated"] = blame(result, "isolated")
                candidate.review(case, result, "isolated")
            if "chained" in options.modes and not black_box:
                stage = "chained"
                t = time.time()
                keep = set(options.keep) | kept_keys(subject, case)
                chained_options = CheckOptions(**{**options.__dict__, "keep": keep})
                run1 = Fingerprints() if options.repeat > 1 else None
                kept = run_chained(case, candidate, Judge(case_policy, case, reference, "chained", axes), chained_options,
                                   result, keeper, run1)  # fmt: skip
                free_running(case, kept, case_policy, result, subject)
                result.seconds["chained"] = round(time.time() - t, 3)
                result.blame["chained"] = blame(result, "chained", case)
                candidate.review(case, result, "chained")
                run.artifacts[name] = kept
                if run1 is not None:
                    stage = REPEAT
                    t = time.time()
                    run_repeats(case, candidate, run1, options, result)
                    result.seconds[REPEAT] = round(time.time() - t, 3)
                    result.blame[REPEAT] = repeat_blame(case, result)
            given = candidate.case_outputs(case)
            if given is not None:
                stage = OUTPUTS
                t = time.time()
                if OUTPUTS not in result.modes:
                    result.modes.append(OUTPUTS)
                run_outputs(case, given, case_policy, reference, subject, result)
                if options.reference_from_candidate and subject is not None:
                    references = subject.reference_from_candidate(store, case, given, options.checkpoint)
                    run_candidate_references(case, given, references, case_policy, subject, result)
                    if references:
                        result.notes.append(f"reference from the candidate: the official model re-run on the "
                                            f"candidate's own outputs ({', '.join(references)})")  # fmt: skip
                result.seconds[OUTPUTS] = round(time.time() - t, 3)
                candidate.review(case, result, OUTPUTS)
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
        beyond = [t for t in result.tensors if t.status == SKIPPED and t.message.startswith(BEYOND_PRECISION)]
        if beyond:
            earliest = min(beyond, key=lambda t: (t.seq_end, t.mode))
            result.notes.append(f"{len(beyond)} tensor(s) skipped {BEYOND_PRECISION}: the official model at "
                                f"{earliest.precision} itself takes another discrete decision than float64, first at "
                                f"{earliest.name} ({earliest.mode}); no reference exists past it at that precision, and the "
                                "decisions are classified by the token checks")  # fmt: skip
        result.growth = growth(result)
        run.cases.append(result)
    run.notes.extend(calibration_notes(run.cases))
    boxed = [c.case for c in run.cases if c.modes == [OUTPUTS]]
    if boxed:
        scope = "every case" if len(boxed) == len(run.cases) else f"{len(boxed)} case(s): {', '.join(boxed)}"
        run.notes.append(f"{BLACK_BOX_NOTE} ({scope})")
        if OUTPUTS not in run.modes:
            run.modes.append(OUTPUTS)
    elif any(OUTPUTS in c.modes for c in run.cases) and OUTPUTS not in run.modes:
        run.modes.append(OUTPUTS)
    applicable = [c for c in run.cases if c.not_applicable]
    if applicable:
        run.notes.append(
            f"{len(applicable)} case(s) not applicable to the candidate (its port profile): "
            + "; ".join(f"{c.case}: {c.not_applicable}" for c in applicable)
        )
    hints = [note for case in run.cases for note in case.notes if note.startswith(PRECISION_HINT)]
    run.notes.extend(dict.fromkeys(hints))
    run.candidate = candidate.description  # after loading: a candidate may only then know what it is
    try:
        run.candidate_provenance = candidate.provenance()
    except Exception as exc:  # a candidate that cannot describe itself is still judged
        run.candidate_provenance = {"kind": candidate.name, "label": run.candidate,
                                    "error": f"{type(exc).__name__}: {exc}"}  # fmt: skip
    run.seconds = time.time() - started
    return run


def require_twins(store: GoldenStore, names: list[str], policy: Policy) -> None:
    """Every precision the policy judges at must have its twin's noise in the golden: a UsageError (exit 2) naming
    the golden, the precision and the `record` options that record it, rather than judging on defaults."""
    for precision in policy.precisions_named():
        wanted = {noise_mode("isolated", precision), noise_mode("chained", precision)}
        for name in names:
            if not any(record.mode in wanted for record in store.case(name).oracle_records()):
                raise UsageError(f"case {name!r} has no {precision} twin to judge a {precision} candidate against; record "
                                 f"one with `conformance record {record_command(precision)} ...` (docs/precision.md)",
                                 path=store.path)  # fmt: skip


def installed_subject(case: Case, notes: list[str]) -> Any:
    """The subject that recorded the case, through the registry; None, with a note saying what is not judged, when
    it is not installed here (a port's CI checking a dump needs only numpy and h5py: its tensors are still judged)."""
    try:
        return subjects.for_case(case)
    except UsageError as exc:
        notes.append(f"{exc}: the case is judged tensor by tensor, without the subject's tokens, signals and "
                     "whole-model steps")  # fmt: skip
        return None


def describe_subject(result: CaseResult, subject: Any, case: Case) -> None:
    """What the report needs of the case's subject, recorded in its verdict: the subject's name, where its tokens
    are and their axes, and which outputs are signals (so summary.json alone can be rendered)."""
    if subject is None:
        return
    result.subject = subject.name
    layout = subject.tokens(case)
    result.token_layout = layout.to_json() if layout is not None else None
    result.signals = [signal.to_json() for signal in subject.signals(case)]


def kept_keys(subject: Any, case: Case) -> set[str]:
    """Module keys whose chained candidate outputs are kept for the report: what the subject asks for, and the
    call holding its tokens (free running compares the candidate's tokens with the golden's)."""
    if subject is None:
        return set()
    keep = set(subject.keep(case))
    layout = subject.tokens(case)
    if layout is not None:
        keep.add(layout.location[0])
    return keep


def run_modes(options: CheckOptions) -> list[str]:
    """The modes a run reports: the checked ones, and "repeat" when chained runs are repeated."""
    if options.repeat > 1 and "chained" not in options.modes:
        raise UsageError("repeating a check (--repeat) needs the chained mode: the candidate runs whole cases")
    return [*options.modes, REPEAT] if options.repeat > 1 else list(options.modes)


def case_error(stage: str, exc: BaseException) -> CaseError:
    """A candidate's exception as a case's error verdict: its one-line message, the traceback kept whole."""
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


def reference_case(reference: GoldenStore | None, case: Case, policy: Policy | None = None,
                   notes: list[str] | None = None) -> Case | None:  # fmt: skip
    """The float64 reference of a golden case: what its chained noise is measured against. None for a float64
    golden, a reference lacking the case, or one whose float64 run took another discrete decision (then `notes`,
    when given, gets the calibration fallback note saying why, worded with `policy`'s fallback factor)."""
    if reference is None or case.dtype == "float64":
        return None
    if case.name not in reference.cases:
        if policy is not None and notes is not None:
            notes.append(fallback_note(f"the float64 reference {reference.path} has no case {case.name}", policy, case))
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
            if policy is not None and notes is not None:
                notes.append(fallback_note(f"the float64 reference generated different {name}", policy, case))
            return None
    return ref


def provenance_summary(store: GoldenStore, case: Case | None) -> dict[str, Any]:
    """The golden's provenance as a run reports it (from the store and its first checked case)."""
    p = case.provenance if case is not None else {}
    return {
        "path": str(store.path),
        "subject": p.get("subject"),
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
    paired, missing = manifest.paired_reference(store_path)
    if paired is not None or missing:
        return ReferenceLookup(paired, missing)
    return ReferenceLookup(None, "the golden names no float64 reference (recorded with --no-reference64, or "
                                 "before `record` wrote one) and no manifest.json beside it pairs one")  # fmt: skip


def find_reference(store_path: Path) -> Path | None:
    """The float64 golden paired with a float32 golden (see locate_reference), or None."""
    return locate_reference(store_path).path
