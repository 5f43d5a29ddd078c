"""Black-box gating: a port that gives only a case's final outputs (examples/blackbox_port/port.py, the NumPy impl
driven end to end from `conformance export`, run as a subprocess where torch cannot be imported, writing only
outputs/codes, outputs/waveform and outputs/sample_rate) gets a verdict on them; a decoder bug fails with audio
metrics; the official frame-count convention (max_new_tokens=N yields N-1 frames) is a note, any other length a
divergence on the common prefix; a port profile makes cases it does not support not applicable."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import load_file

from conformance.cli import main as cli_main
from conformance.store import GoldenStore

from .conftest import ROOT, Outcome, golden_outputs, no_torch_env, write_safetensors

pytestmark = pytest.mark.slow

PORT = ROOT / "examples" / "blackbox_port" / "port.py"
CHECKPOINTS = ROOT / "goldens" / "checkpoints" / "qwen3_tts-tiny"
ONE = "tts_custom_voice"


@pytest.fixture(scope="module")
def generation_cases(store: GoldenStore) -> list[str]:
    # sampled cases draw from the official random generator: outputs alone cannot reproduce them (the port skips them)
    cases = [n for n in store.cases if store.case(n).provenance.get("family") in ("generation", "end_to_end")
             and not store.case(n).provenance.get("input_values", {}).get("do_sample")]  # fmt: skip
    assert len(cases) >= 8
    return cases


@pytest.fixture(scope="module")
def bb_export(tmp_path_factory: pytest.TempPathFactory, golden_f32: Path, generation_cases: list[str]) -> Path:
    """What a black-box port reads: each generation case's manifest (input values) and inputs.safetensors."""
    out = tmp_path_factory.mktemp("bb-export")
    code = cli_main(["export", "--goldens", str(golden_f32), "--cases", *generation_cases, "-o", str(out), "-q",
                     "--no-bundles", "--modules", ":generate"])  # fmt: skip
    assert code == 0
    return out


def port(export: Path, out: Path, env: dict[str, str], *extra: str) -> Path:
    done = subprocess.run([sys.executable, str(PORT), "--export", str(export), "--checkpoint", str(CHECKPOINTS),
                           "-o", str(out), *extra], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return out


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return no_torch_env(tmp_path_factory.mktemp("env"))


@pytest.fixture(scope="module")
def bb_dumps(tmp_path_factory: pytest.TempPathFactory, bb_export: Path, env: dict[str, str]) -> Path:
    return port(bb_export, tmp_path_factory.mktemp("bb-dumps"), env)


def check(cli: Callable[..., Outcome], golden: Path, dump: Path, tmp_path: Path, *extra: str | Path,
          cases: list[str] | tuple[str, ...] = (ONE,), mapping: str | None = None) -> tuple[Outcome, dict[str, Any]]:  # fmt: skip
    reports = tmp_path / "reports"
    args: list[str | Path] = ["check", "--goldens", golden, "--candidate", f"dump:{dump}", "--reports", reports,
                              "-q", "--cases", *cases, *extra]  # fmt: skip
    if mapping is not None:
        (tmp_path / "map.toml").write_text(mapping)
        args += ["--map", tmp_path / "map.toml"]
    outcome = cli(*args)
    summary = reports / "summary.json"
    return outcome, (json.loads(summary.read_text()) if summary.exists() else {})


def outputs_of(summary: dict[str, Any], case: str) -> dict[str, dict[str, Any]]:
    found = next(c for c in summary["cases"] if c["case"] == case)
    return {t["role"]: t for t in found["tensors"] if t["mode"] == "outputs"}


def test_the_port_writes_only_outputs(bb_dumps: Path, generation_cases: list[str]) -> None:
    for case in generation_cases:
        dump = load_file(str(bb_dumps / f"{case}.safetensors"))
        assert set(dump) == {"outputs/codes", "outputs/waveform", "outputs/sample_rate"}


def test_a_black_box_port_passes_every_generation_case_from_outputs_alone(
    cli, golden_f32: Path, bb_dumps: Path, generation_cases: list[str], tmp_path: Path
) -> None:
    outcome, summary = check(cli, golden_f32, bb_dumps, tmp_path, cases=generation_cases)
    assert outcome.code == 0, outcome.err
    assert summary["verdict"] == "pass" and "outputs" in summary["modes"]
    assert any(note.startswith("black-box:") and "no module is localised" in note for note in summary["notes"])
    for case in summary["cases"]:
        assert case["modes"] == ["outputs"] and case["verdict"] == "pass", case["case"]
        assert case["counts"]["not_covered"] == 0  # not "partial": the modules are not asked of a black box
        judged = outputs_of(summary, case["case"])
        assert judged["outputs/codes"]["source"] == "exact (discrete)"
        wave = judged["outputs/waveform"]
        assert wave["source"].startswith("calibrated") and "audio" in wave["source"]
        assert {"snr_db", "log_mel", "frame_max_abs"} <= set(wave["thresholds"]) <= set(wave["metrics"])
        assert wave["noise"] and wave["noise"]["snr_db"] > wave["thresholds"]["snr_db"]  # k times the noise
    page = (tmp_path / "reports" / "index.html").read_text()
    assert "black-box" in page


def test_a_decoder_scaled_by_1e3_fails_on_audio_metrics(
    cli, golden_f32: Path, bb_export: Path, env: dict[str, str], tmp_path: Path
) -> None:
    dump = port(bb_export / ONE, tmp_path / "bad" / f"{ONE}.safetensors", env, "--decoder-scale", "1e-3")
    outcome, summary = check(cli, golden_f32, dump.parent, tmp_path)
    assert outcome.code == 1 and summary["verdict"] == "fail"
    judged = outputs_of(summary, ONE)
    assert judged["outputs/codes"]["status"] == "pass"  # the talker is right: only the audio diverges
    wave = judged["outputs/waveform"]
    assert wave["status"] == "fail"
    for metric in ("snr_db", "log_mel", "frame_max_abs"):
        assert metric in wave["message"], wave["message"]
    assert wave["metrics"]["snr_db"] < 1.0  # 1e-3 of the signal: the error is the whole signal


def test_one_extra_frame_is_the_official_convention_and_passes_with_a_note(
    cli, golden_f32: Path, bb_export: Path, env: dict[str, str], tmp_path: Path, store: GoldenStore
) -> None:
    dump = port(bb_export / ONE, tmp_path / "n" / f"{ONE}.safetensors", env, "--extra-frames", "1")
    frames = store.case(ONE).output("codes").shape[0]
    assert load_file(str(dump))["outputs/codes"].shape[0] == frames + 1
    outcome, summary = check(cli, golden_f32, dump.parent, tmp_path)
    assert outcome.code == 0 and summary["verdict"] == "pass", outcome.err
    judged = outputs_of(summary, ONE)
    for role in ("outputs/codes", "outputs/waveform"):
        note = judged[role]["note"]
        assert judged[role]["status"] == "pass" and "common prefix" in note and "yields" in note, note
    assert judged["outputs/codes"]["metrics"]["candidate_length"] == frames + 1


def test_two_extra_frames_diverge_with_both_lengths_and_the_prefix_compared(
    cli, golden_f32: Path, bb_export: Path, env: dict[str, str], tmp_path: Path, store: GoldenStore
) -> None:
    dump = port(bb_export / ONE, tmp_path / "n2" / f"{ONE}.safetensors", env, "--extra-frames", "2")
    outcome, summary = check(cli, golden_f32, dump.parent, tmp_path)
    assert outcome.code == 1 and summary["verdict"] == "fail"  # a divergence, not a malformed dump (exit 2)
    frames = store.case(ONE).output("codes").shape[0]
    codes = outputs_of(summary, ONE)["outputs/codes"]
    assert codes["status"] == "fail"
    assert f"length {frames + 2} where the golden has {frames}" in codes["message"]
    assert "the common prefix conforms" in codes["message"]


def test_a_port_profile_makes_unsupported_layouts_not_applicable(
    cli, golden_f32: Path, bb_dumps: Path, generation_cases: list[str], tmp_path: Path
) -> None:
    profile = '[profile]\ntext_layout = "non_streaming"\nvoice = ["custom_voice", "voice_design", "x_vector"]\n'
    outcome, summary = check(cli, golden_f32, bb_dumps, tmp_path, cases=generation_cases, mapping=profile)
    assert outcome.code == 0, outcome.err
    verdicts = {c["case"]: c for c in summary["cases"]}
    streaming = verdicts["tts_custom_voice_streaming"]
    assert streaming["verdict"] == "not_applicable" and "text_layout" in streaming["not_applicable"]
    assert verdicts["tts_voice_clone_icl_non_streaming"]["verdict"] == "not_applicable"  # voice in_context
    assert verdicts["tts_custom_voice"]["verdict"] == "pass"
    assert any("not applicable" in note for note in summary["notes"])
    assert "not_applicable" in (tmp_path / "reports" / "index.html").read_text()


def test_black_box_flag_judges_outputs_of_a_dump_with_intermediates(
    cli, golden_f32: Path, bb_dumps: Path, tmp_path: Path, store: GoldenStore
) -> None:
    tensors = {**golden_outputs(store, ONE), **load_file(str(bb_dumps / f"{ONE}.safetensors"))}
    dump = write_safetensors(tmp_path / "both" / f"{ONE}.safetensors", tensors)
    outcome, summary = check(cli, golden_f32, dump.parent, tmp_path, "--no-html")
    assert outcome.code == 0, outcome.err
    case = summary["cases"][0]
    assert case["modes"] == ["chained", "outputs"]  # intermediates and outputs: both judged
    outcome, summary = check(cli, golden_f32, dump.parent, tmp_path, "--no-html", "--black-box")
    assert outcome.code == 0 and summary["cases"][0]["modes"] == ["outputs"]


def test_an_output_of_another_rank_is_a_malformed_dump(cli, golden_f32: Path, bb_dumps: Path, tmp_path: Path) -> None:
    tensors = load_file(str(bb_dumps / f"{ONE}.safetensors"))
    tensors["outputs/waveform"] = tensors["outputs/waveform"][None, :]
    dump = write_safetensors(tmp_path / "rank" / f"{ONE}.safetensors", tensors)
    outcome, _ = check(cli, golden_f32, dump.parent, tmp_path, "--no-html")
    assert outcome.code == 2 and "output waveform: shape" in outcome.err, outcome.err


def test_a_generated_sequence_of_another_length_in_an_intermediate_dump_is_a_divergence(
    cli, golden_f32: Path, tmp_path: Path, store: GoldenStore
) -> None:
    """A voice-clone reference encoded into fewer frames makes a shorter prompt: exit 1 with both lengths and the
    common prefix, not exit 2 (malformed) and not a run without reports."""
    case = "tts_voice_clone_icl"
    tensors = golden_outputs(store, case)
    name = "talker#0/outputs/logits"
    tensors[name] = tensors[name][:, :-2]
    dump = write_safetensors(tmp_path / "short" / f"{case}.safetensors", tensors)
    outcome, summary = check(cli, golden_f32, dump.parent, tmp_path, "--no-html", cases=[case])
    assert outcome.code == 1 and summary["verdict"] == "fail", outcome.err
    logits = next(t for t in summary["cases"][0]["tensors"] if f"{t['key']}#{t['call']}/{t['role']}" == name)
    length = store.case(case).leaf("talker", 0, "outputs/logits").shape[1]
    assert logits["status"] == "fail" and f"length {length - 2} where the golden has {length}" in logits["message"]
    assert "common prefix" in logits["message"] and logits["metrics"]["common_prefix"] == length - 2
    assert np.isfinite(logits["metrics"]["rel_l2"])
