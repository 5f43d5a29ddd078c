"""The HTML report of real check runs, parsed: verdict, counts, blamed module, panels, self-containment,
re-rendering with `conformance report`, rendering without the golden store or torch, and the size budget."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from conformance.cli import main
from conformance.report import writers
from conformance.report.artifacts import load_artifacts
from conformance.report.html import render_report

from .conftest import BLAMED, PLANTED_CASES, _check
from .page import Node, parse

COMMITTED_CASES = 21  # the cases of the committed Qwen3-TTS golden (13, and 8 option cases: docs/options.md)

pytestmark = [pytest.mark.official, pytest.mark.slow]

MAX_BYTES = 15 * 1024 * 1024


def summary_of(folder: Path) -> dict:
    return json.loads((folder / "summary.json").read_text())


def header_counts(page: Node) -> dict[str, int]:
    return {n.attrs["data-status"]: int(n.find("b").text) for n in page.by_id("counts").find_all("div", cls="count")}


def expected_header_counts(counts: dict[str, int]) -> dict[str, int]:
    shown = {"pass": counts["pass"], "fail": counts["fail"], "xfail": counts["xfail"],
             "not_covered": counts["not_covered"]}  # fmt: skip
    shown.update({s: counts[s] for s in ("error", "skipped", "xpass") if counts[s]})
    return shown


def overview(page: Node) -> dict[str, Node]:
    return {row.attrs["data-case"]: row for row in page.by_id("overview").find_all("tr") if "data-case" in row.attrs}


def blame_cells(row: Node) -> dict[str, str]:
    return {cell.attrs["data-mode"]: cell.text for cell in row.find_all("td", cls="blame")}


def case_panel(page: Node, name: str) -> Node:
    return page.find("details", cls="case", data_case=name)


def assert_self_contained(page: Node) -> None:
    """Nothing on the page may point outside it: every src is a data: URI, every href an in-page anchor."""
    for node in page.walk():
        if "src" in node.attrs:
            assert node.attrs["src"].startswith("data:"), (node.tag, node.attrs["src"][:80])
        if "href" in node.attrs:
            assert node.attrs["href"].startswith("#"), (node.tag, node.attrs["href"])
        assert node.tag not in ("link", "iframe", "object", "embed"), node.tag
    policy = page.find("meta", http_equiv="Content-Security-Policy").attrs["content"]
    assert "default-src 'none'" in policy


def test_a_passing_run_reports_pass_with_its_counts_and_no_blame(full_reports: Path) -> None:
    summary = summary_of(full_reports)
    page = parse(full_reports / "index.html")
    assert page.by_id("verdict").attrs["data-verdict"] == "pass" == summary["verdict"]
    assert page.by_id("verdict").text == "PASS"
    assert header_counts(page) == expected_header_counts(summary["counts"])
    assert header_counts(page)["pass"] > 10000 and header_counts(page)["fail"] == 0
    rows = overview(page)
    assert list(rows) == [c["case"] for c in summary["cases"]] and len(rows) == COMMITTED_CASES
    for case in summary["cases"]:
        row = rows[case["case"]]
        assert row.attrs["data-verdict"] == "pass"
        assert int(row.find("td", data_count="pass").text) == case["counts"]["pass"] + case["counts"]["xpass"]
        assert int(row.find("td", data_count="fail").text) == 0
        assert set(blame_cells(row).values()) == {"—"}
        panel = case_panel(page, case["case"])
        assert "open" not in panel.attrs
        assert panel.find("img", cls="drift").attrs["src"].startswith("data:image/png;base64,")
    assert not page.find_all("section", cls="divergence")
    assert page.by_id("command").text == summary["command"]
    assert_self_contained(page)


def test_a_planted_divergence_is_reported_with_its_blamed_module_in_both_modes(planted_reports: Path) -> None:
    summary = summary_of(planted_reports)
    page = parse(planted_reports / "index.html")
    assert page.by_id("verdict").attrs["data-verdict"] == "fail" == summary["verdict"]
    assert page.by_id("exit-code").text == "1"
    counts = header_counts(page)
    assert counts == expected_header_counts(summary["counts"]) and counts["fail"] > 0
    rows = overview(page)
    assert list(rows) == list(PLANTED_CASES)
    for case in summary["cases"]:
        row = rows[case["case"]]
        assert row.attrs["data-verdict"] == "fail"
        assert int(row.find("td", data_count="fail").text) == case["counts"]["fail"] + case["counts"]["error"] > 0
        assert blame_cells(row) == {"chained": f"{BLAMED}#0", "isolated": f"{BLAMED}#0"}
        panel = case_panel(page, case["case"])
        assert "open" in panel.attrs  # failing cases open by default
        divergence = panel.find_all("section", cls="divergence")
        assert [d.attrs["data-blamed"] for d in divergence] == [BLAMED]
        assert divergence[0].attrs["data-modes"] == "chained,isolated"
        assert BLAMED in divergence[0].find("code", cls="blamed").text
        heatmaps = {img.attrs["data-mode"]: img.attrs["src"] for img in divergence[0].find_all("img", cls="heatmap")}
        assert set(heatmaps) == {"chained", "isolated"}
        assert all(src.startswith("data:image/png;base64,") for src in heatmaps.values())
        # the inputs of the blamed call conform in the chained run: that is what makes it the first divergence
        inputs = divergence[0].find_all(
            "tr", where=lambda n: n.attrs.get("data-status") is not None and "args/" in n.text
        )
        assert inputs and {n.attrs["data-status"] for n in inputs} == {"pass"}
    assert_self_contained(page)


def test_cases_ending_in_a_waveform_get_players_snr_and_spectrograms(planted_reports: Path) -> None:
    page = parse(planted_reports / "index.html")
    for name in PLANTED_CASES:
        audio = case_panel(page, name).find("section", cls="audio")
        players = audio.find_all("audio")
        assert len(players) == 3 and all(p.attrs["src"].startswith("data:audio/wav;base64,") for p in players)
        text = audio.text
        snr = float(text.split("SNR ")[1].split(" dB")[0])
        assert math.isfinite(snr) and 0 < snr < 120  # a 1e-3 weight change: audible in numbers, not in ears
        assert "log-mel distance" in text
        assert audio.find("img", cls="audio-figure").attrs["src"].startswith("data:image/png")


def test_a_float64_golden_gets_the_candidate_player_too(tmp_path: Path, golden_f64: Path) -> None:
    """A float64 golden keeps its case waveform in float32 while the decoder's output is float64: the candidate's
    audio is still found (it once matched by exact value across the two dtypes, and every float64 report
    showed the golden player alone)."""
    assert _check(tmp_path, golden_f64, "impl", "--cases", "codec_decode_short") == 0
    audio = case_panel(parse(tmp_path / "index.html"), "codec_decode_short").find("section", cls="audio")
    assert len(audio.find_all("audio")) == 3
    assert "SNR " in audio.text and "share one gain" in audio.text


def test_generation_cases_show_the_token_grids(planted_reports: Path) -> None:
    page = parse(planted_reports / "index.html")
    tokens = case_panel(page, "end_to_end").find("section", cls="tokens")
    grids = {g.attrs["data-grid"]: g for g in tokens.find_all("table", cls="tokgrid")}
    assert set(grids) == {"teacher-forced", "free-running"}
    # the perturbed weight is in the codec decoder, after generation: every generated code agrees
    cells = grids["free-running"].find_all("td", where=lambda n: any(c.startswith("tok-") for c in n.classes))
    assert cells and {c for n in cells for c in n.classes} <= {"tok-agree", "tok-none"}
    assert any("tok-agree" in n.classes for n in cells)


def test_a_codec_encode_shows_its_codes_without_an_empty_teacher_forced_grid(full_reports: Path) -> None:
    tokens = case_panel(parse(full_reports / "index.html"), "codec_encode").find("section", cls="tokens")
    grids = {g.attrs["data-grid"]: g for g in tokens.find_all("table", cls="tokgrid")}
    assert set(grids) == {"free-running"}  # an encoder has codes but no logits heads
    assert "Teacher-forced" not in tokens.text
    cells = grids["free-running"].find_all("td", where=lambda n: "tok-agree" in n.classes)
    assert cells  # official float64 encodes the same codes


def test_conformance_report_redraws_the_same_page_from_the_saved_summary_and_arrays(planted_reports: Path,
                                                                                   tmp_path: Path) -> None:  # fmt: skip
    assert (planted_reports / "artifacts.npz").exists()
    out = tmp_path / "again.html"
    assert main(["report", "--summary", str(planted_reports / "summary.json"), "-o", str(out)]) == 0
    first, again = parse(planted_reports / "index.html"), parse(out)
    assert again.by_id("verdict").attrs == first.by_id("verdict").attrs
    assert header_counts(again) == header_counts(first)
    for name in PLANTED_CASES:
        assert blame_cells(overview(again)[name]) == blame_cells(overview(first)[name])
        assert len(case_panel(again, name).find_all("img", cls="heatmap")) == 2
    assert "again.html" in (tmp_path / "summary.md").read_text()


def test_the_report_renders_without_the_golden_store_with_less_detail(planted_reports: Path, tmp_path: Path) -> None:
    summary = summary_of(planted_reports)
    summary["goldens"] = str(tmp_path / "moved-away.h5")
    out = render_report(summary, tmp_path / "index.html", history=[], artifacts=None)
    page = parse(out)
    assert page.by_id("verdict").attrs["data-verdict"] == "fail"
    assert header_counts(page) == expected_header_counts(summary["counts"])
    assert blame_cells(overview(page)["codec_decode_long"]) == {"chained": f"{BLAMED}#0", "isolated": f"{BLAMED}#0"}
    assert not page.find_all("img", cls="heatmap") and not page.find_all("audio")
    assert "moved-away.h5 not found" in page.find("header").text


def test_a_relative_golden_path_is_found_from_the_reports_folder(planted_reports: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """`conformance report` run from another directory: reports/ beside goldens/ still finds the golden."""
    summary = summary_of(planted_reports)
    golden = Path(summary["goldens"])
    (tmp_path / "project" / "goldens").mkdir(parents=True)
    (tmp_path / "project" / "goldens" / golden.name).symlink_to(golden)
    summary["goldens"] = f"goldens/{golden.name}"
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    artifacts = load_artifacts(planted_reports / "artifacts.npz", summary_of(planted_reports))
    page = parse(
        render_report(summary, tmp_path / "project" / "reports" / "index.html", history=[], artifacts=artifacts)
    )
    assert len(page.find_all("img", cls="heatmap")) == 4
    assert "not found" not in page.find("header").text


def test_history_flags_the_modules_whose_error_grew_since_the_last_run(planted_reports: Path, tmp_path: Path) -> None:
    summary = summary_of(planted_reports)
    history = writers.read_history(planted_reports / "history.jsonl")
    assert len(history) == 1 and history[0]["started_utc"] == summary["started_utc"]
    earlier = json.loads(json.dumps(history[0]))
    earlier["started_utc"] = "2000-01-01T00:00:00Z"
    shrunk = earlier["worst_rel_l2"]["codec_decode_long/chained"]
    assert shrunk[BLAMED] > 0
    shrunk[BLAMED] /= 10
    page = parse(render_report(summary, tmp_path / "grew.html", history=[earlier, *history]))
    assert page.by_id("grew-count").attrs["data-count"] == "1"
    flagged = page.by_id("history").find_all("tr", cls="grew")
    assert any(BLAMED in row.text and "codec_decode_long/chained" in row.text for row in flagged)
    same = parse(render_report(summary, tmp_path / "same.html", history=[history[0], *history]))
    assert same.by_id("grew-count").attrs["data-count"] == "0"


def test_the_report_room_renders_without_torch(planted_reports: Path, tmp_path: Path) -> None:
    script = f"""
import json, sys
sys.modules["torch"] = None  # any `import torch` now raises ImportError
from pathlib import Path
from conformance.report.artifacts import load_artifacts
from conformance.report.html import render_report
folder = Path({str(planted_reports)!r})
summary = json.loads((folder / "summary.json").read_text())
render_report(summary, Path({str(tmp_path / "no-torch.html")!r}), [], load_artifacts(folder / "artifacts.npz", summary))
print(sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers", "qwen_tts") and sys.modules[m]))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
    assert len(parse(tmp_path / "no-torch.html").find_all("img", cls="heatmap")) == 4


def test_the_report_of_every_committed_golden_case_stays_under_15_mb(full_reports: Path) -> None:
    size = (full_reports / "index.html").stat().st_size
    assert size < MAX_BYTES, f"{size / 1e6:.1f} MB"
    page = parse(full_reports / "index.html")
    assert len(page.find_all("details", cls="case")) == COMMITTED_CASES
    assert len(page.find_all("img", cls="drift")) == COMMITTED_CASES
    tree = json.loads(page.by_id("tree-data").raw_text)
    assert len(tree["rows"]) > 3000  # every module of every case and mode is in the tree, aggregated
