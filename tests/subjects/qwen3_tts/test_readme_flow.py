"""The README's record-then-check example, run as written for every case: one recording of all cases, then the
check of the NumPy impl in a folder holding the project's policy, exits 0 (the float64 twin that `record`
writes by default calibrates the chained thresholds; no fallback)."""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path

import pytest

pytest.importorskip("torch")

from conformance.cli import main as cli_main
from conformance.subjects.qwen3_tts.cases import CASES

ROOT = Path(__file__).resolve().parents[3]
RECORD = "conformance record --cases tts_custom_voice -o golden.h5"
CHECK = "conformance check --goldens golden.h5 --candidate impl"


def readme_command(start: str) -> list[str]:
    """The README's command that starts so, as words (its comment dropped)."""
    for line in (ROOT / "README.md").read_text().splitlines():
        if line.startswith(start):
            return shlex.split(line.split("#")[0])[1:]
    raise AssertionError(f"the README no longer has `{start}`: update this test with it")


@pytest.mark.slow
@pytest.mark.official
def test_the_readmes_record_then_check_passes_the_impl_on_every_case(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    record, check = readme_command(RECORD), readme_command(CHECK)
    shutil.copy(ROOT / "conformance-policy.toml", tmp_path)  # "in the project folder", without writing into it
    monkeypatch.chdir(tmp_path)
    cases = record.index("--cases") + 1
    record[cases : cases + 1] = [case.name for case in CASES]  # every case, in one recording
    assert cli_main(record) == 0
    assert cli_main([*check, "-q", "--no-html"]) == 0
    summary = json.loads((tmp_path / "reports" / "summary.json").read_text())
    assert summary["verdict"] == "pass" and [c["case"] for c in summary["cases"]] == [c.name for c in CASES]
    assert summary["notes"] == []  # calibrated on the twin, not on a fallback
