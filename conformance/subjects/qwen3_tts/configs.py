"""Complete config dicts for the official Qwen3-TTS config classes: tiny (committed goldens) and full size.

The config classes' defaults cannot build a model (`text_vocab_size` and `codebook_dim` have no usable
defaults), so every value is spelled out. The tiny configs keep the real token-id layout (im_start,
tts_pad/bos/eos, codec pad/bos/eos, think ids, 3072-entry codec vocab, 151936-entry text vocab) so the
real tokenizer and the official prompt construction run unchanged; only widths, depths and the codec's
up/down-sampling factors shrink. The full-size values are the published ones (0.6B talker).
"""

from __future__ import annotations

import copy
from typing import Any

# Token ids shared by every size (the real checkpoint's layout).
TEXT_TOKENS = {
    "im_start_token_id": 151644,
    "im_end_token_id": 151645,
    "tts_pad_token_id": 151671,
    "tts_bos_token_id": 151672,
    "tts_eos_token_id": 151673,
    # Not read by qwen-tts 0.1.1 (the prompt's role tokens come from the tokenizer), but published and read by
    # ports: a checkpoint folder carries every key of the published configs.
    "assistant_token_id": 77091,
}
CODEC_TOKENS = {
    "codec_pad_id": 2148,
    "codec_bos_id": 2149,
    "codec_eos_token_id": 2150,
    "codec_think_id": 2154,
    "codec_nothink_id": 2155,
    "codec_think_bos_id": 2156,
    "codec_think_eos_id": 2157,
}
LANGUAGES = {
    "chinese": 2055,
    "english": 2050,
    "german": 2053,
    "japanese": 2058,
    "beijing_dialect": 2074,
    "sichuan_dialect": 2062,
}
SPEAKERS = {"vivian": 3065, "ryan": 3061, "dylan": 2878, "eric": 2875}
SPEAKER_DIALECTS: dict[str, Any] = {
    "vivian": False,
    "ryan": False,
    "dylan": "beijing_dialect",
    "eric": "sichuan_dialect",
}

MODEL_TYPES = ("base", "custom_voice", "voice_design")
SIZES = ("tiny", "port", "full")

GENERATION_DEFAULTS = {
    "do_sample": True,
    "repetition_penalty": 1.05,
    "temperature": 0.9,
    "top_p": 1.0,
    "top_k": 50,
    "subtalker_dosample": True,
    "subtalker_temperature": 0.9,
    "subtalker_top_p": 1.0,
    "subtalker_top_k": 50,
    "max_new_tokens": 8192,
}


def _talker(size: str) -> dict[str, Any]:
    if size == "tiny":
        code_predictor = {
            "vocab_size": 2048,
            "hidden_size": 24,
            "intermediate_size": 48,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 8,
            "hidden_act": "silu",
            "max_position_embeddings": 65536,
            "rms_norm_eps": 1e-6,
            "rope_theta": 1000000,
            "num_code_groups": 4,
            "max_length": 20,  # published (transformers' generation default); the official code passes its own
        }
        talker = {
            "vocab_size": 3072,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 8,
            "hidden_act": "silu",
            "max_position_embeddings": 32768,
            "rms_norm_eps": 1e-6,
            "rope_theta": 1000000,
            "rope_scaling": {"rope_type": "default", "mrope_section": [2, 1, 1], "interleaved": True},
            "num_code_groups": 4,
            "text_hidden_size": 8,
            "text_vocab_size": 151936,
            "position_id_per_seconds": 13,
        }
    elif size == "port":
        # Port-shaped: every constant native ports hard-code kept (16 code groups x 2048 entries, head_dim 128, the
        # published MRoPE sections, 2:1 grouped-query attention, the token-id layout); widths and depths shrink.
        code_predictor = {
            "vocab_size": 2048,
            "hidden_size": 48,
            "intermediate_size": 96,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "head_dim": 128,
            "hidden_act": "silu",
            "max_position_embeddings": 65536,
            "rms_norm_eps": 1e-6,
            "rope_theta": 1000000,
            "num_code_groups": 16,
            "max_length": 20,
        }
        talker = {
            "vocab_size": 3072,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "head_dim": 128,
            "hidden_act": "silu",
            "max_position_embeddings": 32768,
            "rms_norm_eps": 1e-6,
            "rope_theta": 1000000,
            "rope_scaling": {"rope_type": "default", "mrope_section": [24, 20, 20], "interleaved": True},
            "num_code_groups": 16,
            "text_hidden_size": 16,
            "text_vocab_size": 151936,
            "position_id_per_seconds": 13,
        }
    elif size == "full":
        code_predictor = {
            "vocab_size": 2048,
            "hidden_size": 1024,
            "intermediate_size": 3072,
            "num_hidden_layers": 5,
            "num_attention_heads": 16,
            "num_key_value_heads": 8,
            "head_dim": 128,
            "hidden_act": "silu",
            "max_position_embeddings": 65536,
            "rms_norm_eps": 1e-6,
            "rope_theta": 1000000,
            "num_code_groups": 16,
            "max_length": 20,
        }
        talker = {
            "vocab_size": 3072,
            "hidden_size": 1024,
            "intermediate_size": 3072,
            "num_hidden_layers": 28,
            "num_attention_heads": 16,
            "num_key_value_heads": 8,
            "head_dim": 128,
            "hidden_act": "silu",
            "max_position_embeddings": 32768,
            "rms_norm_eps": 1e-6,
            "rope_theta": 1000000,
            "rope_scaling": {"rope_type": "default", "mrope_section": [24, 20, 20], "interleaved": True},
            "num_code_groups": 16,
            "text_hidden_size": 2048,
            "text_vocab_size": 151936,
            "position_id_per_seconds": 13,
        }
    else:
        raise ValueError(f"unknown size {size!r} ({', '.join(SIZES)})")
    talker.update(CODEC_TOKENS)
    talker["code_predictor_config"] = code_predictor
    talker["codec_language_id"] = dict(LANGUAGES)
    talker["spk_id"] = dict(SPEAKERS)
    talker["spk_is_dialect"] = dict(SPEAKER_DIALECTS)
    return talker


def _speaker_encoder(size: str, talker_hidden: int) -> dict[str, Any]:
    # enc_dim must equal the talker width: the x-vector is spliced into the talker's input sequence.
    # mel_dim is 128 because `extract_speaker_embedding` hard-codes a 128-bin mel.
    if size in ("tiny", "port"):
        return {
            "mel_dim": 128,
            "enc_dim": talker_hidden,
            "enc_channels": [16, 16, 16, 16, 48],
            "enc_kernel_sizes": [5, 3, 3, 3, 1],
            "enc_dilations": [1, 2, 3, 4, 1],
            "enc_attention_channels": 8,
            "enc_res2net_scale": 4,
            "enc_se_channels": 8,
            "sample_rate": 24000,
        }
    return {
        "mel_dim": 128,
        "enc_dim": talker_hidden,
        "enc_channels": [512, 512, 512, 512, 1536],
        "enc_kernel_sizes": [5, 3, 3, 3, 1],
        "enc_dilations": [1, 2, 3, 4, 1],
        "enc_attention_channels": 128,
        "enc_res2net_scale": 8,
        "enc_se_channels": 128,
        "sample_rate": 24000,
    }


def tts_config(size: str, model_type: str) -> dict[str, Any]:
    """The `Qwen3TTSConfig` dict for one model type (base, custom_voice, voice_design)."""
    if model_type not in MODEL_TYPES:
        raise ValueError(f"unknown model type {model_type!r} ({', '.join(MODEL_TYPES)})")
    talker = _talker(size)
    config: dict[str, Any] = {
        "architectures": ["Qwen3TTSForConditionalGeneration"],
        "model_type": "qwen3_tts",
        "tokenizer_type": "qwen3_tts_tokenizer_12hz",
        "tts_model_size": size if size in ("tiny", "port") else "0b6",
        "tts_model_type": model_type,
        "talker_config": talker,
        "speaker_encoder_config": _speaker_encoder(size, talker["hidden_size"]),
        **TEXT_TOKENS,
    }
    return copy.deepcopy(config)


def codec_config(size: str) -> dict[str, Any]:
    """The `Qwen3TTSTokenizerV2Config` dict (12 Hz codec: Mimi encoder + official decoder)."""
    if size == "tiny":
        # 192 samples per frame (upsample 4*3*2*2 * 2*2 on the way out, 4*3*2*4 * 2 on the way in) instead of
        # 1920: small tensors, but still an odd stride (3), every padding and trimming rule of the real
        # codec, and sliding windows (decoder 4 frames, encoder 6 steps) far shorter than the cases.
        decoder = {
            "codebook_size": 2048,
            "codebook_dim": 16,
            "hidden_size": 32,
            "latent_dim": 16,
            "max_position_embeddings": 8000,
            "rope_theta": 10000,
            "num_attention_heads": 4,
            "num_key_value_heads": 4,
            "head_dim": 8,
            "attention_bias": False,
            "sliding_window": 4,
            "intermediate_size": 64,
            "hidden_act": "silu",
            "layer_scale_initial_scale": 0.01,
            "rms_norm_eps": 1e-5,
            "num_hidden_layers": 2,
            "num_quantizers": 4,
            # Published keys the official decoder does not read (it uses codebook_dim and codebook_size for every
            # quantizer) but converters do: one semantic quantizer, the VQ width (= codebook_dim, as published).
            "num_semantic_quantizers": 1,
            "vector_quantization_hidden_dimension": 16,
            "semantic_codebook_size": 4096,
            "upsample_rates": [4, 3, 2, 2],
            "upsampling_ratios": [2, 2],
            "decoder_dim": 16,
            "attention_dropout": 0.0,
        }
        encoder = {
            "sampling_rate": 24000,
            "frame_rate": 125.0,
            "audio_channels": 1,
            "hidden_size": 32,
            "num_filters": 4,
            "num_residual_layers": 1,
            "upsampling_ratios": [4, 3, 2, 4],
            "kernel_size": 7,
            "last_kernel_size": 3,
            "residual_kernel_size": 3,
            "dilation_growth_rate": 2,
            "use_causal_conv": True,
            "pad_mode": "constant",
            "compress": 2,
            "trim_right_ratio": 1.0,
            "codebook_size": 2048,
            "codebook_dim": 8,
            "num_quantizers": 8,
            "use_conv_shortcut": False,
            "vector_quantization_hidden_dimension": 8,
            "num_semantic_quantizers": 1,
            "upsample_groups": 32,
            "num_hidden_layers": 2,
            "intermediate_size": 64,
            "num_attention_heads": 4,
            "num_key_value_heads": 4,
            "head_dim": 8,
            "hidden_act": "gelu",
            "max_position_embeddings": 8000,
            "norm_eps": 1e-5,
            "use_cache": False,
            "use_streaming": False,
            "rope_theta": 10000.0,
            "sliding_window": 6,
            "layer_scale_initial_scale": 0.01,
            "attention_bias": False,
        }
        samples_per_frame, valid_quantizers = 192, 4
    elif size == "port":
        # The published rates and counts (1920 samples per 12.5 Hz frame, decoder upsampling 8*5*4*3 * 2*2, encoder
        # strides 8*6*5*4 to 25 Hz then 2x down to 12.5 Hz, 16 of 32 encoder quantizers, 16 decoder quantizers,
        # 2048-entry codebooks, decoder head_dim 64) with narrow channels, 2 transformer layers and the tiny sliding
        # windows (4 decoder frames, 6 encoder steps), so the cases still run longer than them.
        decoder = {
            "codebook_size": 2048,
            "codebook_dim": 16,
            "hidden_size": 64,
            "latent_dim": 32,
            "max_position_embeddings": 8000,
            "rope_theta": 10000,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "head_dim": 64,
            "attention_bias": False,
            "sliding_window": 4,
            "intermediate_size": 128,
            "hidden_act": "silu",
            "layer_scale_initial_scale": 0.01,
            "rms_norm_eps": 1e-5,
            "num_hidden_layers": 2,
            "num_quantizers": 16,
            "num_semantic_quantizers": 1,
            "vector_quantization_hidden_dimension": 16,
            "semantic_codebook_size": 4096,
            "upsample_rates": [8, 5, 4, 3],
            "upsampling_ratios": [2, 2],
            "decoder_dim": 64,
            "attention_dropout": 0.0,
        }
        encoder = {
            "sampling_rate": 24000,
            "frame_rate": 12.5,
            "audio_channels": 1,
            "hidden_size": 32,
            "num_filters": 4,
            "num_residual_layers": 1,
            "upsampling_ratios": [8, 6, 5, 4],
            "kernel_size": 7,
            "last_kernel_size": 3,
            "residual_kernel_size": 3,
            "dilation_growth_rate": 2,
            "use_causal_conv": True,
            "pad_mode": "constant",
            "compress": 2,
            "trim_right_ratio": 1.0,
            "codebook_size": 2048,
            "codebook_dim": 8,
            "num_quantizers": 32,
            "use_conv_shortcut": False,
            "vector_quantization_hidden_dimension": 8,
            "num_semantic_quantizers": 1,
            "upsample_groups": 32,
            "num_hidden_layers": 2,
            "intermediate_size": 64,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "head_dim": 64,
            "hidden_act": "gelu",
            "max_position_embeddings": 8000,
            "norm_eps": 1e-5,
            "use_cache": False,
            "use_streaming": False,
            "rope_theta": 10000.0,
            "sliding_window": 6,
            "layer_scale_initial_scale": 0.01,
            "attention_bias": False,
        }
        samples_per_frame, valid_quantizers = 1920, 16
    elif size == "full":
        decoder = {
            "codebook_size": 2048,
            "codebook_dim": 512,
            "hidden_size": 512,
            "latent_dim": 1024,
            "max_position_embeddings": 8000,
            "rope_theta": 10000,
            "num_attention_heads": 16,
            "num_key_value_heads": 16,
            "head_dim": 64,
            "attention_bias": False,
            "sliding_window": 72,
            "intermediate_size": 1024,
            "hidden_act": "silu",
            "layer_scale_initial_scale": 0.01,
            "rms_norm_eps": 1e-5,
            "num_hidden_layers": 8,
            "num_quantizers": 16,
            "num_semantic_quantizers": 1,
            "vector_quantization_hidden_dimension": 512,
            "semantic_codebook_size": 4096,
            "upsample_rates": [8, 5, 4, 3],
            "upsampling_ratios": [2, 2],
            "decoder_dim": 1536,
            "attention_dropout": 0.0,
        }
        encoder = {
            "sampling_rate": 24000,
            "frame_rate": 12.5,
            "audio_channels": 1,
            "hidden_size": 512,
            "num_filters": 64,
            "num_residual_layers": 1,
            "upsampling_ratios": [8, 6, 5, 4],
            "kernel_size": 7,
            "last_kernel_size": 3,
            "residual_kernel_size": 3,
            "dilation_growth_rate": 2,
            "use_causal_conv": True,
            "pad_mode": "constant",
            "compress": 2,
            "trim_right_ratio": 1.0,
            "codebook_size": 2048,
            "codebook_dim": 256,
            "num_quantizers": 32,
            "use_conv_shortcut": False,
            "vector_quantization_hidden_dimension": 256,
            "num_semantic_quantizers": 1,
            "upsample_groups": 512,
            "num_hidden_layers": 8,
            "intermediate_size": 2048,
            "num_attention_heads": 8,
            "num_key_value_heads": 8,
            "head_dim": 64,
            "hidden_act": "gelu",
            "max_position_embeddings": 8000,
            "norm_eps": 1e-5,
            "use_cache": False,
            "use_streaming": False,
            "rope_theta": 10000.0,
            "sliding_window": 250,
            "layer_scale_initial_scale": 0.01,
            "attention_bias": False,
        }
        samples_per_frame, valid_quantizers = 1920, 16
    else:
        raise ValueError(f"unknown size {size!r} ({', '.join(SIZES)})")
    return {
        "architectures": ["Qwen3TTSTokenizerV2Model"],
        "model_type": "qwen3_tts_tokenizer_12hz",
        "encoder_valid_num_quantizers": valid_quantizers,
        "input_sample_rate": 24000,
        "output_sample_rate": 24000,
        "decode_upsample_rate": samples_per_frame,
        "encode_downsample_rate": samples_per_frame,
        "encoder_config": encoder,
        "decoder_config": decoder,
    }


PREPROCESSOR_CONFIG = {
    "feature_extractor_type": "EncodecFeatureExtractor",
    "feature_size": 1,
    "sampling_rate": 24000,
    "padding_side": "right",
    "padding_value": 0.0,
    "return_attention_mask": True,
    "chunk_length_s": None,
    "overlap": None,
}
