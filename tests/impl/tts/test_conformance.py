"""Conformance of the NumPy impl on the committed tiny goldens, every case of the talker / speaker-encoder
/ generation / end-to-end families, in float32 and float64, isolated and chained (see harness.py).

Bounds: float32 — every float tensor's rel_l2 within 100x the official float32-vs-float64 noise of that
tensor (1e-7 where the noise is ~0), integers (codes, token ids) and plain values exact; float64 — rel_l2
below 1e-12. Chained runs must reproduce every golden call (same keys, same call counts) and the codes
frame by frame. Codec calls inside the end-to-end case are checked chained (they run on our codes)."""

from __future__ import annotations

import numpy as np
import pytest

from . import harness

STORES = {"float32": harness.F32, "float64": harness.F64}

pytestmark = pytest.mark.skipif(not harness.F32.exists() or not harness.F64.exists(), reason="goldens not present")


def _summary(findings: list[harness.Finding]) -> str:
    worst = harness.worst(findings)
    return f"{len(findings)} tensors, worst {worst}" if worst else f"{len(findings)} tensors"


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", harness.CASES)
def test_isolated(case, dtype, record_property):
    findings = harness.run_isolated(STORES[dtype], case)
    failures = [f for f in findings if not f.ok]
    record_property("worst", str(harness.worst(findings)))
    print(f"isolated {dtype} {case}: {_summary(findings)}")
    assert findings
    assert not failures, "\n".join(map(str, failures[:20]))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", harness.CASES)
def test_chained(case, dtype, record_property):
    run = harness.run_chained(STORES[dtype], case, include_codec=case == "end_to_end")
    failures = [f for f in run.findings if not f.ok]
    record_property("worst", str(harness.worst(run.findings)))
    print(f"chained {dtype} {case}: {_summary(run.findings)}")
    assert not run.missing, f"golden calls the impl never made: {run.missing[:20]}"
    assert not run.extra, f"calls the golden does not have: {run.extra[:20]}"
    assert not failures, "\n".join(map(str, failures[:20]))
    if run.codes is not None:
        golden = harness.store(STORES[dtype]).case(case).output("codes")
        np.testing.assert_array_equal(run.codes, golden)
