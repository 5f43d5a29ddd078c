"""The check engine with the official model as candidate: bit-exact replays, blame of a perturbed
weight in both modes, calibrated thresholds that pass the official float64 model and fail when
tightened below the noise."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

pytest.importorskip("torch")

from conformance.compare import engine
from conformance.compare.policy import Calibration, load_policy
from conformance.compare.results import FAIL, PASS
from conformance.store import GoldenStore
from conformance.subjects.qwen3_tts.official_binding import OfficialCandidate
from conformance.subjects.qwen3_tts.subject import SUBJECT

POLICY = Path(__file__).resolve().parents[3] / "conformance-policy.toml"

pytestmark = pytest.mark.official


def run(golden: Path, candidate: OfficialCandidate, cases: list[str], policy=None, modes=("isolated", "chained")):
    policy = policy or load_policy(POLICY)
    reference = engine.find_reference(golden)
    with GoldenStore(golden) as store:
        ref = GoldenStore(reference) if reference else None
        options = engine.CheckOptions(modes=modes, cases=cases, reference=ref, subject=SUBJECT)
        return engine.check(store, candidate, policy, options)


def test_the_official_float32_model_replays_its_golden_bit_for_bit(golden_f32: Path) -> None:
    result = run(golden_f32, OfficialCandidate("float32"), ["codec_encode", "tts_voice_clone_icl"])
    assert result.verdict == PASS and result.exit_code == 0
    outputs = [t for case in result.cases for t in case.outputs()]
    assert len(outputs) > 1000
    floats = [t for t in outputs if t.metrics and "max_abs" in t.metrics]
    assert all(t.metrics["exact"] for t in floats), [t.name for t in floats if not t.metrics["exact"]][:5]
    tokens = [t for case in result.cases for t in case.tokens if t.mode == "teacher_forced"]
    assert tokens and all(t.classification == "agree" for t in tokens)


@pytest.mark.parametrize(
    ("case", "parameter", "owner"),
    [
        ("codec_decode_long", "speech_tokenizer.decoder.pre_transformer.layers.1.mlp.up_proj.weight",
         "speech_tokenizer.decoder.pre_transformer.layers.1.mlp.up_proj"),
        ("codec_encode", "speech_tokenizer.encoder.encoder_transformer.layers.0.self_attn.o_proj.weight",
         "speech_tokenizer.encoder.encoder_transformer.layers.0.self_attn.o_proj"),
        ("tts_custom_voice", "talker.model.layers.1.mlp.down_proj.weight", "talker.model.layers.1.mlp.down_proj"),
        ("tts_voice_clone_xvector", "speaker_encoder.blocks.2.tdnn1.conv.weight", "speaker_encoder.blocks.2.tdnn1.conv"),
    ],
)  # fmt: skip
def test_a_perturbed_weight_is_blamed_on_exactly_its_module(golden_f32: Path, case: str, parameter: str,
                                                            owner: str) -> None:  # fmt: skip
    result = run(golden_f32, OfficialCandidate("float32", perturb=parameter, scale=1e-3), [case])
    assert result.exit_code == 1
    outcome = result.cases[0]
    for mode in ("isolated", "chained"):
        blamed = outcome.blame[mode]
        assert blamed is not None and blamed.key == owner, (mode, blamed)
        earlier = [t for t in outcome.tensors if t.mode == mode and t.seq_end < blamed.seq_end]
        assert earlier and all(t.status == PASS for t in earlier), [t.name for t in earlier if t.status != PASS][:5]


def test_calibrated_thresholds_pass_the_official_float64_model_and_fail_below_its_noise(golden_f32: Path) -> None:
    cases = ["codec_decode_long", "speaker_encoder"]
    passing = run(golden_f32, OfficialCandidate("float64"), cases)
    assert passing.verdict == PASS
    calibrated = [t for c in passing.cases for t in c.outputs() if t.source.startswith("calibrated")]
    assert len(calibrated) > 100
    tight = load_policy(POLICY)
    tight = replace(tight, calibration=Calibration(k=0.25, metrics=("rel_l2", "max_abs"), floor_eps=0.0))
    failing = run(golden_f32, OfficialCandidate("float64"), cases, policy=tight)
    assert failing.exit_code == 1
    assert failing.counts()[FAIL] > 50


# a code-predictor head with its sign flipped (weight * (1 - 2))
FLIPPED_HEAD = {"perturb": "talker.code_predictor.lm_head.1.weight", "scale": -2.0}


def test_free_running_generation_reports_its_first_divergent_frame_and_codebook(golden_f32: Path) -> None:
    """A code-predictor head with its sign flipped: codebook 0 of frame 0 still agrees (the talker chose it),
    the first generated code that differs is codebook 2 (head 1), classified by the golden's margin."""
    flipped = OfficialCandidate("float32", **FLIPPED_HEAD)
    result = run(golden_f32, flipped, ["tts_custom_voice"], modes=("chained",))
    outcome = result.cases[0]
    assert result.exit_code == 1
    first = outcome.first_divergence
    assert first is not None and (first["frame"], first["codebook"]) == (0, 2), first
    assert (
        first["classification"] in ("token_swap", "logit_drift") and first["golden_token"] != first["candidate_token"]
    )
    found = [t for t in outcome.tokens if t.mode == "free_running"]
    assert len(found) == 1 and found[0].key == first["logits"].split("#")[0] == "talker.code_predictor.lm_head.1"


def test_after_a_tie_broken_code_later_chained_failures_are_skipped_not_failed(golden_f32: Path, monkeypatch) -> None:
    """When the first divergent code is a near tie of the golden, everything generated after it legitimately
    differs: those chained verdicts become SKIPPED (with the reason), the ones before stay as they were."""
    from conformance.compare import tokens

    real = tokens.classify

    def as_near_tie(*args, **kwargs):
        return replace(real(*args, **kwargs), classification="near_tie")

    monkeypatch.setattr(engine, "classify", as_near_tie)
    flipped = OfficialCandidate("float32", **FLIPPED_HEAD)
    outcome = run(golden_f32, flipped, ["tts_custom_voice"], modes=("chained",)).cases[0]
    assert outcome.first_divergence["classification"] == "near_tie"
    seq = outcome.first_divergence["seq_end"]
    skipped = [t for t in outcome.tensors if t.status == "skipped"]
    assert skipped and all(t.seq_end > seq and "near_tie at frame 0, codebook 2" in t.message for t in skipped)
    assert not [t for t in outcome.tensors if t.status == FAIL and t.seq_end > seq]
