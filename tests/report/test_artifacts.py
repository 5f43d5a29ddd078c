"""The candidate arrays a run keeps for the report: which failing tensors the engine keeps (call limit,
byte budget, mode), how they are saved next to summary.json and read back, and that what a real run kept
are the candidate's own values."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conformance.compare.engine import FailingKeeper
from conformance.compare.results import FAIL, PASS, TensorResult
from conformance.report.artifacts import load_artifacts, save_artifacts
from conformance.store import GoldenStore


def tensor(key: str, call: int = 0, mode: str = "chained", status: str = FAIL, shape=(2, 3), case: str = "c",
           role: str = "outputs/0") -> TensorResult:  # fmt: skip
    return TensorResult(case, mode, key, call, role, status, "float32", list(shape))


def test_the_keeper_keeps_failing_float_outputs_only() -> None:
    keeper = FailingKeeper(calls=4, budget=1 << 20)
    value = np.ones((2, 3), np.float32)
    keeper.offer(tensor("a", status=PASS), value)
    keeper.offer(tensor("b"), value.astype(np.int64))  # discrete: compared exactly, nothing to draw
    keeper.offer(tensor("c"), np.ones((3, 2), np.float32))  # a shape mismatch has no per-element error
    keeper.offer(tensor("d"), None)
    keeper.offer(tensor("e"), value)
    assert list(keeper.kept["c"]) == [("e", 0)]
    assert keeper.kept["c"][("e", 0)]["outputs/0"] is not value  # a copy: the candidate may reuse its buffers
    np.testing.assert_array_equal(keeper.kept["c"][("e", 0)]["outputs/0"], value)


def test_the_keeper_stops_after_a_few_failing_calls_per_case_and_mode() -> None:
    keeper = FailingKeeper(calls=2, budget=1 << 20)
    value = np.zeros((2, 3), np.float64)
    for call in range(4):
        keeper.offer(tensor("m", call), value)
        keeper.offer(tensor("m", call, role="outputs/1"), value)  # a second output of a kept call is kept too
        keeper.offer(tensor("m", call, mode="isolated"), value)
    keeper.offer(tensor("m", 9, case="other"), value)
    kept = keeper.kept["c"]
    assert sorted(kept) == [("m", 0), ("m", 1)]
    assert set(kept[("m", 0)]) == {"outputs/0", "outputs/1", "isolated:outputs/0"}
    assert list(keeper.kept["other"]) == [("m", 9)]


def test_the_keeper_respects_its_byte_budget_for_the_whole_run() -> None:
    keeper = FailingKeeper(calls=100, budget=1000)
    keeper.offer(tensor("big", shape=(200,)), np.zeros(200, np.float64))  # 1600 bytes: never fits
    keeper.offer(tensor("a", shape=(100,)), np.zeros(100, np.float32))  # 400
    keeper.offer(tensor("b", shape=(100,), case="d"), np.zeros(100, np.float32))  # 800
    keeper.offer(tensor("c", shape=(100,)), np.zeros(100, np.float32))  # would be 1200
    assert keeper.used == 800
    assert list(keeper.kept["c"]) == [("a", 0)] and list(keeper.kept["d"]) == [("b", 0)]


SUMMARY = {"started_utc": "2026-01-01T00:00:00Z", "candidate": "impl", "goldens": "g.h5"}


def test_artifacts_round_trip_through_npz_and_belong_to_their_run(tmp_path: Path) -> None:
    arrays = {"case a": {(":generate", 0): {"outputs/0/0": np.arange(12).reshape(3, 4)},
                         ("x.conv", 2): {"isolated:outputs/0": np.linspace(0, 1, 6, dtype=np.float32).reshape(1, 2, 3)}}}  # fmt: skip
    path = save_artifacts(arrays, tmp_path / "artifacts.npz", SUMMARY)
    assert path is not None and not list(tmp_path.glob(".*tmp*"))
    back = load_artifacts(path, SUMMARY)
    assert back is not None and set(back["case a"]) == {(":generate", 0), ("x.conv", 2)}
    np.testing.assert_array_equal(back["case a"][(":generate", 0)]["outputs/0/0"], np.arange(12).reshape(3, 4))
    kept = back["case a"][("x.conv", 2)]["isolated:outputs/0"]
    assert kept.dtype == np.float32 and kept.shape == (1, 2, 3)
    assert load_artifacts(path, {**SUMMARY, "started_utc": "2026-01-02T00:00:00Z"}) is None  # another run's arrays
    assert load_artifacts(tmp_path / "missing.npz", SUMMARY) is None
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    assert load_artifacts(tmp_path / "broken.npz", SUMMARY) is None
    assert save_artifacts({}, path, SUMMARY) is None and not path.exists()  # a stale file is removed


@pytest.mark.official
@pytest.mark.slow
def test_a_real_run_keeps_the_candidates_values_of_the_blamed_tensor_in_both_modes(planted_reports: Path) -> None:
    from .conftest import BLAMED

    summary = json.loads((planted_reports / "summary.json").read_text())
    artifacts = load_artifacts(planted_reports / "artifacts.npz", summary)
    assert artifacts is not None
    with GoldenStore(summary["goldens"]) as store:
        for case in summary["cases"]:
            kept = artifacts[case["case"]][(BLAMED, 0)]
            golden = store.case(case["case"]).tensor(BLAMED, 0, "outputs/0")
            for mode, role in (("chained", "outputs/0"), ("isolated", "isolated:outputs/0")):
                verdict = next(t for t in case["tensors"] if t["key"] == BLAMED and t["mode"] == mode
                               and t["role"] == "outputs/0")  # fmt: skip
                error = np.abs(kept[role].astype(np.float64) - golden.astype(np.float64))
                assert error.max() == pytest.approx(verdict["metrics"]["max_abs"], rel=1e-6)
            # the subject's retained outputs (the waveform) are still there, beside the failing tensors
            assert any(
                role.startswith("outputs/audio_values") for roles in artifacts[case["case"]].values() for role in roles
            )
