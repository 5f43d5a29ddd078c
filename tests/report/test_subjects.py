"""The report follows the case's subject (the toy subject, tests/toy_subject.py): a 1-D token layout is one row of
positions, a subject without signals gets no audio panel, and a subject's own panels are drawn in its cases."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")

from conformance import subjects
from conformance.cli import main
from tests.conftest import ToyGoldens
from tests.toy_subject import NAME, SUBJECT, ToySubject

POLICY = Path(__file__).resolve().parents[2] / "conformance-policy.toml"
FLIPPED_HEAD = "official:perturb=lm_head.weight@-2"  # every token differs from the first position on


def case_panel(page: str, case: str) -> str:
    start = page.index(f'id="case-{case}"')
    end = page.find('<details class="case"', start + 1)
    return page[start : end if end > 0 else len(page)]


def check(toy: ToyGoldens, folder: Path, candidate: str) -> tuple[dict[str, Any], str]:
    code = main(["check", "--goldens", str(toy.golden), "--candidate", candidate, "--policy", str(POLICY),
                 "--reports", str(folder), "-q"])  # fmt: skip
    assert code in (0, 1)
    return json.loads((folder / "summary.json").read_text()), html.unescape((folder / "index.html").read_text())


def test_one_dimensional_tokens_are_one_row_of_positions_and_no_audio_is_drawn(toy: ToyGoldens, tmp_path: Path) -> None:
    summary, page = check(toy, tmp_path, FLIPPED_HEAD)
    greedy = next(case for case in summary["cases"] if case["case"] == "toy_greedy")
    assert greedy["subject"] == NAME and greedy["signals"] == []
    assert greedy["first_divergence"]["index"] == [0] and greedy["first_divergence"]["position"] == 0
    panel = case_panel(page, "toy_greedy")
    grids = re.findall(r'<table class="tokgrid" data-grid="([^"]+)">(.*?)</table>', panel, flags=re.S)
    assert [name for name, _ in grids] == ["teacher-forced", "free-running"]
    for _, grid in grids:
        rows = re.findall(r"<tr>(.*?)</tr>", grid, flags=re.S)
        assert len(rows) == 2 and "<th>position</th>" in rows[0]  # the header, then one row of tokens
        assert rows[0].count("<th>") == 1 + 6  # six generated positions
    assert "first generated difference: position 0 (logit_drift)" in " ".join(panel.split())
    assert 'class="audio"' not in page


def test_a_subjects_own_panels_are_drawn_in_its_cases(toy: ToyGoldens, tmp_path: Path) -> None:
    class WithPanel(ToySubject):
        def report_panels(self, case: dict[str, Any], golden: Any) -> list[subjects.Panel]:
            tokens = (
                golden.output("tokens").tolist() if golden is not None and "tokens" in golden.output_names() else []
            )
            return [subjects.Panel("Decoded text", f"{case['case']}: {len(tokens)} tokens",
                                   rows=(("tokens", " ".join(map(str, tokens))),))]  # fmt: skip

    subjects.register(WithPanel(), replace=True)
    try:
        _, page = check(toy, tmp_path, "impl")
    finally:
        subjects.register(SUBJECT, replace=True)
    assert "<h3>Decoded text</h3>" in case_panel(page, "toy_greedy")
    assert "toy_greedy: 6 tokens" in page and "toy_prefill: 0 tokens" in page
