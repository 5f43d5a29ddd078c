"""Impl variants with an option wrong, as ports have shipped them, fail `conformance check` on the committed goldens
(the option cases, docs/options.md) and are blamed on the module or method that implements the option.

Each variant is the NumPy impl with one function changed (monkeypatched, the way a port's own code would differ);
the check runs through the command line in-process, in both modes, on the one case that makes the option decide.
Needs the committed goldens recorded with the option cases (python -m conformance.project goldens).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conformance.cli import main
from impl.common import generation
from impl.qwen3_tts import codec_decoder, speaker

ROOT = Path(__file__).resolve().parents[3]
GOLDEN = ROOT / "goldens" / "qwen3_tts-tiny-float32.h5"


def _ignore_min_new_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(generation, "apply_min_new_tokens", lambda input_ids, scores, *args: scores)
    monkeypatch.setattr(generation, "apply_min_length", lambda input_ids, scores, *args: scores)


def _penalty_sign_flipped(monkeypatch: pytest.MonkeyPatch) -> None:
    def penalty(input_ids: np.ndarray, scores: np.ndarray, value: float) -> np.ndarray:
        rows = np.arange(scores.shape[0])[:, None]
        out = scores.copy()
        out[rows, input_ids] = scores[rows, input_ids] / np.float32(value)  # negative logits divided too
        return out

    monkeypatch.setattr(generation, "apply_repetition_penalty", penalty)


def _no_top_p(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(generation, "apply_top_p", lambda scores, top_p, min_tokens_to_keep=1: scores)


def _no_log_clamp(monkeypatch: pytest.MonkeyPatch) -> None:
    def compression(x: np.ndarray, clip_val: float = 1e-5) -> np.ndarray:
        with np.errstate(divide="ignore"):
            return np.log(x)

    monkeypatch.setattr(speaker, "dynamic_range_compression", compression)


def _other_left_context(monkeypatch: pytest.MonkeyPatch) -> None:
    method = codec_decoder.Qwen3TTSTokenizerV2Decoder.chunked_decode
    method = getattr(method, "__wrapped__", method)  # below the tap's wrapper
    assert method.__defaults__ == (300, 25)
    monkeypatch.setattr(method, "__defaults__", (300, 10))


# variant -> (case, blamed key)
VARIANTS: dict[str, tuple[Callable[[pytest.MonkeyPatch], None], str, str]] = {
    "ignores_min_new_tokens": (_ignore_min_new_tokens, "tts_min_new_tokens", "talker.logits_processor"),
    "penalty_sign_flipped": (_penalty_sign_flipped, "tts_repetition_penalty", "talker.logits_processor"),
    "drops_top_p": (_no_top_p, "tts_sampling", "talker.logits_processor"),
    "drops_log_clamp": (_no_log_clamp, "speaker_encoder_edges", ":mel_spectrogram"),
    "other_default_left_context": (_other_left_context, "codec_chunked_decode_defaults",
                                   "speech_tokenizer.decoder:chunked_decode"),
}  # fmt: skip


def _check(case: str, reports: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    code = main(["check", "--goldens", str(GOLDEN), "--candidate", "impl", "--cases", case, "--reports", str(reports),
                 "--no-html", "-q", *extra])  # fmt: skip
    return code, json.loads((reports / "summary.json").read_text())


@pytest.mark.skipif(not GOLDEN.exists(), reason="goldens not present")
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_an_impl_with_the_option_wrong_fails_and_is_blamed_on_its_module(variant: str, tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    make, case, blamed = VARIANTS[variant]
    make(monkeypatch)
    code, summary = _check(case, tmp_path / "reports")
    # exit 1 (a divergence), or 2 when the variant then crashes (ignoring min_new_tokens ends the generation
    # before any frame: the official code would crash on it too, the impl's decode does)
    assert code in (1, 2) and summary["verdict"] in ("fail", "error"), summary.get("verdict")
    (result,) = summary["cases"]
    for mode in ("isolated", "chained"):
        blame = result["blame"][mode]
        assert blame is not None and blame["key"] == blamed, (mode, blame)


@pytest.mark.skipif(not GOLDEN.exists(), reason="goldens not present")
def test_the_impl_itself_conforms_on_the_option_cases(tmp_path: Path) -> None:
    cases = sorted({case for _, case, _ in VARIANTS.values()})
    code = main(["check", "--goldens", str(GOLDEN), "--candidate", "impl", "--cases", *cases, "--reports",
                 str(tmp_path / "reports"), "--no-html", "-q"])  # fmt: skip
    assert code == 0
