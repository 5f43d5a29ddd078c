"""The codec's entry points and loader: official paths, weight names, dtypes, padding semantics of the
wrapper API, and that impl/ needs neither torch, transformers nor qwen_tts."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from impl.common.weights import WeightError, load_safetensors
from impl.qwen3_tts import codec

from .helpers import ROOT, TINY_CODEC, tiny_codec


def test_codec_imports_and_runs_without_torch() -> None:
    """In a fresh interpreter, loading the codec and decoding/encoding imports no torch, transformers or qwen_tts."""
    script = f"""
import sys, numpy as np
from impl.qwen3_tts import codec
root = codec.load_codec({str(TINY_CODEC)!r}, np.float32)
codec.decode_codes(root, np.zeros((2, 4), np.int64))
codec.encode_waveform(root, np.zeros(300, np.float32), 24000)
bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'qwen_tts'))
print(','.join(bad))
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


def test_modules_live_at_official_paths() -> None:
    root = tiny_codec("float32")
    paths = {path for path, _ in root.named_modules()}
    for path in (
        "speech_tokenizer.decoder.pre_transformer.layers.1.self_attn.q_norm",
        "speech_tokenizer.decoder.upsample.1.1.dwconv.conv",
        "speech_tokenizer.decoder.decoder.4.block.4.conv2.conv",
        "speech_tokenizer.decoder.quantizer.rvq_rest.vq.layers.2._codebook",
        "speech_tokenizer.encoder.encoder.layers.14.conv",
        "speech_tokenizer.encoder.encoder_transformer.layers.1.self_attn.rotary_emb",
        "speech_tokenizer.encoder.quantizer.acoustic_residual_vector_quantizer.layers.6.codebook",
        "speech_tokenizer.encoder.downsample.conv",
    ):
        assert path in paths, path
    assert root.get("decoder.decoder.1.block.0").path == "speech_tokenizer.decoder.decoder.1.block.0"


def test_every_checkpoint_tensor_is_used_and_keeps_its_dtype() -> None:
    tensors = load_safetensors(TINY_CODEC / "model.safetensors")
    for dtype in (np.float32, np.float64):
        root = codec.load_codec(TINY_CODEC, dtype)
        assert root.unused_weights == []
        assert root.decoder.pre_conv.conv.weight.dtype == dtype
        np.testing.assert_array_equal(root.encoder.downsample.conv.weight, tensors["encoder.downsample.conv.weight"])
    with pytest.raises(ValueError, match="float32 or float64"):
        codec.load_codec(TINY_CODEC, np.float16)


def test_missing_and_extra_tensors(tmp_path: Path) -> None:
    """A missing tensor is an error naming it; tensors the model has no place for are reported, not fatal;
    sharded checkpoints (model.safetensors.index.json) load too."""
    from safetensors.numpy import save_file

    tensors = load_safetensors(TINY_CODEC / "model.safetensors", np.float32)
    shutil.copy(TINY_CODEC / "config.json", tmp_path / "config.json")
    missing = dict(tensors)
    del missing["decoder.pre_transformer.norm.weight"]
    save_file(missing, str(tmp_path / "model.safetensors"))
    with pytest.raises(WeightError, match=r"decoder\.pre_transformer\.norm\.weight"):
        codec.load_codec(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    names = sorted(tensors)
    half = len(names) // 2
    save_file({n: tensors[n] for n in names[:half]}, str(tmp_path / "a.safetensors"))
    extra = {n: tensors[n] for n in names[half:]} | {"encoder.decoder.layers.0.conv.weight": np.zeros(3, np.float32)}
    save_file(extra, str(tmp_path / "b.safetensors"))
    weight_map = {n: "a.safetensors" for n in names[:half]} | {n: "b.safetensors" for n in extra}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    root = codec.load_codec(tmp_path)
    assert root.unused_weights == ["encoder.decoder.layers.0.conv.weight"]


def test_decode_padding_and_dtypes() -> None:
    """Frames padded with -1 (in codebook 0) decode as code 0 and are cut off; decode_codes returns float32
    like the official wrapper whatever the model dtype."""
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 2048, size=(5, 4))
    for dtype in ("float32", "float64"):
        root = tiny_codec(dtype)
        wav = codec.decode_codes(root, codes)
        assert wav.dtype == np.float32 and wav.shape == (5 * 192,)
        batch = np.full((2, 5, 4), -1)
        batch[0] = codes
        batch[1, :3] = codes[:3]
        values = root.decode(batch)["audio_values"]
        assert [v.shape for v in values] == [(960,), (576,)]
        assert values[0].dtype == np.dtype(dtype)
        # causal decoder: the 3-frame item equals the first 576 samples of the 5-frame one
        np.testing.assert_array_equal(values[1], values[0][:576])


def test_encode_shapes_and_errors() -> None:
    root = tiny_codec("float32")
    for samples in (1, 191, 192, 193, 1000):
        codes = codec.encode_waveform(root, np.random.default_rng(samples).standard_normal(samples) * 0.1, 24000)
        assert codes.shape == (-(-samples // 192), 4) and codes.dtype == np.int64
    stereo = np.random.default_rng(0).standard_normal((400, 2)) * 0.1
    np.testing.assert_array_equal(codec.encode_waveform(root, stereo, 24000),
                                  codec.encode_waveform(root, stereo.mean(-1), 24000))  # fmt: skip
    with pytest.raises(NotImplementedError, match="resampling"):
        codec.encode_waveform(root, np.zeros(100), 16000)
