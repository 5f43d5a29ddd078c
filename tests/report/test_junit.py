"""junit.xml as a CI server reads it: one testsuite per case × mode, one testcase per module, a failure on
every module that diverged (the blamed one included) and on modules the candidate lacks, totals that add up."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from conformance.report import writers

from .conftest import BLAMED, PLANTED_CASES

pytestmark = [pytest.mark.official, pytest.mark.slow]


def test_junit_has_a_testcase_per_case_mode_and_module(planted_reports: Path) -> None:
    summary = json.loads((planted_reports / "summary.json").read_text())
    root = ET.parse(planted_reports / "junit.xml").getroot()
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == [f"{c}.{m}" for c in PLANTED_CASES for m in ("isolated", "chained")]
    total = 0
    for suite, (case, mode) in zip(suites, [(c, m) for c in summary["cases"] for m in c["modes"]]):
        modules = {t["key"] for t in case["tensors"] if t["mode"] == mode}
        names = [t.get("name") for t in suite.findall("testcase")]
        assert sorted(names) == sorted(modules) and len(names) == len(set(names))
        failed = {t.get("name") for t in suite.findall("testcase") if t.find("failure") is not None}
        diverged = {t["key"] for t in case["tensors"] if t["mode"] == mode and t["status"] == "fail"}
        assert failed == diverged and BLAMED in failed
        assert int(suite.get("tests")) == len(names) and int(suite.get("failures")) == len(failed)
        total += len(names)
    assert int(root.get("tests")) == total and int(root.get("failures")) > 0


def test_modules_the_candidate_lacks_fail_in_junit_unless_partial_runs_are_allowed(tmp_path: Path) -> None:
    tensor = {"key": "m.a", "call": 0, "role": "outputs/0", "mode": "chained", "status": "not_covered",
              "message": "no dump tensor", "seq_end": 1, "margin": None, "metrics": None}  # fmt: skip
    summary = {"allow_partial": False, "cases": [{"case": "c", "modes": ["chained"], "seconds": {"chained": 0.1},
                                                   "tensors": [tensor]}]}  # fmt: skip
    writers.write_junit(summary, tmp_path / "gate.xml")
    assert ET.parse(tmp_path / "gate.xml").getroot().find("testsuite/testcase/failure") is not None
    writers.write_junit({**summary, "allow_partial": True}, tmp_path / "partial.xml")
    partial = ET.parse(tmp_path / "partial.xml").getroot()
    assert partial.find("testsuite/testcase/failure") is None
    assert partial.find("testsuite/testcase/skipped").get("message").startswith("not covered")
