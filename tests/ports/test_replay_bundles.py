"""CI-facing outputs tell the whole story for every candidate kind: the blamed module of BOTH modes with its
full path (never cut by a narrow, non-terminal CI log) in the console and summary.md, and the replay bundle
`conformance export` wrote for that module call, whether the candidate is the official model, the impl or a
dump (the dump's own case is in test_foreign_port.py)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conformance.ports.export import load_bundle
from conformance.subjects.qwen3_tts.impl_binding import ImplCandidate

from .conftest import ROOT, Outcome

CASE = "codec_decode_short"
# a deep module: its path with the call index is longer than an 80-column log line leaves a table cell
OWNER = "speech_tokenizer.decoder.decoder.2.block.3.conv1.conv"


def check(cli: Callable[..., Outcome], golden: Path, candidate: str, reports: Path) -> tuple[Outcome, dict[str, Any]]:
    outcome = cli("check", "--goldens", golden, "--candidate", candidate, "--cases", CASE, "--reports", reports,
                  "--no-html", "--policy", ROOT / "conformance-policy.toml")  # fmt: skip
    return outcome, json.loads((reports / "summary.json").read_text())


def assert_blamed_with_bundles(outcome: Outcome, summary: dict[str, Any], reports: Path, export_dir: Path) -> None:
    assert outcome.code == 1, outcome.err
    blames = summary["cases"][0]["blame"]
    bundle = export_dir / CASE / "replay" / f"{OWNER}#0.safetensors"
    for mode in ("isolated", "chained"):
        assert blames[mode]["key"] == OWNER and blames[mode]["replay_bundle"] == str(bundle), (mode, blames[mode])
        assert f"blame {CASE} ({mode}): {OWNER}#0 — replay bundle: {bundle}" in outcome.out.splitlines()
    tensors, _ = load_bundle(bundle)  # the bundle is really there: one module's inputs, weights and outputs
    assert "weights/weight" in tensors and "outputs/0" in tensors
    # the console table of a non-terminal log (80 columns by default) shows the whole path in both rows
    rows = [line for line in outcome.err.splitlines() if line.startswith("│ " + CASE)]
    assert len(rows) == 2 and all(f"{OWNER}#0" in row for row in rows), rows
    markdown = (reports / "summary.md").read_text()
    assert "| case | verdict | first divergence (isolated) | first divergence (chained) |" in markdown
    assert f"| {CASE} | fail | `{OWNER}#0` | `{OWNER}#0` |" in markdown
    assert f"- {CASE}: `{OWNER}#0` → `{bundle}`" in markdown


@pytest.fixture
def narrow_log(monkeypatch: pytest.MonkeyPatch, export_dir: Path) -> Path:
    monkeypatch.delenv("COLUMNS", raising=False)  # rich's width when stderr is no terminal: 80 columns
    monkeypatch.setenv("CONFORMANCE_EXPORT_DIR", str(export_dir))
    return export_dir


@pytest.mark.official
def test_the_official_candidate_names_the_replay_bundles_of_both_blames(cli, golden_f32: Path, tmp_path: Path,
                                                                        narrow_log: Path) -> None:  # fmt: skip
    pytest.importorskip("torch")
    outcome, summary = check(cli, golden_f32, f"official:float32:perturb={OWNER}.weight", tmp_path)
    assert_blamed_with_bundles(outcome, summary, tmp_path, narrow_log)


@pytest.fixture
def wrong_weight_impl(monkeypatch: pytest.MonkeyPatch) -> None:
    """The impl as a NumPy port that loaded one convolution's weight wrong (scaled by 1 + 1e-3)."""
    prepare = ImplCandidate.prepare

    def with_wrong_weight(self: ImplCandidate, store: Any, case: Any) -> None:
        prepare(self, store, case)
        conv = self.roots["speech_tokenizer"].get(OWNER.removeprefix("speech_tokenizer."))
        if not getattr(conv, "wrong", False):  # the loaded model is reused across cases
            conv.weight, conv.wrong = conv.weight * (1 + 1e-3), True

    monkeypatch.setattr(ImplCandidate, "prepare", with_wrong_weight)


def test_a_numpy_port_with_a_wrong_weight_names_the_replay_bundles_of_both_blames(
    cli, golden_f32: Path, tmp_path: Path, narrow_log: Path, wrong_weight_impl: None
) -> None:
    outcome, summary = check(cli, golden_f32, "impl", tmp_path)
    assert_blamed_with_bundles(outcome, summary, tmp_path, narrow_log)


def test_without_an_export_folder_the_bundle_is_named_inside_any_export(
    cli, golden_f32: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, wrong_weight_impl: None
) -> None:
    monkeypatch.delenv("CONFORMANCE_EXPORT_DIR", raising=False)
    outcome, summary = check(cli, golden_f32, "impl", tmp_path)
    relative = f"{CASE}/replay/{OWNER}#0.safetensors"
    assert summary["cases"][0]["blame"]["chained"]["replay_bundle"] == relative
    assert (f"blame {CASE} (chained): {OWNER}#0 — replay bundle: {relative} (in the folder `conformance export` "
            "writes)") in outcome.out.splitlines()  # fmt: skip
