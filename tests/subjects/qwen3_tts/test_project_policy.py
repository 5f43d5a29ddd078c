"""The project policy is tight, and the project's conformance job gates on it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conformance.compare.engine import Judge, find_reference
from conformance.compare.policy import UNIT_ROUNDOFF, load_policy
from conformance.store import GoldenStore

ROOT = Path(__file__).resolve().parents[3]
POLICY = ROOT / "conformance-policy.toml"


def test_every_float32_threshold_is_within_100x_the_official_noise(golden_f32: Path) -> None:
    policy = load_policy(POLICY)
    reference = find_reference(golden_f32)
    assert reference is not None
    checked = 0
    loose = []
    unit = UNIT_ROUNDOFF["float32"]
    with GoldenStore(golden_f32) as store, GoldenStore(reference) as ref_store:
        for case in store:
            ref_case = ref_store.case(case.name)
            seen = set()
            for leaf in case.tensor_leaves():
                if leaf.dtype != "float32" or (leaf.key, leaf.call, leaf.role) in seen:
                    continue
                seen.add((leaf.key, leaf.call, leaf.role))
                golden = case.tensor(leaf).astype(np.float64)
                scale = {"rel_l2": 1.0, "max_abs": float(np.abs(golden).max()) if golden.size else 0.0}
                for mode in ("isolated", "chained"):
                    judge = Judge(policy, case, ref_case, mode)
                    noise = judge.noise(leaf)
                    resolved = policy.resolve(leaf.key, leaf.role, leaf.dtype, mode, noise)
                    if not resolved.calibrated:
                        loose.append(f"{case.name}:{leaf.name} ({mode}): {resolved.source}")
                        continue
                    thresholds = resolved.final(scale)
                    for metric in ("rel_l2", "max_abs"):
                        # the noise, or one rounding unit where the official float32 result is exact
                        measured = max(noise[metric], unit * scale[metric])
                        ratio = thresholds[metric] / measured if measured > 0 else 0.0
                        if ratio > 100:
                            loose.append(
                                f"{case.name}:{leaf.name} ({mode}) {metric} {thresholds[metric]:.3g} = {ratio:.0f}x noise"
                            )
                    checked += 1
    assert checked > 10_000
    assert not loose, loose[:10]


def test_a_1e_3_tolerance_would_be_thousands_of_times_the_noise(golden_f32: Path) -> None:
    """The max_diff < 1e-3 ports commonly use, against this model's measured noise."""
    with GoldenStore(golden_f32) as store:
        noises = [r.metrics["max_abs"] for case in store for r in case.oracle_records()
                  if r.mode == "isolated" and r.status == "ok" and r.metrics["max_abs"] > 0]  # fmt: skip
    assert 1e-3 / float(np.median(noises)) > 1000


@pytest.mark.official
@pytest.mark.slow
def test_the_conformance_job_passes_and_fails_below_the_noise(tmp_path: Path) -> None:
    job = [sys.executable, "-m", "conformance.project", "check", "-q"]
    ok = subprocess.run(
        [*job, "--reports", str(tmp_path / "ok")], cwd=ROOT, capture_output=True, text=True, timeout=1200
    )
    assert ok.returncode == 0, ok.stderr[-2000:]
    tight = tmp_path / "tight.toml"
    tight.write_text(POLICY.read_text().replace("k = 20", "k = 0.3").replace("floor_eps = 8", "floor_eps = 0"))
    bad = subprocess.run([*job, "--policy", str(tight), "--reports", str(tmp_path / "tight")], cwd=ROOT,
                         capture_output=True, text=True, timeout=1200)  # fmt: skip
    assert bad.returncode == 1, bad.stderr[-2000:]
    assert (tmp_path / "tight" / "qwen3_tts" / "junit.xml").read_text().count("<failure") > 10
