"""The reports of a check of the Qwen3 causal LM, as a user reads them: token grids over (sequence, position) with
one row per sequence of the batch and one column per generated position (the prompt is not drawn), the first
generated difference where the port went wrong, no audio panel; JUnit, summary.json and summary.md for it; the page
redrawn from summary.json alone by `conformance report`."""

from __future__ import annotations

import html
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from conformance.cli import main
from conformance.compare import check_goldens
from conformance.compare.policy import load_policy
from conformance.report import write_reports

from ...conftest import GOLDENS, ROOT
from .test_candidates import ForgetsThePaddingMask

GOLDEN = GOLDENS / "qwen3_lm-tiny-float32.h5"
WIDTH, NEW = 9, 8  # the padded prompt's width, the generated tokens


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("lm_reports")
    run = check_goldens(GOLDEN, ForgetsThePaddingMask(), load_policy(ROOT / "conformance-policy.toml"))
    write_reports(run, folder)
    return folder


def case_section(page: str, case: str) -> str:
    start = page.index(f'id="case-{case}"')
    end = page.find('<details class="case"', start + 1)
    return page[start : end if end > 0 else len(page)]


def grids(section: str) -> dict[str, list[list[str]]]:
    """{grid name: rows of cells (header row first)}, each cell its text or its class."""
    out = {}
    for name, body in re.findall(r'<table class="tokgrid" data-grid="([^"]+)">(.*?)</table>', section, flags=re.S):
        rows = []
        for row in re.findall(r"<tr>(.*?)</tr>", body, flags=re.S):
            cells = re.findall(r'<t[hd](?: class="([^"]*)")?[^>]*>(.*?)</t[hd]>', row, flags=re.S)
            rows.append([cls or " ".join(re.sub(r"<[^>]+>", " ", text).split()) for cls, text in cells])
        out[name] = rows
    return out


def test_summary_json_states_the_token_layout_and_no_signal(reports: Path) -> None:
    summary = json.loads((reports / "summary.json").read_text())
    cases: dict[str, Any] = {case["case"]: case for case in summary["cases"]}
    assert all(case["subject"] == "qwen3_lm" and case["signals"] == [] for case in cases.values())
    assert cases["lm_prefill"]["token_layout"] is None
    for name in ("lm_greedy", "lm_padded_batch"):
        assert cases[name]["token_layout"] == {"location": [":generate", 0, "outputs/0"], "axes": ["sequence", "position"],
                                               "step_axis": 1, "batch_axis": 0, "generated_from": WIDTH}  # fmt: skip
    first = cases["lm_padded_batch"]["first_divergence"]
    assert (first["index"], first["logits"]) == ([1, WIDTH], "lm_head#0")
    assert cases["lm_greedy"]["first_divergence"] is None


def test_token_grids_have_a_row_per_sequence_and_a_column_per_generated_position(reports: Path) -> None:
    page = html.unescape((reports / "index.html").read_text())
    assert 'class="audio"' not in page  # a language model has no audio panel
    header = ["sequence \\ position", *map(str, range(WIDTH, WIDTH + NEW))]
    batch = grids(case_section(page, "lm_padded_batch"))
    assert list(batch) == ["teacher-forced", "free-running"]
    for rows in batch.values():
        assert rows[0] == header and len(rows) == 3 and [len(row) for row in rows[1:]] == [1 + NEW, 1 + NEW]
    free = batch["free-running"]
    assert free[1][1:] == ["tok-agree"] * NEW  # the unpadded sequence generated the golden tokens
    assert free[2][1] == "tok-logit_drift" and set(free[2][2:]) <= {"tok-after", "tok-agree"}
    assert "first generated difference: sequence 1, position 9 (logit_drift)" in " ".join(page.split())
    greedy = grids(case_section(page, "lm_greedy"))
    assert [len(rows) for rows in greedy.values()] == [2, 2] and greedy["free-running"][1][1:] == ["tok-agree"] * NEW


def test_junit_and_markdown_name_the_failing_case_and_its_blame(reports: Path) -> None:
    root = ET.parse(reports / "junit.xml").getroot()
    suites = {suite.get("name"): suite for suite in root.findall("testsuite")}
    assert sorted(suites) == sorted(f"{case}.{mode}" for case in ("lm_prefill", "lm_greedy", "lm_padded_batch")
                                    for mode in ("isolated", "chained"))  # fmt: skip
    failing = {name for name, suite in suites.items() if int(suite.get("failures", 0))}
    assert failing == {"lm_padded_batch.isolated", "lm_padded_batch.chained"}
    markdown = (reports / "summary.md").read_text()
    assert "| lm_padded_batch | fail | `(root)#0` | `model#0` |" in markdown
    assert "lm_padded_batch: 6 of 16 steps disagree, first sequence 1, position 9 (logit_drift" in markdown


def test_the_page_is_redrawn_from_the_summary_alone(reports: Path, tmp_path: Path) -> None:
    redrawn = tmp_path / "again.html"
    assert main(["report", "--summary", str(reports / "summary.json"), "-o", str(redrawn)]) == 0
    page = html.unescape(redrawn.read_text())
    assert grids(case_section(page, "lm_padded_batch")) == grids(case_section(
        html.unescape((reports / "index.html").read_text()), "lm_padded_batch"))  # fmt: skip
