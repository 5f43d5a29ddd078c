"""A Qwen3-TTS checkpoint converter written the way native ports write theirs (a ggml/C++ engine's `convert.py`):
plain json for the configs, the tokenizer files read as files, safetensors parsed by hand with numpy (8-byte header
length, JSON header, raw data) and only the dtypes the engine takes (float32 here: `tensor.numpy()` has no
bfloat16), hyper-parameters taken from the published config keys (not from the official code's defaults) and
checked against the tensor shapes, everything written into one GGUF file.

It imports neither torch, transformers, qwen_tts nor conformance: it is what a port brings, and the checkpoint
folders the framework writes must convert with it unpatched (tests/subjects/qwen3_tts/test_checkpoint_export.py).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np

DTYPES = {"F32": np.float32, "I64": np.int64}  # what this engine loads; anything else is refused
TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json")
SPECIAL_TOKENS = {"<|im_start|>": "im_start_token_id", "<|im_end|>": "im_end_token_id"}


class ConverterError(Exception):
    """The folder is not a checkpoint this converter can read (names the file, and the key or tensor)."""


def read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConverterError(f"{path}: missing")
    return json.loads(path.read_text())


def need(config: dict[str, Any], dotted: str, where: Path) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ConverterError(f"{where}: no key {dotted}")
        node = node[part]
    return node


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise ConverterError(f"{path}: missing")
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    header.pop("__metadata__", None)
    out = {}
    for name, entry in header.items():
        if entry["dtype"] not in DTYPES:
            raise ConverterError(f"{path}: tensor {name} is {entry['dtype']}, this engine reads {', '.join(DTYPES)}")
        start, end = entry["data_offsets"]
        raw = data[8 + length + start : 8 + length + end]
        out[name] = np.frombuffer(raw, dtype=DTYPES[entry["dtype"]]).reshape(entry["shape"]).copy()
    return out


def read_tokenizer(folder: Path, config: dict[str, Any]) -> dict[str, Any]:
    for name in TOKENIZER_FILES:
        if not (folder / name).is_file():
            raise ConverterError(f"{folder / name}: missing (the tokenizer files belong in the model folder)")
    vocab = read_json(folder / "vocab.json")
    merges = [line for line in (folder / "merges.txt").read_text(encoding="utf-8").splitlines()
              if line and not line.startswith("#version")]  # fmt: skip
    added = {token["content"]: token["id"] for token in read_json(folder / "tokenizer.json")["added_tokens"]}
    decoder = read_json(folder / "tokenizer_config.json").get("added_tokens_decoder", {})
    for token, key in SPECIAL_TOKENS.items():
        if added.get(token) != need(config, key, folder / "config.json"):
            raise ConverterError(f"{folder / 'tokenizer.json'}: {token} is not id {config[key]} ({key})")
        if decoder.get(str(added[token]), {}).get("content") != token:
            raise ConverterError(f"{folder / 'tokenizer_config.json'}: {token} missing from added_tokens_decoder")
    tokens = sorted({**vocab, **added}.items(), key=lambda item: item[1])
    return {"tokens": [t for t, _ in tokens], "ids": [i for _, i in tokens], "merges": merges}


def talker_hparams(folder: Path) -> dict[str, Any]:
    path = folder / "config.json"
    config = read_json(path)
    keys = ("im_start_token_id", "im_end_token_id", "assistant_token_id", "tts_pad_token_id", "tts_bos_token_id",
            "tts_eos_token_id", "tts_model_type", "talker_config.hidden_size", "talker_config.intermediate_size",
            "talker_config.num_hidden_layers", "talker_config.num_attention_heads",
            "talker_config.num_key_value_heads", "talker_config.head_dim", "talker_config.rms_norm_eps",
            "talker_config.rope_theta", "talker_config.rope_scaling.mrope_section", "talker_config.text_hidden_size",
            "talker_config.text_vocab_size", "talker_config.vocab_size", "talker_config.num_code_groups",
            "talker_config.codec_eos_token_id", "talker_config.codec_pad_id", "talker_config.codec_bos_id",
            "talker_config.code_predictor_config.hidden_size", "talker_config.code_predictor_config.num_hidden_layers",
            "talker_config.code_predictor_config.num_attention_heads", "talker_config.code_predictor_config.head_dim",
            "talker_config.code_predictor_config.num_key_value_heads", "talker_config.code_predictor_config.vocab_size")  # fmt: skip
    return {key: need(config, key, path) for key in keys} | {"_config": config}


def codec_hparams(folder: Path) -> dict[str, Any]:
    path = folder / "speech_tokenizer" / "config.json"
    config = read_json(path)
    keys = ("input_sample_rate", "output_sample_rate", "decode_upsample_rate", "encode_downsample_rate",
            "encoder_valid_num_quantizers", "decoder_config.codebook_size", "decoder_config.codebook_dim",
            "decoder_config.latent_dim", "decoder_config.decoder_dim", "decoder_config.num_quantizers",
            "decoder_config.num_semantic_quantizers", "decoder_config.vector_quantization_hidden_dimension",
            "decoder_config.hidden_size", "decoder_config.num_hidden_layers", "decoder_config.num_attention_heads",
            "decoder_config.num_key_value_heads", "decoder_config.head_dim", "decoder_config.sliding_window",
            "decoder_config.rms_norm_eps", "decoder_config.upsample_rates", "decoder_config.upsampling_ratios",
            "encoder_config._frame_rate", "encoder_config.sampling_rate", "encoder_config.upsampling_ratios",
            "encoder_config.codebook_dim", "encoder_config.num_quantizers")  # fmt: skip
    return {key: need(config, key, path) for key in keys}


def check_shapes(tts: dict[str, np.ndarray], codec: dict[str, np.ndarray], hp: dict[str, Any], folder: Path) -> None:
    """What a port's loader asserts before it runs: the tensors have the shapes the config implies."""

    def expect(tensors: dict[str, np.ndarray], name: str, shape: tuple[int, ...]) -> None:
        if name not in tensors:
            raise ConverterError(f"{folder}: no tensor {name}")
        if tuple(tensors[name].shape) != shape:
            raise ConverterError(f"{folder}: {name} has shape {tensors[name].shape}, the config implies {shape}")

    t = "talker_config."
    hidden, vocab, groups = hp[t + "hidden_size"], hp[t + "vocab_size"], hp[t + "num_code_groups"]
    expect(tts, "talker.model.codec_embedding.weight", (vocab, hidden))
    expect(tts, "talker.model.text_embedding.weight", (hp[t + "text_vocab_size"], hp[t + "text_hidden_size"]))
    expect(tts, "talker.codec_head.weight", (vocab, hidden))
    heads, kv, head_dim = hp[t + "num_attention_heads"], hp[t + "num_key_value_heads"], hp[t + "head_dim"]
    for layer in range(hp[t + "num_hidden_layers"]):
        expect(tts, f"talker.model.layers.{layer}.self_attn.q_proj.weight", (heads * head_dim, hidden))
        expect(tts, f"talker.model.layers.{layer}.self_attn.k_proj.weight", (kv * head_dim, hidden))
    if sum(hp[t + "rope_scaling.mrope_section"]) * 2 != head_dim:
        raise ConverterError(f"{folder}: mrope_section does not cover head_dim {head_dim}")
    c = t + "code_predictor_config."
    for step in range(groups - 1):
        expect(tts, f"talker.code_predictor.lm_head.{step}.weight", (hp[c + "vocab_size"], hp[c + "hidden_size"]))
    d = "decoder_config."
    semantic, quantizers = hp[d + "num_semantic_quantizers"], hp[d + "num_quantizers"]
    dim, vq_dim, size = hp[d + "codebook_dim"], hp[d + "vector_quantization_hidden_dimension"], hp[d + "codebook_size"]
    q = "decoder.quantizer."
    expect(codec, q + "rvq_first.input_proj.weight", (dim // 2, vq_dim, 1))
    expect(codec, q + "rvq_rest.input_proj.weight", (dim // 2, vq_dim, 1))
    for i in range(semantic):
        expect(codec, f"{q}rvq_first.vq.layers.{i}._codebook.embedding_sum", (size, dim // 2))
    for i in range(quantizers - semantic):
        expect(codec, f"{q}rvq_rest.vq.layers.{i}._codebook.embedding_sum", (size, dim // 2))
    if f"{q}rvq_rest.vq.layers.{quantizers - semantic}._codebook.embedding_sum" in codec:
        raise ConverterError(f"{folder}: more acoustic codebooks than num_quantizers - num_semantic_quantizers")
    hop = int(np.prod(hp[d + "upsample_rates"]) * np.prod(hp[d + "upsampling_ratios"]))
    if hop != hp["decode_upsample_rate"] or hp["output_sample_rate"] % hop:
        raise ConverterError(f"{folder}: the decoder's rates give {hop} samples per frame, "
                             f"decode_upsample_rate says {hp['decode_upsample_rate']}")  # fmt: skip
    frame_rate = hp["encoder_config._frame_rate"]
    if hp["input_sample_rate"] / hp["encode_downsample_rate"] != frame_rate:
        raise ConverterError(f"{folder}: encode_downsample_rate does not give the encoder's {frame_rate} Hz")
    stride = hp["encoder_config.sampling_rate"] / np.prod(hp["encoder_config.upsampling_ratios"]) / frame_rate
    if stride != int(stride) or stride < 1:
        raise ConverterError(f"{folder}: the encoder's conv rate is not a multiple of its frame rate")
    if groups != quantizers or hp["encoder_valid_num_quantizers"] != quantizers:
        raise ConverterError(f"{folder}: {groups} code groups but {quantizers} codec quantizers")


def convert(folder: str | Path, out: str | Path) -> dict[str, Any]:
    """Convert the model folder `folder` (published layout) into the GGUF file `out`; returns a summary."""
    import gguf

    folder = Path(folder)
    hp = talker_hparams(folder) | codec_hparams(folder)
    tokenizer = read_tokenizer(folder, hp.pop("_config"))
    tts = read_safetensors(folder / "model.safetensors")
    codec = read_safetensors(folder / "speech_tokenizer" / "model.safetensors")
    check_shapes(tts, codec, hp, folder)
    writer = gguf.GGUFWriter(str(out), "qwen3-tts")
    for key, value in hp.items():
        name = f"qwen3-tts.{key}"
        if isinstance(value, (bool, str)):
            writer.add_string(name, str(value))
        elif isinstance(value, int):
            writer.add_int64(name, value)
        elif isinstance(value, float):
            writer.add_float32(name, value)
        else:
            writer.add_array(name, list(value))
    writer.add_token_list(tokenizer["tokens"])
    writer.add_token_merges(tokenizer["merges"])
    for prefix, tensors in (("tts.", tts), ("codec.", codec)):
        for name, value in tensors.items():
            writer.add_tensor(prefix + name, value.astype(np.float32) if value.dtype != np.float32 else value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return {"tensors": len(tts) + len(codec), "tokens": len(tokenizer["tokens"]), "hparams": hp}
