"""Property tests of every encoder (Mimi) block kind against freshly built official modules with random
parameters and sizes, in float64: padded convolutions (causal and centred; constant, replicate and
reflect padding, short inputs included), residual blocks, the SEANet encoder, the transformer, the
split RVQ encode (identical codes) and the whole encoder."""

from __future__ import annotations

import types
from typing import Any

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from impl.qwen3_tts import codec_decoder as dec
from impl.qwen3_tts import codec_encoder as enc

from .helpers import assert_close, randomized, require_official, rng_array, run_official, transfer

torch = pytest.importorskip("torch")
o = require_official()
pytestmark = pytest.mark.official

seeds = st.integers(0, 2**31 - 1)


@st.composite
def mimi_configs(draw: Any) -> dict[str, Any]:
    hidden = draw(st.sampled_from([4, 8, 12]))
    heads = draw(
        st.sampled_from([h for h in (1, 2, 4) if hidden % h == 0 and (hidden // h) % 2 == 0])
    )  # RoPE: even head_dim
    compress = draw(st.integers(1, 2))
    vq_hidden = draw(st.sampled_from([hidden, 3]))
    config = {
        "sampling_rate": draw(st.sampled_from([24000, 16000])),
        "audio_channels": 1,
        "hidden_size": hidden,
        "num_filters": draw(st.integers(compress, 3)),
        "num_residual_layers": draw(st.integers(1, 2)),
        "upsampling_ratios": draw(st.lists(st.integers(1, 4), min_size=1, max_size=3)),
        "kernel_size": draw(st.integers(1, 7)),
        "last_kernel_size": draw(st.integers(1, 3)),
        "residual_kernel_size": draw(st.integers(1, 3)),
        "dilation_growth_rate": draw(st.integers(1, 3)),
        "use_causal_conv": draw(st.booleans()),
        "pad_mode": draw(st.sampled_from(["constant", "replicate", "reflect"])),
        "compress": compress,
        "trim_right_ratio": 1.0,
        "codebook_size": draw(st.sampled_from([2, 8, 16, 32, 64])),  # a power of 2 (MimiModel checks)
        "codebook_dim": vq_hidden,
        "num_quantizers": draw(st.integers(2, 5)),
        "use_conv_shortcut": draw(st.booleans()),
        "vector_quantization_hidden_dimension": vq_hidden,
        "num_semantic_quantizers": 1,
        "upsample_groups": hidden,
        "num_hidden_layers": draw(st.integers(1, 2)),
        "intermediate_size": draw(st.integers(1, 16)),
        "num_attention_heads": heads,
        "num_key_value_heads": draw(st.sampled_from([d for d in range(1, heads + 1) if heads % d == 0])),
        "head_dim": draw(st.sampled_from([None, 2, 4])),
        "hidden_act": "gelu",
        "max_position_embeddings": 8000,
        "norm_eps": 1e-5,
        "use_cache": False,
        "use_streaming": False,
        "rope_theta": draw(st.sampled_from([100.0, 10000.0])),
        "sliding_window": draw(st.integers(1, 6)),
        "layer_scale_initial_scale": 0.01,
        "attention_bias": draw(st.booleans()),
    }
    if draw(st.booleans()):  # an explicit frame rate (as Qwen's config.json has), else derived
        encodec_rate = -(-config["sampling_rate"] // int(np.prod(config["upsampling_ratios"])))
        config["frame_rate"] = encodec_rate / draw(st.sampled_from([2, 4]))
    return config


def official_config(config: dict[str, Any], attn: str = "sdpa") -> Any:
    cfg = o.transformers.MimiConfig(**config)
    cfg._attn_implementation = attn
    return cfg


def impl_config(config: dict[str, Any], attn: str = "sdpa") -> enc.MimiConfig:
    return enc.MimiConfig.from_dict(config, attn_implementation=attn)


@given(seed=seeds, cin=st.integers(1, 3), cout=st.integers(1, 3), kernel=st.integers(1, 7), stride=st.integers(1, 4),
       dilation=st.integers(1, 3), causal=st.booleans(), pad_mode=st.sampled_from(["constant", "replicate", "reflect"]),
       bias=st.booleans(), length=st.integers(1, 20))  # fmt: skip
def test_mimi_conv1d(seed: int, cin: int, cout: int, kernel: int, stride: int, dilation: int, causal: bool,
                     pad_mode: str, bias: bool, length: int) -> None:  # fmt: skip
    assume(dilation * (kernel - 1) + 1 >= stride)  # every official strided conv has kernel >= stride
    config = {"use_causal_conv": causal, "pad_mode": pad_mode}
    official = randomized(
        o.mimi.MimiConv1d(official_config(config), cin, cout, kernel, stride, dilation, bias=bias), seed
    )
    impl = transfer(official, enc.MimiConv1d(impl_config(config), cin, cout, kernel, stride, dilation, bias=bias))
    x = rng_array(seed, (2, cin, length))
    assert_close(run_official(official, torch.from_numpy(x)), impl(x))


@given(length=st.integers(1, 2**27), kernel=st.integers(1, 16), stride=st.integers(1, 8), dilation=st.integers(1, 3))
def test_extra_padding_formulas(length: int, kernel: int, stride: int, dilation: int) -> None:
    """The right padding to a whole number of strides, at any length: Mimi divides int64 tensors with `/`
    (float32), the Qwen decoder divides Python ints (float64); both rounding behaviours are mirrored."""
    fake = types.SimpleNamespace(shape=(1, 1, length))
    mimi = o.mimi.MimiConv1d(official_config({}), 1, 1, kernel, stride, dilation)
    impl_mimi = enc.MimiConv1d(impl_config({}), 1, 1, kernel, stride, dilation)
    assert impl_mimi._get_extra_padding_for_conv1d(length) == int(mimi._get_extra_padding_for_conv1d(fake))
    qwen = o.codec_modeling.Qwen3TTSTokenizerV2CausalConvNet(1, 1, kernel, dilation, stride)
    impl_qwen = dec.Qwen3TTSTokenizerV2CausalConvNet(1, 1, kernel, dilation, stride)
    assert impl_qwen._get_extra_padding_for_conv1d(length) == qwen._get_extra_padding_for_conv1d(fake)


@given(seed=seeds, config=mimi_configs(), dim=st.integers(2, 6), length=st.integers(1, 16), first=st.integers(1, 3))
def test_mimi_resnet_block(seed: int, config: dict[str, Any], dim: int, length: int, first: int) -> None:
    dim = max(dim, config["compress"])
    official = randomized(o.mimi.MimiResnetBlock(official_config(config), dim, [first, 1]), seed)
    impl = transfer(official, enc.MimiResnetBlock(impl_config(config), dim, [first, 1]))
    x = rng_array(seed, (1, dim, length))
    assert_close(run_official(official, torch.from_numpy(x)), impl(x))


@given(seed=seeds, config=mimi_configs(), length=st.integers(1, 120))
def test_mimi_encoder(seed: int, config: dict[str, Any], length: int) -> None:
    official = randomized(o.mimi.MimiEncoder(official_config(config)), seed)
    impl = transfer(official, enc.MimiEncoder(impl_config(config)))
    x = rng_array(seed, (1, 1, length), 0.3)
    assert_close(run_official(official, torch.from_numpy(x)), impl(x))


@given(seed=seeds, config=mimi_configs(), length=st.integers(1, 14), batch=st.integers(1, 2),
       attn=st.sampled_from(["sdpa", "eager"]), weights=st.booleans())  # fmt: skip
def test_mimi_transformer(seed: int, config: dict[str, Any], length: int, batch: int, attn: str, weights: bool) -> None:
    """LayerNorm, RoPE attention under the plain causal mask (the config's sliding window is not
    applied: lengths beyond it included), layer scales, GELU MLP; attention weights when asked for."""
    official = randomized(o.mimi.MimiTransformerModel(official_config(config, attn)), seed)
    impl = transfer(official, enc.MimiTransformerModel(impl_config(config, attn)))
    x = rng_array(seed, (batch, length, config["hidden_size"]))
    expected = run_official(official, torch.from_numpy(x), return_dict=True, output_attentions=weights)
    got = impl(x, return_dict=True, output_attentions=weights)
    assert_close(expected.last_hidden_state, got["last_hidden_state"])
    if weights:
        assert len(got["attentions"]) == len(expected.attentions)
        for e, g in zip(expected.attentions, got["attentions"]):
            assert_close(e, g)


@given(seed=seeds, config=mimi_configs(), frames=st.integers(1, 30), batch=st.integers(1, 2), data=st.data())
def test_mimi_split_rvq(seed: int, config: dict[str, Any], frames: int, batch: int, data: Any) -> None:
    """Encode: nearest entry of embed = embed_sum / clamp(cluster_usage) per residual step (distance
    search on both sides of torch.cdist's 25-row switch); identical codes. Decode of those codes too."""
    official = randomized(o.mimi.MimiSplitResidualVectorQuantizer(official_config(config)), seed)
    impl = transfer(official, enc.MimiSplitResidualVectorQuantizer(impl_config(config)))
    n_q = data.draw(st.integers(1, config["num_quantizers"]))
    x = rng_array(seed, (batch, config["hidden_size"], frames))
    expected = run_official(official.encode, torch.from_numpy(x), n_q).numpy()
    got = impl.encode(x, n_q)
    assert got.dtype == np.int64
    assert np.array_equal(expected, got)
    codes = np.swapaxes(got, 0, 1)
    assert_close(run_official(official.decode, torch.from_numpy(codes)), impl.decode(codes))


@given(seed=seeds, config=mimi_configs(), length=st.integers(1, 200))
def test_mimi_encode(seed: int, config: dict[str, Any], length: int) -> None:
    """The whole encoder as Qwen3TTSTokenizerV2Encoder keeps it (MimiModel.encode without the decoder
    half): conv encoder, transformer, replicate-padded downsample, split RVQ; identical codes."""
    official = randomized(o.codec_modeling.Qwen3TTSTokenizerV2Encoder(official_config(config)), seed)
    impl = transfer(official, enc.Qwen3TTSTokenizerV2Encoder(impl_config(config)))
    x = rng_array(seed, (1, 1, length), 0.3)
    expected = run_official(official.encode, input_values=torch.from_numpy(x), return_dict=True).audio_codes
    got = impl.encode(input_values=x, return_dict=True)
    assert list(got) == ["audio_codes"]
    assert np.array_equal(expected.numpy(), got["audio_codes"])
