"""Check runs shared by the report tests, made once per session through the real CLI (so summary.json,
history.jsonl, artifacts.npz and index.html are exactly what `conformance check` writes):

* planted: the official float32 model with one decoder convolution's weight scaled by 1 + 1e-3, on two
  cases (fails, blamed on that convolution in both modes);
* full: the official float64 model on every committed golden case (passes; the size budget's subject).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conformance.cli import main

ROOT = Path(__file__).resolve().parents[2]
POLICY = ROOT / "conformance-policy.toml"
PERTURBED = "speech_tokenizer.decoder.decoder.2.block.3.conv1.conv.weight"
BLAMED = PERTURBED.rsplit(".", 1)[0]
PLANTED_CASES = ("codec_decode_long", "end_to_end")


def _check(folder: Path, golden: Path, candidate: str, *extra: str) -> int:
    return main(["check", "--goldens", str(golden), "--candidate", candidate, "--policy", str(POLICY),
                 "--reports", str(folder), "-q", *extra])  # fmt: skip


@pytest.fixture(scope="session")
def planted_reports(tmp_path_factory: pytest.TempPathFactory, golden_f32: Path) -> Path:
    pytest.importorskip("torch")
    folder = tmp_path_factory.mktemp("planted")
    code = _check(folder, golden_f32, f"official:float32:perturb={PERTURBED}", "--cases", *PLANTED_CASES)
    assert code == 1
    return folder


@pytest.fixture(scope="session")
def full_reports(tmp_path_factory: pytest.TempPathFactory, golden_f32: Path) -> Path:
    pytest.importorskip("torch")
    folder = tmp_path_factory.mktemp("full")
    assert _check(folder, golden_f32, "official:float64") == 0
    return folder
