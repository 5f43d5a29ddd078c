"""Both checkpoint loaders refuse a tensor whose shape the config does not give, naming it: a (1,) norm
weight or a transposed projection would otherwise broadcast or multiply silently, and the same loaders
read a user's real checkpoint, where a config and weights that disagree are a real mistake."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from impl.common.weights import WeightError, load_safetensors
from impl.qwen3_tts import codec
from impl.qwen3_tts.tts import load_model

from .tts.helpers import TINY


def _with_tensor(source: Path, target: Path, name: str, value: np.ndarray) -> Path:
    for item in source.iterdir():
        if item.is_file() and item.name != "model.safetensors":
            shutil.copy(item, target / item.name)
    tensors = load_safetensors(source / "model.safetensors", np.float32)
    assert name in tensors, name
    save_file({**tensors, name: value}, str(target / "model.safetensors"))
    return target


@pytest.mark.parametrize(
    "name",
    [
        "decoder.pre_transformer.norm.weight",  # RMSNorm
        "decoder.decoder.1.block.0.alpha",  # SnakeBeta
        "decoder.pre_conv.conv.weight",  # causal conv
        "decoder.quantizer.rvq_first.vq.layers.0._codebook.embedding_sum",  # codebook
        "decoder.upsample.0.1.gamma",  # ConvNeXt gamma
    ],
)
def test_the_codec_loader_refuses_a_tensor_of_another_shape(tmp_path: Path, name: str) -> None:
    wrong = np.ones((1,), np.float32)
    folder = _with_tensor(TINY / "speech_tokenizer", tmp_path, name, wrong)
    with pytest.raises(WeightError, match=re.escape(name) + r": checkpoint shape \(1,\) != \(\d+"):
        codec.load_codec(folder)


@pytest.mark.parametrize(
    "name",
    [
        "talker.model.norm.weight",  # RMSNorm
        "talker.model.layers.0.self_attn.q_proj.weight",  # Linear
        "talker.model.codec_embedding.weight",  # Embedding
        "speaker_encoder.blocks.0.conv.weight",  # ECAPA-TDNN conv
    ],
)
def test_the_tts_loader_refuses_a_tensor_of_another_shape(tmp_path: Path, name: str) -> None:
    source = TINY / "base"
    tensors = load_safetensors(source / "model.safetensors", np.float32)
    transposed = np.ascontiguousarray(tensors[name].reshape(tensors[name].shape[0], -1).T)
    wrong = transposed if transposed.shape != tensors[name].shape else np.ones((1,), np.float32)
    folder = _with_tensor(source, tmp_path, name, wrong)
    with pytest.raises(ValueError, match=re.escape(name) + r": checkpoint shape .* != .* the config gives"):
        load_model(folder, np.float32)


def test_the_committed_checkpoints_have_the_shapes_their_configs_give() -> None:
    load_model(TINY / "base", np.float32)
    load_model(TINY / "custom_voice", np.float32)
    codec.load_codec(TINY / "speech_tokenizer")


def test_one_rule_for_missing_and_unused_weights_in_every_model(tmp_path: Path) -> None:
    """The TTS model and the codec take their weights by the same rule: a tensor the model needs and the
    checkpoint lacks is a WeightError naming it; a checkpoint tensor the model has no place for is kept in
    `unused_weights` (the speaker encoder a CustomVoice checkpoint carries, which the official model does
    not build) and is not an error."""
    from safetensors.numpy import save_file

    custom_voice = load_model(TINY / "custom_voice", np.float32)
    assert custom_voice.speaker_encoder is None
    assert custom_voice.unused_weights and all(n.startswith("speaker_encoder.") for n in custom_voice.unused_weights)
    assert load_model(TINY / "base", np.float32).unused_weights == []
    for source, loader, needed in ((TINY / "base", lambda f: load_model(f, np.float32), "talker.model.norm.weight"),
                                   (TINY / "speech_tokenizer", codec.load_codec, "decoder.pre_transformer.norm.weight")):  # fmt: skip
        tensors = load_safetensors(source / "model.safetensors", np.float32)
        for name, changed in (("missing", {k: v for k, v in tensors.items() if k != needed}),
                              ("extra", {**tensors, "talker.no_such_module.weight": np.zeros(3, np.float32)})):  # fmt: skip
            folder = tmp_path / f"{source.name}-{name}"
            folder.mkdir()
            for item in source.iterdir():
                if item.is_file() and item.name != "model.safetensors":
                    shutil.copy(item, folder / item.name)
            save_file(changed, str(folder / "model.safetensors"))
            if name == "missing":
                with pytest.raises(WeightError, match=re.escape(needed)):
                    loader(folder)
            else:
                assert loader(folder).unused_weights == ["talker.no_such_module.weight"]
