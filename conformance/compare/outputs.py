"""The "outputs" mode: a case's final outputs as the candidate gives them, judged against the golden's (numpy only).

A case records its final outputs (what the official public API returned: codes, a waveform, a sample rate) under
/cases/<case>/outputs. A candidate that gives them (`Candidate.case_outputs`; a dump names them
`outputs/<name>`) gets a verdict on each, as the tensor `case#0/outputs/<name>` of mode "outputs":

* discrete outputs (codes) and scalar values (a sample rate) must be equal;
* float outputs are judged like any tensor (rel_l2, max_abs calibrated on the official float32-vs-float64
  noise of that very output, from the float64 twin), and outputs that are audio signals (`Subject.signals`)
  also on audio metrics (SNR, log-mel distance, per-frame max error: conformance.metrics), calibrated the same way;
* an output whose length along a sequence axis differs (`Subject.sequence_axes`: another number of generated
  frames) is compared on the common prefix with both lengths reported. It fails, unless the difference is the
  extra steps the subject documents as a convention of the official code (`Subject.extra_steps`), which pass
  with a note.

A black-box candidate (`Candidate.black_box`) gives nothing else: only this mode runs for its cases.
"""

from __future__ import annotations

import fnmatch
import math
from typing import Any

import numpy as np

from ..metrics import AUDIO_METRICS, audio_metrics, audio_thresholds, compare_arrays, noise_metrics
from ..store.reader import Case
from .policy import UNIT_ROUNDOFF, Policy
from .results import FAIL, NOT_COVERED, PASS, CaseResult, TensorResult

OUTPUTS = "outputs"  # the mode
CASE_KEY = "case"  # the pseudo-module key of a case's outputs: case#0/outputs/<name>
BLACK_BOX_NOTE = (
    "black-box: the candidate gives only the case's final outputs, judged on their own (codes exactly, audio on "
    "SNR, log-mel distance and per-frame error). This says whether the port's output conforms, not where a "
    "divergence starts: no module is localised. Dump the port's intermediates to blame one."
)
# Audio thresholds when the golden has no float64 twin to calibrate them on (said loudly in the case's notes)
AUDIO_FALLBACK = {"snr_db": 60.0, "log_mel": 1e-2, "frame_max_abs_rel": 1e-3}


def sequence_axis(axes: list[Any], name: str) -> Any:
    """The SequenceAxis of a golden tensor or case output name, or None."""
    for axis in axes:
        if fnmatch.fnmatchcase(name, axis.target):
            return axis
    return None


def length_difference(golden: tuple[int, ...], candidate: tuple[int, ...], axis: int) -> bool:
    """Whether two shapes differ along `axis` only."""
    if len(golden) != len(candidate) or not golden:
        return False
    axis %= len(golden)
    return (
        all(g == c for i, (g, c) in enumerate(zip(golden, candidate)) if i != axis) and golden[axis] != candidate[axis]
    )


def prefix(array: np.ndarray, axis: int, length: int) -> np.ndarray:
    index = [slice(None)] * array.ndim
    index[axis] = slice(0, length)
    return array[tuple(index)]


def run_outputs(case: Case, outputs: dict[str, Any], policy: Policy, reference: Case | None, subject: Any,
                result: CaseResult) -> None:  # fmt: skip
    """Judge every final output of the golden case against the candidate's `outputs` (mode "outputs")."""
    axes = subject.sequence_axes(case) if subject is not None else []
    extra = subject.extra_steps(case) if subject is not None else None
    signals = {s.output: s for s in subject.signals(case)} if subject is not None else {}
    for name in case.output_names():
        golden = case.output(name)
        role = f"{OUTPUTS}/{name}"
        tensor = TensorResult(case.name, OUTPUTS, CASE_KEY, 0, role, PASS)
        result.tensors.append(tensor)
        value = outputs.get(name)
        if not isinstance(golden, np.ndarray):  # a recorded value (a sample rate): equal, or not
            tensor.dtype = type(golden).__name__
            if value is None:
                tensor.status, tensor.message = NOT_COVERED, f"the candidate gave no output {name!r}"
                continue
            got = np.asarray(value).reshape(-1)
            same = got.size == 1 and float(got[0]) == float(golden)
            tensor.source = "exact (recorded value)"
            tensor.metrics = {"candidate": got.tolist() if got.size <= 4 else f"{got.size} values", "golden": golden}
            if not same:
                tensor.status, tensor.message = FAIL, f"{name} {got.tolist()[:4]} where the golden has {golden!r}"
            continue
        tensor.dtype, tensor.shape = golden.dtype.name, list(golden.shape)
        if value is None:
            tensor.status, tensor.message = NOT_COVERED, f"the candidate gave no output {name!r}"
            continue
        candidate = np.asarray(value)
        golden_float = golden.dtype.kind == "f"
        if golden_float != (candidate.dtype.kind == "f"):
            tensor.status = FAIL
            tensor.message = f"dtype mismatch: candidate {candidate.dtype.name} vs golden {golden.dtype.name}"
            continue
        if not golden_float and candidate.dtype.kind == "f":
            candidate = candidate.astype(np.int64)
        seq = sequence_axis(axes, role)
        length_note = ""
        if candidate.shape != golden.shape:
            if seq is None or not length_difference(golden.shape, candidate.shape, seq.axis):
                tensor.status = FAIL
                tensor.message = f"shape mismatch: candidate {list(candidate.shape)} vs golden {list(golden.shape)}"
                continue
            g_len, c_len = golden.shape[seq.axis], candidate.shape[seq.axis]
            common = min(g_len, c_len)
            steps = (c_len - g_len) / max(seq.per_step, 1)
            unit = "step(s)" if seq.per_step == 1 else f"step(s) of {seq.per_step} elements"
            length_note = (f"length {c_len} where the golden has {g_len} along sequence axis {seq.axis} "
                           f"({steps:+g} {unit}); compared on the common prefix of {common}")  # fmt: skip
            convention = extra is not None and steps == extra[0]
            golden, candidate = prefix(golden, seq.axis, common), prefix(candidate, seq.axis, common)
            tensor.metrics = {"candidate_length": c_len, "golden_length": g_len, "common_prefix": common}
            if not convention:
                tensor.status = FAIL
                tensor.message = length_note
            else:
                tensor.note = f"{length_note}: {extra[1]}" if extra else length_note
                result.notes.append(f"{role}: {tensor.note}")
        if not golden_float:
            differ = int(np.count_nonzero(golden != candidate))
            tensor.source = "exact (discrete)"
            tensor.thresholds = {"exact": 0.0}
            tensor.metrics = {**(tensor.metrics or {}), "mismatch": differ, "numel": int(golden.size)}
            message = ""
            if differ:
                first = tuple(int(i) for i in np.argwhere(golden != candidate)[0])
                message = f"{differ} of {golden.size} values differ, first at {first}"
            if tensor.status == FAIL:  # a length divergence: the prefix's verdict is reported with it
                tensor.message += "; the common prefix " + (f"also differs: {message}" if message else "conforms")
            elif message:
                tensor.status, tensor.message = FAIL, message
            continue
        noise, twin = None, None
        if reference is not None and name in reference.output_names():
            twin = np.asarray(reference.output(name))
            if twin.shape == case.output(name).shape:
                if seq is not None and length_note:
                    twin = prefix(twin, seq.axis, golden.shape[seq.axis])
                noise = noise_metrics(twin.astype(np.float64), golden, golden.dtype.name)
        signal = signals.get(name)
        frame = seq.per_step if seq is not None else 1
        judge_float_output(tensor, golden, candidate, twin, noise, policy, signal, frame, result)


def judge_float_output(tensor: TensorResult, golden: np.ndarray, candidate: np.ndarray, twin: np.ndarray | None,
                       noise: dict[str, float] | None, policy: Policy, signal: Any, frame: int,
                       result: CaseResult) -> None:  # fmt: skip
    """Judge a float output (a waveform when `signal` says it is audio, with audio metrics over frames of `frame`
    samples) against `golden`, calibrated on `twin` (the float64 run's) when there is one."""
    role = tensor.role
    resolved = policy.resolve(CASE_KEY, role, golden.dtype.name, "chained", noise)
    metrics = compare_arrays(golden, candidate.astype(golden.dtype, copy=False), dtype=golden.dtype.name,
                             atol=resolved.thresholds.get("atol", 0.0), rtol=resolved.thresholds.get("rtol", 0.0))  # fmt: skip
    thresholds = resolved.final({"rel_l2": 1.0, "max_rel": 1.0, "max_abs": metrics.ref_max_abs,
                                 "mean_abs": metrics.ref_rms, "max_ulp": 1.0})  # fmt: skip
    from .engine import _verdict

    status, margin, message, minimum = _verdict(metrics, thresholds)
    measured: dict[str, Any] = metrics.as_dict()
    source = resolved.source
    if signal is not None:
        audio = audio_metrics(golden, candidate, signal.sample_rate, frame)
        measured.update(audio)
        floor = UNIT_ROUNDOFF.get(golden.dtype.name, UNIT_ROUNDOFF["float32"]) * policy.calibration.floor_eps
        peak = float(np.max(np.abs(golden))) if golden.size else 0.0
        if twin is not None and policy.calibration.enabled:
            audio_noise = audio_metrics(twin.astype(np.float64), golden, signal.sample_rate, frame)
            limits = audio_thresholds(audio_noise, policy.calibration.k, peak, floor)
            tensor.noise = {**noise, **{m: audio_noise[m] for m in AUDIO_METRICS}} if noise else None
        else:
            limits = {"snr_db": AUDIO_FALLBACK["snr_db"], "log_mel": AUDIO_FALLBACK["log_mel"],
                      "frame_max_abs": AUDIO_FALLBACK["frame_max_abs_rel"] * max(peak, 1e-30)}  # fmt: skip
            source += "; audio thresholds: fixed defaults (no float64 twin to calibrate them on)"
            said = (
                "calibration fallback: outputs without a float64 twin have fixed audio thresholds (SNR >= 60 dB, "
                "log-mel <= 1e-2, per-frame error <= 1e-3 of the peak), not calibrated on the official noise"
            )
            if said not in result.notes:
                result.notes.append(said)
        thresholds.update(limits)
        failures = [message] if message else []
        for metric, limit in limits.items():
            measure = float(audio[metric])
            if metric == "snr_db":
                bad = measure < limit
                # the error's amplitude as a share of the allowed one
                share = 0.0 if measure == math.inf else 10.0 ** ((limit - measure) / 20.0)
                if bad:
                    failures.append(f"snr_db {measure:.4g} < {limit:.4g}")
            else:
                bad = measure > limit
                share = measure / limit if limit > 0 else (0.0 if measure == 0 else math.inf)
                if bad:
                    where = f" (frame {audio['worst_frame']})" if metric == "frame_max_abs" else ""
                    failures.append(f"{metric} {measure:.3g} > {limit:.3g}{where}")
            margin = max(margin, share)
            minimum[metric] = measure
        status = FAIL if failures else status
        message = "; ".join(failures)
        source += ", audio: SNR, log-mel, per-frame max error"
    tensor.metrics = {**(tensor.metrics or {}), **measured}
    tensor.thresholds = thresholds
    tensor.source = source
    tensor.noise = tensor.noise or noise
    tensor.margin = margin
    tensor.min_tolerance = minimum
    if tensor.status == FAIL:  # a length divergence: the prefix's verdict is reported with it
        said = "the common prefix " + ("also fails: " + message if message else "conforms")
        tensor.message = f"{tensor.message}; {said}"
    else:
        tensor.status, tensor.message = status, message


def run_candidate_references(case: Case, outputs: dict[str, Any], references: dict[str, Any], policy: Policy,
                             subject: Any, result: CaseResult) -> None:  # fmt: skip
    """Judge the candidate's outputs against the official model re-run on the candidate's own inputs
    (`--reference-from-candidate`): `references` maps `<output>@<how>` to (official value, float64 twin or None).
    Discrete references are the official choices given the candidate's history: every position must agree."""
    axes = subject.sequence_axes(case) if subject is not None else []
    signals = {s.output: s for s in subject.signals(case)} if subject is not None else {}
    for label, (official, twin) in references.items():
        name = label.partition("@")[0]
        role = f"{OUTPUTS}/{label}"
        tensor = TensorResult(case.name, OUTPUTS, CASE_KEY, 0, role, PASS)
        result.tensors.append(tensor)
        official = np.asarray(official)
        tensor.dtype, tensor.shape = official.dtype.name, list(official.shape)
        candidate = np.asarray(outputs.get(name))
        if candidate.shape != official.shape:
            tensor.status = FAIL
            tensor.message = f"the official re-run gives {list(official.shape)}, the candidate {list(candidate.shape)}"
            continue
        if official.dtype.kind != "f":
            differ = np.argwhere(official != candidate)
            tensor.source = "official choices on the candidate's history (teacher forced)"
            tensor.thresholds = {"exact": 0.0}
            tensor.metrics = {"mismatch": len(differ), "numel": int(official.size)}
            if len(differ):
                first = tuple(int(i) for i in differ[0])
                tensor.status = FAIL
                tensor.message = (f"{len(differ)} of {official.size} tokens differ from the official choice given the "
                                  f"candidate's own history; first at {first}: official {int(official[first])}, "
                                  f"candidate {int(candidate[first])}")  # fmt: skip
            continue
        noise = noise_metrics(np.asarray(twin, np.float64), official, official.dtype.name) if twin is not None else None
        seq = sequence_axis(axes, f"{OUTPUTS}/{name}")
        judge_float_output(tensor, official, candidate, None if twin is None else np.asarray(twin), noise, policy,
                           signals.get(name), seq.per_step if seq is not None else 1, result)  # fmt: skip
        tensor.source = f"official re-run on the candidate's own codes; {tensor.source}"
