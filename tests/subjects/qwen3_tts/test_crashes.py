"""A candidate that crashes is not a divergence: its cases get an `error` verdict with the exception's one-line
message (the traceback whole in summary.json), the other cases are still judged, every report is written and
the run exits 2 with one line. Each test builds the crashing candidate a real port or fork would be."""

from __future__ import annotations

import html
import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conformance.cli import main
from conformance.compare import engine
from conformance.compare.policy import load_policy
from conformance.report import write_reports
from conformance.store import GoldenStore
from conformance.subjects.qwen3_tts.impl_binding import ImplCandidate
from conformance.subjects.qwen3_tts.subject import SUBJECT

ROOT = Path(__file__).resolve().parents[3]
POLICY = ROOT / "conformance-policy.toml"
# what a fork written for another transformers major raises while loading the official checkpoint
FORK_ERROR = "'Qwen3TTSConfig' object has no attribute 'talker_config'"


def check(
    capsys: pytest.CaptureFixture[str], golden: Path, reports: Path, candidate: str, *cases: str
) -> tuple[int, list[str]]:
    capsys.readouterr()
    code = main(["check", "--goldens", str(golden), "--candidate", candidate, "--policy", str(POLICY),
                 "--reports", str(reports), "--cases", *cases])  # fmt: skip
    return code, [line for line in capsys.readouterr().err.splitlines() if line.startswith("conformance: error:")]


def reports_of(folder: Path) -> tuple[dict[str, Any], str, ET.Element, str]:
    summary = json.loads((folder / "summary.json").read_text())
    return (summary, (folder / "summary.md").read_text(), ET.parse(folder / "junit.xml").getroot(),
            html.unescape((folder / "index.html").read_text()))  # fmt: skip


def suite(junit: ET.Element, name: str) -> ET.Element:
    found = junit.find(f"testsuite[@name='{name}']")
    assert found is not None, [s.get("name") for s in junit]
    return found


@pytest.mark.official
def test_a_fork_that_raises_in_from_pretrained_gets_an_error_verdict_and_the_other_cases_are_judged(
    golden_f32: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("torch")
    from conformance.subjects.qwen3_tts.checkpoints import official

    def broken(cls: type, *args: Any, **kwargs: Any) -> Any:
        raise AttributeError(FORK_ERROR)

    # the official package as a broken fork ships it: the TTS model no longer loads, the codec (loaded through
    # Qwen3TTSTokenizer.from_pretrained) still does
    monkeypatch.setattr(official().inference_model.Qwen3TTSModel, "from_pretrained", classmethod(broken))
    code, errors = check(capsys, golden_f32, tmp_path, "official", "codec_decode_short", "tts_custom_voice")
    line = f"AttributeError while loading or preparing the case: {FORK_ERROR}"
    assert code == 2
    assert errors == [f"conformance: error: the candidate crashed on case tts_custom_voice: {line}"]
    summary, markdown, junit, page = reports_of(tmp_path)
    assert summary["verdict"] == "error" and summary["exit_code"] == 2
    cases = {case["case"]: case for case in summary["cases"]}
    assert cases["codec_decode_short"]["verdict"] == "pass" and cases["codec_decode_short"]["counts"]["pass"] > 300
    crashed = cases["tts_custom_voice"]
    assert crashed["verdict"] == "error" and crashed["error"]["stage"] == "prepare"
    assert crashed["error"]["line"] == line and crashed["error"]["type"] == "AttributeError"
    assert (
        "Traceback (most recent call last)" in crashed["error"]["traceback"]
        and "broken" in crashed["error"]["traceback"]
    )
    assert summary["candidate"].startswith("official qwen-tts 0.1.1")  # it is still the recorded distribution
    assert "conformance: error (exit 2)" in markdown and f"- tts_custom_voice: {line}" in markdown
    assert "| tts_custom_voice | error |" in markdown and "| codec_decode_short | pass |" in markdown
    errored = suite(junit, "tts_custom_voice.isolated").find("testcase/error")
    assert errored is not None and errored.get("message") == line and "Traceback" in (errored.text or "")
    assert suite(junit, "codec_decode_short.chained").get("errors") == "0" and junit.get("errors") == "1"
    assert f'<p class="error-line">{line}</p>' in page and 'class="case-error" data-stage="prepare"' in page


@pytest.mark.official
def test_a_candidate_whose_construction_raises_errors_every_case_with_reports_written(
    golden_f32: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("torch")
    from conformance.subjects.qwen3_tts import official_binding

    def cannot_load(self: Any, *args: Any, **kwargs: Any) -> None:
        raise OSError("libqwen_fork_kernels.so: cannot open shared object file: No such file or directory")

    monkeypatch.setattr(official_binding.OfficialCandidate, "__init__", cannot_load)
    code, errors = check(capsys, golden_f32, tmp_path, "official", "codec_decode_short", "codec_encode")
    assert code == 2 and len(errors) == 1
    assert errors[0].startswith("conformance: error: the candidate crashed on case codec_decode_short (and 1 more "
                                "case(s)): OSError while loading the candidate: libqwen_fork_kernels.so")  # fmt: skip
    summary, markdown, junit, page = reports_of(tmp_path)
    assert summary["candidate"] == "official (failed to load)"
    assert [(c["verdict"], c["error"]["stage"]) for c in summary["cases"]] == [("error", "load")] * 2
    for name in ("codec_decode_short", "codec_encode"):
        assert f"- {name}: OSError while loading the candidate: libqwen_fork_kernels.so" in markdown
    assert len(junit.findall("testsuite/testcase/error")) == 2 and page.count('data-stage="load"') == 2


class FixedBufferPort(ImplCandidate):
    """A NumPy port whose second decoder block copies its input into a buffer preallocated for 16 frames: it
    runs the first modules of a case, then numpy raises a broadcasting error mid-case."""

    def prepare(self, store: GoldenStore, case: Any) -> None:
        super().prepare(store, case)
        block = self.roots["speech_tokenizer"].get("decoder.decoder.2")
        if getattr(block, "fixed_buffer", False):  # the loaded model is reused across cases
            return
        forward = block.forward

        def with_buffer(hidden: np.ndarray) -> np.ndarray:
            buffer = np.zeros((*hidden.shape[:2], 16), hidden.dtype)
            buffer[...] = hidden
            return forward(buffer)

        block.forward, block.fixed_buffer = with_buffer, True


def test_a_candidate_that_raises_mid_case_keeps_what_it_produced_before_and_errors_the_case(
    golden_f32: Path, tmp_path: Path
) -> None:
    with GoldenStore(golden_f32) as store:
        options = engine.CheckOptions(modes=("chained",), cases=["codec_decode_long"], subject=SUBJECT)
        run = engine.check(store, FixedBufferPort(), load_policy(POLICY), options)
    outcome = run.cases[0]
    assert run.exit_code == 2 and outcome.verdict == "error"
    assert outcome.error is not None and outcome.error.stage == "chained" and outcome.error.type == "ValueError"
    assert "could not broadcast" in outcome.error.message and "with_buffer" in outcome.error.traceback
    judged = [t for t in outcome.outputs() if t.status == "pass"]
    unreached = [t for t in outcome.outputs() if t.status == "error"]
    assert judged and unreached and max(t.seq_end for t in judged) < min(t.seq_end for t in unreached)
    assert all(t.message.startswith("not reached") for t in unreached)
    assert run.error_line.startswith("the candidate crashed on case codec_decode_long: ValueError while running the "
                                     "case end to end: could not broadcast")  # fmt: skip
    write_reports(run, tmp_path)
    summary, markdown, junit, page = reports_of(tmp_path)
    assert (
        summary["cases"][0]["error"]["stage"] == "chained" and "Traceback" in summary["cases"][0]["error"]["traceback"]
    )
    assert f"- codec_decode_long: {outcome.error.line}" in markdown
    assert suite(junit, "codec_decode_long.chained").find("testcase[@name='(the candidate crashed)']/error") is not None
    assert 'data-stage="chained"' in page and outcome.error.line in page
