"""Blame through inputs no recorded module produced: a voice-clone case whose reference codes differ is
blamed on the input they enter through (a recording whose ICL case hooks only the TTS model), or, as the case
records the codec's encoder side, on the codec encoder itself."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")

from conformance.compare import engine
from conformance.compare.policy import load_policy
from conformance.compare.results import FAIL, NOT_COVERED, PASS, RunResult
from conformance.store import GoldenStore
from conformance.store.producers import producers
from conformance.subjects.qwen3_tts.impl_binding import CODEC_PREFIX, ImplCandidate
from conformance.subjects.qwen3_tts.official_binding import OfficialCandidate
from conformance.subjects.qwen3_tts.subject import SUBJECT

POLICY = Path(__file__).resolve().parents[3] / "conformance-policy.toml"
CASE = "tts_voice_clone_icl"
REF_CODE = "kwargs/voice_clone_prompt/ref_code/0"
# the first convolution of the codec encoder with its weights halved: the reference codes change
ENCODER_CONV = "speech_tokenizer.encoder.encoder.layers.0.conv.weight"

pytestmark = pytest.mark.official


def check(golden: Path, candidate: Any, reference: Path | None, modes: tuple[str, ...] = ("chained",)) -> RunResult:
    with GoldenStore(golden) as store:
        ref = GoldenStore(reference) if reference else None
        try:
            options = engine.CheckOptions(modes=modes, cases=[CASE], reference=ref, subject=SUBJECT)
            return engine.check(store, candidate, load_policy(POLICY), options)
        finally:
            if ref is not None:
                ref.close()


class ReplacedReferenceCodes(ImplCandidate):
    """A port whose glue code shifts the reference codes after its codec encoder returned them (an off-by-one
    in a codebook offset): the encoder itself is right, what the talker is prompted with is not."""

    def prepare(self, store: GoldenStore, case: Any) -> None:
        super().prepare(store, case)
        tokenizer = self.roots[CODEC_PREFIX]
        encode = type(tokenizer).encode.__get__(tokenizer)  # the tapped method: the tap sees its true outputs

        def shifted(*args: Any, **kwargs: Any) -> Any:
            encoded = encode(*args, **kwargs)
            return {"audio_codes": [(codes + 1) % 2048 for codes in encoded["audio_codes"]]}

        tokenizer.encode = shifted

    def release(self) -> None:
        self.roots[CODEC_PREFIX].__dict__.pop("encode", None)  # the impl model is cached across cases


@pytest.fixture(scope="module")
def unhooked_icl(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path) -> Path:
    """The ICL case recorded hooking only the TTS model (as the goldens did before the case hooked the codec
    encoder side): its reference codes enter `:generate` from nowhere recorded."""
    from dataclasses import replace

    from conformance.subjects.qwen3_tts import cases, record

    spec = replace(cases.select([CASE])[0], hooks=("tts",))
    out = tmp_path_factory.mktemp("icl-unhooked") / "float32.h5"
    return record.record(out, [spec], dtype="float32", checkpoint=tiny_checkpoint, threads=1, command="test")


def test_reference_codes_entering_from_an_unhooked_codec_are_blamed_on_that_input(unhooked_icl: Path) -> None:
    """A golden whose ICL case hooks only the TTS model: every failing call also takes a failing input, so the
    blame names the input the divergence enters through (not "—")."""
    candidate = OfficialCandidate("float32", perturb=ENCODER_CONV, scale=-0.5)
    run = check(unhooked_icl, candidate, engine.find_reference(unhooked_icl))
    assert run.exit_code == 1
    blame = run.cases[0].blame["chained"]
    assert blame is not None and blame.kind == "input", blame
    assert (blame.key, blame.call, blame.inputs) == (":generate", 0, [f":generate#0/{REF_CODE}"])
    assert f"divergence enters through `{REF_CODE}` of :generate#0, produced outside the recorded modules" in (
        blame.reason
    )
    assert run.to_json()["cases"][0]["blame"]["chained"]["kind"] == "input"


@pytest.fixture(scope="module")
def icl_recording(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path) -> dict[str, Path]:
    """The ICL case recorded as the case list now defines it (codec encoder side hooked), float32 with the
    oracle and its float64 reference: what the committed goldens will hold once regenerated."""
    from conformance.subjects.qwen3_tts import cases, record

    out = tmp_path_factory.mktemp("icl")
    paths = {}
    for dtype in ("float32", "float64"):
        paths[dtype] = record.record(out / f"{dtype}.h5", cases.select([CASE]), dtype=dtype,
                                     checkpoint=tiny_checkpoint, threads=1, command="test")  # fmt: skip
    return paths


def test_the_icl_cases_record_the_codec_encoder_that_makes_the_reference_codes(icl_recording: dict[str, Path]) -> None:
    with GoldenStore(icl_recording["float32"]) as store:
        case = store.case(CASE)
        keys = set(case.keys())
        graph = producers(case)
    assert {"speech_tokenizer:encode", "speech_tokenizer.encoder:encode", "speech_tokenizer.encoder.encoder",
            "speech_tokenizer.encoder.encoder_transformer"} <= keys  # fmt: skip
    # the decoder side (the waveform) and the layers inside the convolution stack stay unhooked (golden size)
    assert not [k for k in keys if k.startswith(("speech_tokenizer.decoder", "speech_tokenizer:decode",
                                                 "speech_tokenizer.encoder.encoder."))]  # fmt: skip
    codes = graph[(":generate", 0, REF_CODE)]
    assert [leaf.name for leaf in codes] == ["speech_tokenizer:encode#0/outputs/audio_codes/0"]
    embedding = graph[(":generate", 0, "kwargs/voice_clone_prompt/ref_spk_embedding/0")]
    assert [leaf.name for leaf in embedding] == [":extract_speaker_embedding#0/outputs/0"]


def test_a_perturbed_codec_encoder_is_blamed_once_the_case_records_it(icl_recording: dict[str, Path]) -> None:
    candidate = OfficialCandidate("float32", perturb=ENCODER_CONV, scale=-0.5)
    run = check(icl_recording["float32"], candidate, icl_recording["float64"], modes=("isolated", "chained"))
    assert run.exit_code == 1
    for mode in ("isolated", "chained"):
        blame = run.cases[0].blame[mode]
        assert blame is not None and (blame.key, blame.kind) == ("speech_tokenizer.encoder.encoder", "module"), blame


def test_the_impl_taps_the_recorded_codec_encoder_calls_and_passes(icl_recording: dict[str, Path]) -> None:
    run = check(icl_recording["float32"], ImplCandidate(), icl_recording["float64"], modes=("isolated", "chained"))
    codec = [t for t in run.cases[0].outputs() if t.key.startswith("speech_tokenizer")]
    assert Counter(t.mode for t in codec) == {"isolated": 83, "chained": 83}
    assert {t.status for t in codec} == {PASS}, [(t.mode, t.name, t.status) for t in codec if t.status != PASS][:5]
    assert run.verdict == PASS


def test_reference_codes_changed_after_the_encoder_are_blamed_on_the_input(icl_recording: dict[str, Path]) -> None:
    """The encoder's outputs conform, the talker's prompt does not: the divergence entered between them."""
    run = check(icl_recording["float32"], ReplacedReferenceCodes(), icl_recording["float64"])
    outcome = run.cases[0]
    encoder = [t for t in outcome.tensors if t.key.startswith("speech_tokenizer") and t.mode == "chained"]
    assert encoder and all(t.status == PASS for t in encoder)
    assert not [t for t in outcome.tensors if t.status == NOT_COVERED]
    assert run.exit_code == 1 and any(t.status == FAIL for t in outcome.tensors)
    blame = outcome.blame["chained"]
    assert blame is not None and blame.kind == "input", blame
    assert (blame.key, blame.inputs) == (":generate", [f":generate#0/{REF_CODE}"])
    assert "changed after speech_tokenizer:encode#0/outputs/audio_codes/0 returned it" in blame.reason
