"""Every setting a generation case's official run used is recorded (case provenance `settings`) and exported with the
case (manifest `settings`): what the official wrapper took from generation_config.json and its own defaults, what
the official generate adds for the talker (min_new_tokens, the EOS id, the suppressed control codes), what the code
predictor runs with, and the frame count that max_new_tokens gives. The expected values are read from the
exported checkpoint config, never written here: the recording runs on a copy of the committed checkpoint whose
generation_config.json is changed, so a hard-coded value could not pass."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from conformance.cli import main
from conformance.store import GoldenStore

CASE = "tts_custom_voice"


@pytest.fixture(scope="module")
def exported_case(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path) -> dict[str, Any]:
    pytest.importorskip("torch")
    root = tmp_path_factory.mktemp("settings")
    checkpoint = root / "checkpoint"
    shutil.copytree(tiny_checkpoint, checkpoint, symlinks=True)
    generation = checkpoint / "custom_voice" / "generation_config.json"
    config = json.loads(generation.read_text())
    config.update(repetition_penalty=1.2, top_k=7, subtalker_top_k=9)  # not the defaults of either function
    generation.unlink()  # the variants share it by a symlink in some layouts: write this variant's own
    generation.write_text(json.dumps(config))
    golden = root / "golden.h5"
    assert main(["record", "--cases", CASE, "--checkpoint", str(checkpoint), "--no-oracle", "--no-reference64",
                 "--no-determinism-check", "-o", str(golden)]) == 0  # fmt: skip
    out = root / "export"
    assert main(["export", "--goldens", str(golden), "--no-bundles", "-q", "-o", str(out)]) == 0
    return json.loads((out / CASE / "manifest.json").read_text())


@pytest.mark.official
def test_the_export_carries_every_setting_the_official_run_used(exported_case: dict[str, Any]) -> None:
    settings = exported_case["settings"]
    generation = exported_case["config"]["custom_voice"]["generation_config.json"]
    talker_config = exported_case["config"]["custom_voice"]["config.json"]["talker_config"]
    asked = exported_case["input_values"]

    top = settings["generate"]  # Qwen3TTSForConditionalGeneration.generate, as the wrapper called it
    assert top["do_sample"] is False and top["subtalker_dosample"] is False  # the case asked for greedy
    for name in ("repetition_penalty", "top_k", "top_p", "temperature", "subtalker_top_k", "subtalker_top_p",
                 "subtalker_temperature"):  # fmt: skip
        assert top[name] == generation[name], name  # from the checkpoint's generation_config.json
    assert top["max_new_tokens"] == asked["max_new_tokens"] and top["non_streaming_mode"] == asked["non_streaming_mode"]
    assert top["speakers"] == [asked["speaker"]] and top["languages"] == [asked["language"]]

    talker = settings["talker.generate"]["generation_config"]  # what transformers' generate ran the talker with
    eos = talker_config["codec_eos_token_id"]
    vocab = talker_config["vocab_size"]
    assert talker["eos_token_id"] == eos and talker["min_new_tokens"] == 2
    assert talker["suppress_tokens"] == [i for i in range(vocab - 1024, vocab) if i != eos]
    assert talker["repetition_penalty"] == generation["repetition_penalty"] and talker["do_sample"] is False
    assert settings["talker.generate"]["model_kwargs"]["subtalker_top_k"] == generation["subtalker_top_k"]

    predictor = settings["talker.code_predictor.generate"]
    groups = talker_config["num_code_groups"]
    assert predictor["generation_config"]["max_new_tokens"] == groups - 1
    assert predictor["generation_config"]["repetition_penalty"] == 1.0  # no penalty on the code predictor
    assert predictor["generation_config"]["do_sample"] is False
    assert predictor["generation_config"]["top_k"] == generation["subtalker_top_k"]

    frames = settings["frames"]
    codes = next(o for o in exported_case["outputs"] if o["name"] == "codes")
    assert frames["generated"] == codes["shape"][0] == frames["max_new_tokens"] - 1 == predictor["calls"]
    assert "N - 1 frames" in frames["convention"]


def test_the_committed_generation_goldens_carry_their_settings(golden_f32: Path) -> None:
    """Passes once the goldens are regenerated with settings recording (python -m conformance.project goldens)."""
    with GoldenStore(golden_f32) as store:
        for case in store:
            if case.provenance.get("family") not in ("generation", "end_to_end"):
                continue
            settings = case.provenance.get("settings", {})
            generation = next(iter(case.provenance["config"].values()))["generation_config.json"]
            asked = case.provenance.get("input_values", {}).get("repetition_penalty")  # an option case's own value
            wanted = generation["repetition_penalty"] if asked is None else asked
            assert settings.get("generate", {}).get("repetition_penalty") == wanted, case.name
            assert settings["frames"]["generated"] == case.output("codes").shape[0], case.name
