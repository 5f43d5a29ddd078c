"""Replay golden cases through the NumPy impl, isolated and chained, and measure every tensor against its
golden with the official float32-vs-float64 noise of that tensor as the yardstick.

Isolated: each recorded call is run on its golden inputs through the impl binding (ImplCandidate), its
outputs compared with the golden outputs. Chained: each case runs from its recorded inputs through
`pipeline.run_case` with a tap; call k of a module in the impl is matched to call k in the golden and
both its inputs and outputs are compared.

Noise of a tensor: the oracle's isolated rel_l2 when recorded, else (chained, and calls the oracle does not
re-run such as `generate`) the rel_l2 between the float32 golden and the float64 golden of that tensor.
"""

from __future__ import annotations

import functools
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from conformance.compare.metrics import compare_arrays
from conformance.store import GoldenStore
from conformance.store.reader import ObjectValue
from conformance.store.tree import flatten
from conformance.subjects.qwen3_tts.impl_binding import ImplCandidate

ROOT = Path(__file__).resolve().parents[3]
GOLDENS = ROOT / "goldens"
F32 = GOLDENS / "qwen3_tts-tiny-float32.h5"
F64 = GOLDENS / "qwen3_tts-tiny-float64.h5"
CASES = ("speaker_encoder", "tts_custom_voice", "tts_custom_voice_streaming", "tts_dialect", "tts_voice_design",
         "tts_voice_clone_xvector", "tts_voice_clone_icl", "tts_voice_clone_icl_non_streaming", "end_to_end")  # fmt: skip
CODEC_PREFIX = "speech_tokenizer"
NOISE_FACTOR = 100.0
NOISE_FLOOR = 1e-9  # rel_l2 <= 100 * max(noise, 1e-9), i.e. a 1e-7 floor where the noise is ~0
FLOAT64_BOUND = 1e-12


@dataclass
class Finding:
    key: str
    call: int
    role: str
    rel_l2: float
    noise: float | None  # None in float64 (absolute bound)
    ok: bool
    note: str = ""

    @property
    def ratio(self) -> float:
        """rel_l2 in units of the tensor's official noise (float32), or of the 1e-12 bound (float64)."""
        if self.noise is None:
            return self.rel_l2 / FLOAT64_BOUND
        return self.rel_l2 / max(self.noise, NOISE_FLOOR)

    def __str__(self) -> str:
        return f"{self.key}#{self.call}/{self.role}: rel_l2={self.rel_l2:.3g} noise={self.noise} ratio={self.ratio:.3g} {self.note}"


@functools.lru_cache(maxsize=4)
def store(path: Path) -> GoldenStore:
    return GoldenStore(path)


@functools.lru_cache(maxsize=4)
def candidate(dtype: str) -> ImplCandidate:
    return ImplCandidate()


def _is_float(value: Any) -> bool:
    return isinstance(value, np.ndarray) and value.dtype.kind == "f"


def _rel_l2(reference: np.ndarray, value: np.ndarray) -> float:
    if reference.shape != value.shape:
        return math.inf
    if np.array_equal(reference, value):
        return 0.0
    return float(compare_arrays(reference.astype(np.float64), value.astype(np.float64)).rel_l2)


class NoiseTable:
    """Per-tensor noise of a float32 case: oracle (isolated) or float32-vs-float64 golden (chained)."""

    def __init__(self, case_name: str) -> None:
        self.f32 = store(F32).case(case_name)
        self.f64 = store(F64).case(case_name)
        self._flat64: dict[tuple[str, int], dict[str, Any]] = {}

    def oracle(self, key: str, call: int, role: str) -> float | None:
        record = self.f32.oracle(key, call, role)
        if record is None or record.status not in ("ok", "measured", ""):
            return None if record is None else record.metrics.get("rel_l2")
        return record.metrics.get("rel_l2")

    def chained(self, key: str, call: int, role: str, reference: np.ndarray) -> float:
        if (key, call) not in self._flat64:
            args, kwargs, outputs = self.f64.call_io(key, call)
            flat = flatten(args, "args") | flatten(kwargs, "kwargs") | flatten(outputs, "outputs", top=True)
            self._flat64[(key, call)] = flat
        other = self._flat64[(key, call)].get(role)
        if not isinstance(other, np.ndarray) or other.shape != reference.shape:
            return 0.0
        return _rel_l2(other.astype(np.float64), reference.astype(np.float64))


def compare_leaves(key: str, call: int, golden: dict[str, Any], mine: dict[str, Any], float64: bool,
                   noise_of: Any) -> list[Finding]:  # fmt: skip
    """Every leaf of the golden against the impl's: floats by rel_l2 within the noise bound, everything
    else (integer tensors, ints, bools, None, strings) exactly. A missing leaf fails."""
    findings = []
    for role, reference in golden.items():
        if isinstance(reference, ObjectValue):
            continue
        if role not in mine:
            findings.append(Finding(key, call, role, math.inf, None, False, "missing in the impl"))
            continue
        value = mine[role]
        if _is_float(reference) and reference.size and float(reference.min()) <= -1e30:
            # an additive attention mask (0 / the dtype's most negative value): must be exact
            same = isinstance(value, np.ndarray) and value.shape == reference.shape and np.array_equal(value, reference)
            findings.append(
                Finding(key, call, role, 0.0 if same else math.inf, 0.0, same, "" if same else "mask differs")
            )
        elif _is_float(reference):
            if not isinstance(value, np.ndarray):
                findings.append(Finding(key, call, role, math.inf, None, False, f"impl gave {type(value).__name__}"))
                continue
            rel = _rel_l2(reference, value)
            note = f"dtype {value.dtype} vs golden {reference.dtype}" if value.dtype != reference.dtype else ""
            if float64:
                findings.append(Finding(key, call, role, rel, None, rel < FLOAT64_BOUND, note))
            else:
                noise = noise_of(role, reference)
                findings.append(
                    Finding(key, call, role, rel, noise, rel <= NOISE_FACTOR * max(noise, NOISE_FLOOR), note)
                )
        elif isinstance(reference, np.ndarray):
            same = isinstance(value, np.ndarray) and reference.shape == value.shape and np.array_equal(reference, value)
            findings.append(
                Finding(key, call, role, 0.0 if same else math.inf, 0.0, same, "" if same else "integers differ")
            )
        elif isinstance(reference, (list, tuple)) or reference is None or isinstance(reference, (bool, int, str)):
            same = (
                (list(value) == list(reference))
                if isinstance(reference, (list, tuple))
                else (value == reference if not isinstance(value, np.ndarray) else value.tolist() == reference)
            )
            findings.append(Finding(key, call, role, 0.0 if same else math.inf, 0.0, bool(same),
                                    "" if same else f"{value!r} != {reference!r}"))  # fmt: skip
        elif isinstance(reference, float):
            same = isinstance(value, (int, float)) and abs(value - reference) <= 1e-12 * max(1.0, abs(reference))
            findings.append(Finding(key, call, role, 0.0 if same else math.inf, 0.0, same))
    return findings


def run_isolated(store_path: Path, case_name: str, include_codec: bool = False) -> list[Finding]:
    """Replay every call of a case on its golden inputs. Raises if a call is not covered."""
    golden = store(store_path)
    case = golden.case(case_name)
    float64 = case.dtype == "float64"
    cand = candidate(case.dtype)
    cand.prepare(golden, case)
    noise = None if float64 else NoiseTable(case_name)
    findings: list[Finding] = []
    for call in case.calls():
        if call.key.startswith(CODEC_PREFIX) and not include_codec:
            continue
        if not cand.covers(call):
            raise AssertionError(f"{call.key}#{call.call} is not covered by the impl")
        args, kwargs, outputs = case.call_io(call.key, call.call)
        result = cand.run_isolated(case, call, args, kwargs)
        golden_flat = flatten(outputs, "outputs", top=True)
        mine_flat = flatten(result, "outputs", top=True)

        def noise_of(role: str, reference: np.ndarray, _call: Any = call) -> float:
            value = noise.oracle(_call.key, _call.call, role)
            return value if value is not None else noise.chained(_call.key, _call.call, role, reference)

        findings += compare_leaves(call.key, call.call, golden_flat, mine_flat, float64, noise_of)
    return findings


@dataclass
class ChainedRun:
    findings: list[Finding]
    codes: np.ndarray | None
    missing: list[str]
    extra: list[str]


def run_chained(store_path: Path, case_name: str, include_codec: bool = False) -> ChainedRun:
    """Run the case from its inputs with a tap; compare every golden call's inputs and outputs."""
    golden = store(store_path)
    case = golden.case(case_name)
    float64 = case.dtype == "float64"
    cand = candidate(case.dtype)
    cand.prepare(golden, case)
    counts: dict[str, int] = defaultdict(int)
    open_calls: dict[str, list[int]] = defaultdict(list)
    captured: dict[tuple[str, int], dict[str, Any]] = {}

    def sink(key: str, phase: str, args: tuple, kwargs: dict, outputs: Any) -> None:
        if phase == "call":
            index = counts[key]
            counts[key] += 1
            open_calls[key].append(index)
            # flatten now: caches are mutated later in the call
            captured[(key, index)] = flatten(list(args), "args") | flatten(dict(kwargs), "kwargs")
        else:
            index = open_calls[key].pop()
            captured[(key, index)] |= flatten(outputs, "outputs", top=True)

    codes = None
    from impl.qwen3_tts import nn, pipeline

    inputs = {name: case.input(name) for name in case.input_names()}
    if case.provenance.get("family") == "speaker_encoder":
        with nn.tapping(sink):
            cand.roots[""].extract_speaker_embedding(case.input("waveform"), 24000)
    else:
        with nn.tapping(sink):
            codes = pipeline.run_case(cand.roots[""], case.provenance.get("model", ""), inputs)["codes"]
    noise = None if float64 else NoiseTable(case_name)
    findings: list[Finding] = []
    golden_calls = {(c.key, c.call) for c in case.calls()}
    missing = sorted(
        f"{k}#{i}" for k, i in golden_calls - set(captured) if include_codec or not k.startswith(CODEC_PREFIX)
    )
    golden_keys = {k for k, _ in golden_calls}
    extra = sorted(f"{k}#{i}" for k, i in set(captured) - golden_calls if k in golden_keys)
    for call in case.calls():
        if call.key.startswith(CODEC_PREFIX) and not include_codec:
            continue
        if (call.key, call.call) not in captured:
            continue
        args, kwargs, outputs = case.call_io(call.key, call.call)
        golden_flat = flatten(args, "args") | flatten(kwargs, "kwargs") | flatten(outputs, "outputs", top=True)

        def noise_of(role: str, reference: np.ndarray, _call: Any = call) -> float:
            return noise.chained(_call.key, _call.call, role, reference)

        findings += compare_leaves(call.key, call.call, golden_flat, captured[(call.key, call.call)], float64, noise_of)
    return ChainedRun(findings, codes, missing, extra)


def worst(findings: list[Finding]) -> Finding | None:
    floats = [f for f in findings if f.noise is None or f.noise > 0 or f.rel_l2 > 0]
    return max(floats, key=lambda f: f.ratio, default=None)
