"""The port-shaped size (`--size port`): every constant native ports hard-code is the published one (the table in
docs/qwen3-tts-notes.md), only widths and depths shrink, and the impl conforms on it.

In CI: a short codec decode and a custom-voice generation recorded at port size (with the isolated oracle) and
checked in both modes. The full claim (every case, both modes, with the float64 twin) is measured by hand and stated
in docs/performance.md ("Port-shaped checkpoints")."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conformance.cli import main
from conformance.store import GoldenStore

from .test_checkpoint_export import lookup, published_keys

# Keys whose published values ports hard-code (codebook count and size, hop lengths and rates, upsampling ratios,
# encoder downsampling, head dims, vocab layout): the port size keeps them; the others may shrink.
CONSTANTS = {
    "config.json": ("im_start_token_id", "im_end_token_id", "assistant_token_id", "tts_pad_token_id",
                    "tts_bos_token_id", "tts_eos_token_id", "talker_config.head_dim", "talker_config.rope_theta",
                    "talker_config.text_vocab_size", "talker_config.vocab_size", "talker_config.num_code_groups",
                    "talker_config.rope_scaling.mrope_section", "talker_config.rope_scaling.interleaved",
                    "talker_config.position_id_per_seconds", "talker_config.codec_pad_id", "talker_config.codec_bos_id",
                    "talker_config.codec_eos_token_id", "talker_config.codec_think_id", "talker_config.codec_nothink_id",
                    "talker_config.codec_think_bos_id", "talker_config.codec_think_eos_id",
                    "talker_config.code_predictor_config.head_dim", "talker_config.code_predictor_config.vocab_size",
                    "talker_config.code_predictor_config.rope_theta"),
    "speech_tokenizer/config.json": ("input_sample_rate", "output_sample_rate", "decode_upsample_rate",
                                     "encode_downsample_rate", "encoder_valid_num_quantizers",
                                     "decoder_config.codebook_size", "decoder_config.num_quantizers",
                                     "decoder_config.num_semantic_quantizers", "decoder_config.head_dim",
                                     "decoder_config.upsample_rates", "decoder_config.upsampling_ratios",
                                     "decoder_config.rope_theta", "encoder_config._frame_rate",
                                     "encoder_config.sampling_rate", "encoder_config.codebook_size",
                                     "encoder_config.num_quantizers", "encoder_config.num_semantic_quantizers",
                                     "encoder_config.upsampling_ratios"),
}  # fmt: skip
CASES = ("codec_decode_short", "tts_custom_voice")


@pytest.mark.official
def test_the_port_size_keeps_every_published_constant(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from conformance.subjects.qwen3_tts import checkpoints, configs

    o = checkpoints.official()
    o.codec_config.Qwen3TTSTokenizerV2Config(**configs.codec_config("port")).save_pretrained(tmp_path)
    written = {"config.json": configs.tts_config("port", "base"),
               "speech_tokenizer/config.json": json.loads((tmp_path / "config.json").read_text())}  # fmt: skip
    published = {(file, key): value for file, key, value in published_keys()}
    differ = []
    for file, keys in CONSTANTS.items():
        for key in keys:
            found, value = lookup(written[file], key)
            if not found or value != pytest.approx(published[(file, key)]):
                differ.append(f"{file}: {key} = {value!r}, published {published[(file, key)]!r}")
    assert not differ, differ
    shrunk = [key for key in ("talker_config.hidden_size", "talker_config.num_hidden_layers")
              if lookup(written["config.json"], key)[1] == published[("config.json", key)]]  # fmt: skip
    assert not shrunk, shrunk  # and it is small


@pytest.fixture(scope="module")
def port_golden(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    root = tmp_path_factory.mktemp("port")
    assert main(["checkpoint", "--subject", "qwen3_tts", "--size", "port", "-o", str(root / "checkpoint")]) == 0
    golden = root / "port.h5"
    assert main(["record", "--subject", "qwen3_tts", "--checkpoint", str(root / "checkpoint"), "--cases", *CASES,
                 "--oracle", "--no-reference64", "--no-determinism-check", "-o", str(golden)]) == 0  # fmt: skip
    return golden


@pytest.mark.official
@pytest.mark.slow
def test_the_impl_conforms_on_port_shaped_checkpoints(port_golden: Path, tmp_path: Path) -> None:
    with GoldenStore(port_golden) as store:
        decode, generation = store.case("codec_decode_short"), store.case("tts_custom_voice")
        frames = decode.input("codes").shape[1]
        assert decode.input("codes").shape[2] == 16 and decode.output("waveform").shape == (frames * 1920,)
        assert generation.output("codes").shape[1] == 16
        assert generation.provenance["size"] == "port"
    reports = tmp_path / "reports"
    code = main(["check", "--goldens", str(port_golden), "--candidate", "impl", "--mode", "both", "--reports",
                 str(reports), "--no-html", "-q"])  # fmt: skip
    summary: dict[str, Any] = json.loads((reports / "summary.json").read_text())
    assert code == 0, summary.get("verdict")
    assert summary["verdict"] == "pass"
    modes = {(case["case"], t["mode"]) for case in summary["cases"] for t in case["tensors"]}
    assert modes == {(case, mode) for case in CASES for mode in ("isolated", "chained")}


def test_the_goldens_job_takes_a_size_for_one_subject_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`nox -s goldens -- --subject qwen3_tts --size port --goldens DIR` builds port goldens into a folder of their
    own; a size without a subject, or for a subject with tiny goldens only, is refused before anything is written."""
    from conformance.project import main as project

    out = tmp_path / "goldens-port"
    assert project(["goldens", "--size", "port", "--goldens", str(out)]) == 2
    assert "--size is one subject's" in capsys.readouterr().err
    assert project(["goldens", "--subject", "qwen3_tts", "--size", "huge", "--goldens", str(out)]) == 2
    assert "unknown size 'huge'" in capsys.readouterr().err
    assert not out.exists()
