"""Checking cases in worker processes gives the verdicts of a serial run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

CASES = ["codec_decode_short", "speaker_encoder", "tts_dialect"]


def _verdicts(summary: dict) -> list:
    return [
        (case["case"], case["verdict"], [(t["key"], t["call"], t["role"], t["mode"], t["status"],
                                          json.dumps(t["metrics"], sort_keys=True)) for t in case["tensors"]])
        for case in summary["cases"]
    ]  # fmt: skip


@pytest.mark.official
def test_parallel_check_gives_the_serial_verdicts(golden_f32: Path, tmp_path: Path) -> None:
    summaries = {}
    for jobs in (1, 2):
        reports = tmp_path / f"jobs{jobs}"
        command = [sys.executable, "-m", "conformance.cli", "check", "--goldens", str(golden_f32), "--candidate",
                   "official:float64", "--cases", *CASES, "--reports", str(reports), "--jobs", str(jobs), "-q",
                   "--no-html"]  # fmt: skip
        process = subprocess.run(command, capture_output=True, text=True, timeout=600)
        assert process.returncode == 0, process.stderr[-2000:]
        summaries[jobs] = json.loads((reports / "summary.json").read_text())
    assert [c["case"] for c in summaries[2]["cases"]] == CASES
    assert _verdicts(summaries[1]) == _verdicts(summaries[2])
    assert summaries[1]["counts"] == summaries[2]["counts"]
    # what ran is what the workers loaded (the parent never loads the candidate): the same as a serial run's
    assert summaries[2]["candidate"] == summaries[1]["candidate"]
    assert summaries[2]["candidate"].startswith("official qwen-tts 0.1.1 (transformers ")
    assert summaries[2]["candidate_provenance"] == summaries[1]["candidate_provenance"]
