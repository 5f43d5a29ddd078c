"""`conformance check --reference-from-candidate`: a black-box port's codes and audio judged on its own inputs, by the
official model re-run on them (talker and code predictor teacher-forced on its codes, the official decoder on them).
The dumps are made as a black-box port would (outputs only), from the golden outputs and the NumPy codec."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from conformance.cli import main as cli_main
from conformance.store import GoldenStore

pytestmark = [pytest.mark.official, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[3]
CASE = "tts_custom_voice"


def write_dump(folder: Path, codes: np.ndarray, waveform: np.ndarray) -> Path:
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file({"outputs/codes": np.ascontiguousarray(codes, dtype=np.int64),
               "outputs/waveform": np.ascontiguousarray(waveform, dtype=np.float32),
               "outputs/sample_rate": np.asarray([24000], dtype=np.int64)},
              str(folder / f"{CASE}.safetensors"), metadata={"case": CASE})  # fmt: skip
    return folder


def check(golden: Path, dump: Path, reports: Path) -> tuple[int, dict]:
    code = cli_main(["check", "--goldens", str(golden), "--candidate", f"dump:{dump}", "--cases", CASE,
                     "--reports", str(reports), "--no-html", "-q", "--reference-from-candidate"])  # fmt: skip
    summary = json.loads((reports / "summary.json").read_text())
    return code, {t["role"]: t for t in summary["cases"][0]["tensors"]}


def test_each_component_is_judged_on_the_candidates_own_codes(golden_f32: Path, tmp_path: Path) -> None:
    from impl.qwen3_tts.codec import decode_codes, load_codec

    with GoldenStore(golden_f32) as store:
        case = store.case(CASE)
        codes, wave = np.array(case.output("codes")), np.array(case.output("waveform"))
    # a port whose talker chose another token at frame 1, codebook 2, and whose decoder is right on its own codes
    bad = codes.copy()
    bad[1, 2] = (bad[1, 2] + 7) % 2048
    codec = load_codec(ROOT / "goldens" / "checkpoints" / "qwen3_tts-tiny" / "speech_tokenizer", np.float32)
    own_wave = decode_codes(codec, bad)
    code, tensors = check(golden_f32, write_dump(tmp_path / "bad", bad, own_wave), tmp_path / "r1")
    assert code == 1
    assert tensors["outputs/codes"]["status"] == "fail" and tensors["outputs/waveform"]["status"] == "fail"
    forced = tensors["outputs/codes@teacher_forced"]
    assert forced["status"] == "fail" and "first at (1, 2)" in forced["message"], forced["message"]
    decoded = tensors["outputs/waveform@own_codes"]  # the decoder, on the port's own codes, is right
    assert decoded["status"] == "pass", decoded["message"]
    assert "official re-run on the candidate's own codes" in decoded["source"]
    # the same codes with a broken decoder: only the decode is blamed on the candidate's own codes
    code, tensors = check(golden_f32, write_dump(tmp_path / "worse", bad, own_wave * 1.01), tmp_path / "r2")
    assert tensors["outputs/waveform@own_codes"]["status"] == "fail"
    # the golden's own outputs: every re-run agrees
    code, tensors = check(golden_f32, write_dump(tmp_path / "good", codes, wave), tmp_path / "r3")
    assert code == 0 and all(t["status"] == "pass" for t in tensors.values()), tensors
