"""Checkpoint folders a port's converter reads: `conformance checkpoint` and the committed
goldens/checkpoints/qwen3_tts-tiny/ carry every key of the published configs (the table in docs/qwen3-tts-notes.md,
"Checkpoint folders: what converters read"), the tokenizer files and float32 weights, hold the goldens' weights, and
convert unpatched with a converter written the way native ports write theirs (numpy_converter.py).

The tests on the committed folder pass once the goldens are regenerated with this layout
(`python -m conformance.project goldens --subject qwen3_tts`)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conformance.cli import main

from ...conftest import ROOT
from .numpy_converter import ConverterError, convert, read_safetensors

NOTES = ROOT / "docs" / "qwen3-tts-notes.md"
SECTION = "## Checkpoint folders: what converters read"
MODEL_FOLDERS = ("base", "custom_voice", "voice_design")
TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json")


def published_keys() -> list[tuple[str, str, Any]]:
    """(file, dotted key, published value) of every row of the notes' table."""
    text = NOTES.read_text()
    body = text[text.index(SECTION) + len(SECTION) :]
    body = body[: body.find("\n## ")] if "\n## " in body else body
    rows = []
    for line in body.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 3 and all(c.startswith("`") and c.endswith("`") for c in cells):
            rows.append((cells[0].strip("`"), cells[1].strip("`"), json.loads(cells[2].strip("`"))))
    return rows


def lookup(config: dict[str, Any], dotted: str) -> tuple[bool, Any]:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def missing_keys(folder: Path) -> list[str]:
    configs: dict[str, dict[str, Any]] = {}
    missing = []
    for file, key, _ in published_keys():
        if file not in configs:
            configs[file] = json.loads((folder / file).read_text()) if (folder / file).is_file() else {}
        if not lookup(configs[file], key)[0]:
            missing.append(f"{file}: {key}")
    return missing


def safetensors_dtypes(path: Path) -> set[str]:
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
    return {entry["dtype"] for name, entry in header.items() if name != "__metadata__"}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="session")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """`conformance checkpoint` run as a user would: the whole tiny set (default float32) and the custom-voice model
    alone in bfloat16."""
    pytest.importorskip("torch")
    root = tmp_path_factory.mktemp("checkpoint-export")
    assert main(["checkpoint", "--subject", "qwen3_tts", "-o", str(root / "set")]) == 0
    assert main(["checkpoint", "--subject", "qwen3_tts", "--variant", "custom_voice", "--dtype", "bfloat16",
                 "-o", str(root / "custom_voice-bf16")]) == 0  # fmt: skip
    return {"set": root / "set", "bf16": root / "custom_voice-bf16"}


def test_the_published_key_table_is_read_whole() -> None:
    keys = published_keys()
    files = {file for file, _, _ in keys}
    assert files == {"config.json", "generation_config.json", "speech_tokenizer/config.json"}
    names = {f"{file}:{key}" for file, key, _ in keys}
    for converters_read in ("speech_tokenizer/config.json:decoder_config.num_semantic_quantizers",
                            "speech_tokenizer/config.json:decoder_config.vector_quantization_hidden_dimension",
                            "config.json:assistant_token_id", "generation_config.json:repetition_penalty"):  # fmt: skip
        assert converters_read in names
    assert len(keys) > 80


def test_every_published_key_is_in_the_committed_checkpoint(tiny_checkpoint: Path) -> None:
    for model in MODEL_FOLDERS:
        assert not missing_keys(tiny_checkpoint / model), (model, missing_keys(tiny_checkpoint / model))
        for name in TOKENIZER_FILES:
            assert (tiny_checkpoint / model / name).is_file(), (model, name)


def test_the_committed_weights_are_float32(tiny_checkpoint: Path) -> None:
    for path in (
        tiny_checkpoint / "base" / "model.safetensors",
        tiny_checkpoint / "speech_tokenizer" / "model.safetensors",
    ):
        assert safetensors_dtypes(path) == {"F32"}, path


def test_a_numpy_converter_converts_the_committed_checkpoint_unpatched(tiny_checkpoint: Path, tmp_path: Path) -> None:
    gguf = pytest.importorskip("gguf")
    from impl.common.weights import load_safetensors

    for model in MODEL_FOLDERS:
        out = tmp_path / f"{model}.gguf"
        summary = convert(tiny_checkpoint / model, out)
        assert summary["hparams"]["decoder_config.num_semantic_quantizers"] == 1
        reader = gguf.GGUFReader(str(out))
        converted = {t.name: np.asarray(t.data) for t in reader.tensors}
        weights = {f"tts.{k}": v for k, v in load_safetensors(tiny_checkpoint / model / "model.safetensors").items()}
        codec = load_safetensors(tiny_checkpoint / model / "speech_tokenizer" / "model.safetensors")
        weights |= {f"codec.{k}": v for k, v in codec.items()}
        assert set(converted) == set(weights) and len(weights) == summary["tensors"]
        for name, value in weights.items():  # gguf stores shapes reversed; the values are what the goldens ran on
            assert np.array_equal(converted[name].reshape(value.shape), value.astype(np.float32)), name
        assert summary["tokens"] > 151_000


@pytest.mark.official
def test_every_published_key_is_in_exported_checkpoints(exported: dict[str, Path]) -> None:
    for folder in [exported["set"] / model for model in MODEL_FOLDERS] + [exported["bf16"]]:
        assert not missing_keys(folder), (folder, missing_keys(folder))
        assert json.loads((folder / "config.json").read_text())["dtype"] in ("float32", "bfloat16")


@pytest.mark.official
def test_full_size_configs_hold_the_published_values(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from conformance.subjects.qwen3_tts import checkpoints, configs

    o = checkpoints.official()
    o.codec_config.Qwen3TTSTokenizerV2Config(**configs.codec_config("full")).save_pretrained(tmp_path)
    written = {
        "config.json": configs.tts_config("full", "base"),
        "generation_config.json": configs.GENERATION_DEFAULTS,
        "speech_tokenizer/config.json": json.loads((tmp_path / "config.json").read_text()),
    }
    wrong = []
    for file, key, published in published_keys():
        found, value = lookup(written[file], key)
        if not found or value != pytest.approx(published):
            wrong.append(f"{file}: {key} = {value!r}, published {published!r}")
    assert not wrong, wrong


@pytest.mark.official
def test_exported_weights_are_the_goldens_weights(exported: dict[str, Path], tiny_checkpoint: Path) -> None:
    """The export in the committed checkpoint's dtype is byte for byte the committed file; the other dtype holds
    the same values (float32 tensors are bfloat16 values: their low 16 bits are zero, their high bits the bf16
    file's)."""
    by_dtype = {"F32": {"tts": exported["set"] / "base", "codec": exported["set"] / "speech_tokenizer"},
                "BF16": {"tts": exported["bf16"], "codec": exported["bf16"] / "speech_tokenizer"}}  # fmt: skip
    committed = {"tts": tiny_checkpoint / "base", "codec": tiny_checkpoint / "speech_tokenizer"}
    for part, folder in committed.items():
        (dtype,) = safetensors_dtypes(folder / "model.safetensors") - {"I64"}
        assert sha256(by_dtype[dtype][part] / "model.safetensors") == sha256(folder / "model.safetensors"), part
    for part in ("tts", "codec"):
        f32 = read_safetensors(by_dtype["F32"][part] / "model.safetensors")
        with open(by_dtype["BF16"][part] / "model.safetensors", "rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(length))
            data = handle.read()
        header.pop("__metadata__", None)
        assert set(header) == set(f32)
        for name, entry in header.items():
            bits = f32[name].view(np.uint32)
            start, end = entry["data_offsets"]
            if entry["dtype"] != "BF16":
                assert data[start:end] == f32[name].tobytes(), name
                continue
            bf16 = np.frombuffer(data[start:end], dtype=np.uint16).reshape(entry["shape"])
            assert not np.any(bits & 0xFFFF), name
            assert np.array_equal((bits >> 16).astype(np.uint16), bf16), name


@pytest.mark.official
def test_an_exported_model_is_plain_files_and_loads_as_it_is(exported: dict[str, Path]) -> None:
    import torch

    from conformance.subjects.qwen3_tts.checkpoints import load_tts, loadable_folder, tokenizer_files_dir

    folder = exported["bf16"]
    for where, dirs, files in os.walk(folder):
        assert not [n for n in dirs + files if (Path(where) / n).is_symlink()], where
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["config.json", "generation_config.json", "model.safetensors", "speech_tokenizer", *TOKENIZER_FILES]
    )
    for name in TOKENIZER_FILES:  # the JSON documents written without indentation, the others as they are
        exported, source = folder / name, tokenizer_files_dir() / name
        if name.endswith(".json"):
            assert json.loads(exported.read_text(encoding="utf-8")) == json.loads(source.read_text(encoding="utf-8"))
        else:
            assert exported.read_bytes() == source.read_bytes()
    assert loadable_folder(folder) == folder.resolve()  # no staging: the official loader reads the folder itself
    wrapper = load_tts(folder, torch.float32)
    assert wrapper.model.tts_model_type == "custom_voice"
    assert (
        wrapper.model.speech_tokenizer.model.decoder.quantizer.rvq_first.vq.layers[0]._codebook.embedding_sum.dtype
        == torch.float32
    )


@pytest.mark.official
def test_the_converter_refuses_what_ports_refuse(exported: dict[str, Path], tmp_path: Path) -> None:
    """The converter test can fail: bfloat16 weights and a codec config without the published keys (the folders
    the framework wrote before) are refused with the file and the tensor or key."""
    with pytest.raises(ConverterError, match=r"model.safetensors: tensor .* is BF16"):
        convert(exported["bf16"], tmp_path / "bf16.gguf")
    patched = tmp_path / "custom_voice"
    shutil.copytree(exported["set"] / "custom_voice", patched, symlinks=False)
    config_path = patched / "speech_tokenizer" / "config.json"
    config = json.loads(config_path.read_text())
    del config["decoder_config"]["num_semantic_quantizers"]
    config_path.write_text(json.dumps(config))
    with pytest.raises(
        ConverterError, match=r"speech_tokenizer/config.json: no key decoder_config.num_semantic_quantizers"
    ):
        convert(patched, tmp_path / "patched.gguf")


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--variant", "talker_only"], "unknown variant 'talker_only'"),
        (["--size", "huge"], "unknown size 'huge'"),
        (["--subject", "no_such_subject"], "no_such_subject"),
    ],
)
def test_the_checkpoint_command_refuses_bad_requests(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                     extra: list[str], message: str) -> None:  # fmt: skip
    out = tmp_path / "out"
    args = ["checkpoint", "--subject", "qwen3_tts", "-o", str(out), *extra]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and err[0].startswith("conformance: error:")
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_the_checkpoint_command_never_writes_into_a_non_empty_folder(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    out = tmp_path / "out"
    out.mkdir()
    (out / "config.json").write_text("{}")
    assert main(["checkpoint", "--subject", "qwen3_tts", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "not an empty folder" in err and str(out) in err
    assert [p.name for p in out.iterdir()] == ["config.json"] and (out / "config.json").read_text() == "{}"


@pytest.mark.official
def test_a_set_built_by_the_older_layout_is_rebuilt(tmp_path: Path, tiny_checkpoint: Path) -> None:
    """How the goldens recipe rewrites goldens/checkpoints/qwen3_tts-tiny: a set whose .complete.json names no
    layout (bfloat16 weights, no tokenizer files) is rebuilt from scratch, not reused."""
    pytest.importorskip("torch")
    from conformance.subjects.qwen3_tts.checkpoints import LAYOUT
    from conformance.subjects.qwen3_tts.record import ensure_checkpoints

    folder = tmp_path / "set"
    shutil.copytree(tiny_checkpoint, folder, symlinks=True)
    old = json.loads((folder / ".complete.json").read_text())
    old.pop("layout", None)
    (folder / ".complete.json").write_text(json.dumps(old))
    (folder / "stale.txt").write_text("left by the older layout")
    source = ensure_checkpoints("tiny", old["seed"], folder=folder)
    assert set(source.tts_dirs) == set(MODEL_FOLDERS) and source.codec_dir == folder / "speech_tokenizer"
    assert json.loads((folder / ".complete.json").read_text())["layout"] == LAYOUT
    assert not (folder / "stale.txt").exists()
    for model in MODEL_FOLDERS:
        assert not missing_keys(folder / model), model
    assert safetensors_dtypes(folder / "speech_tokenizer" / "model.safetensors") == {"F32"}


def test_the_committed_tokenizer_files_are_the_real_tokenizer_documents(tiny_checkpoint: Path) -> None:
    """The JSON tokenizer files are written without indentation (goldens/ size limit): the same documents as the real
    tokenizer's, so a converter parsing them reads the same vocabulary, merges and added tokens."""
    from conformance.subjects.qwen3_tts.checkpoints import tokenizer_files_dir

    for name in TOKENIZER_FILES:
        committed, source = tiny_checkpoint / "base" / name, tokenizer_files_dir() / name
        if name.endswith(".json"):
            assert json.loads(committed.read_text(encoding="utf-8")) == json.loads(source.read_text(encoding="utf-8"))
        else:
            assert committed.read_bytes() == source.read_bytes()
    assert (tiny_checkpoint / "base" / "tokenizer.json").stat().st_size < 6e6
