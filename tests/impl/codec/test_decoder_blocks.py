"""Property tests of every decoder block kind: a freshly built official module with random (seeded)
parameters and random sizes, its weights copied into the NumPy twin, both run in float64 on the same
random input; outputs agree to ~1e-10 relative. Lengths include 1 and non-multiples of the stride."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from impl.qwen3_tts import codec_decoder as dec

from .helpers import assert_close, randomized, require_official, rng_array, run_official, to_numpy, transfer

torch = pytest.importorskip("torch")
o = require_official()
M = o.codec_modeling
pytestmark = pytest.mark.official

seeds = st.integers(0, 2**31 - 1)


@st.composite
def decoder_configs(draw: Any) -> dict[str, Any]:
    heads = draw(st.integers(1, 4))
    n_rates = draw(st.integers(1, 3))
    return {
        "codebook_size": draw(st.integers(2, 64)),
        "codebook_dim": 2 * draw(st.integers(1, 4)),
        "hidden_size": draw(st.sampled_from([4, 8, 16])),
        "latent_dim": draw(st.integers(1, 8)),
        "max_position_embeddings": 8000,
        "rope_theta": draw(st.sampled_from([100.0, 10000])),
        "num_attention_heads": heads,
        "num_key_value_heads": draw(st.sampled_from([d for d in range(1, heads + 1) if heads % d == 0])),
        "head_dim": draw(st.sampled_from([2, 4, 8])),
        "attention_bias": draw(st.booleans()),
        "sliding_window": draw(st.integers(1, 6)),
        "intermediate_size": draw(st.integers(1, 16)),
        "hidden_act": "silu",
        "layer_scale_initial_scale": 0.01,
        "rms_norm_eps": 1e-5,
        "num_hidden_layers": draw(st.integers(1, 2)),
        "num_quantizers": draw(st.integers(2, 4)),
        "upsample_rates": draw(st.lists(st.integers(1, 4), min_size=n_rates, max_size=n_rates)),
        "upsampling_ratios": draw(st.lists(st.integers(1, 3), max_size=2)),
        "decoder_dim": 2**n_rates * draw(st.integers(1, 3)),
        "attention_dropout": 0.0,
    }


def official_config(config: dict[str, Any], attn: str = "sdpa") -> Any:
    cfg = o.codec_config.Qwen3TTSTokenizerV2DecoderConfig(**config)
    cfg._attn_implementation = attn
    return cfg


def impl_config(config: dict[str, Any], attn: str = "sdpa") -> dec.DecoderConfig:
    return dec.DecoderConfig.from_dict(config, attn_implementation=attn)


# -- convolutions and activations -------------------------------------------------------------------------


@given(seed=seeds, cin=st.integers(1, 4), cout=st.integers(1, 4), kernel=st.integers(1, 7), dilation=st.integers(1, 3),
       stride=st.integers(1, 4), depthwise=st.booleans(), length=st.integers(1, 17))  # fmt: skip
def test_causal_conv_net(seed: int, cin: int, cout: int, kernel: int, dilation: int, stride: int, depthwise: bool,
                         length: int) -> None:  # fmt: skip
    assume(dilation * (kernel - 1) + 1 >= stride)  # every official strided conv has kernel >= stride
    groups = cin if depthwise else 1
    cout = cin if depthwise else cout
    official = randomized(M.Qwen3TTSTokenizerV2CausalConvNet(cin, cout, kernel, dilation, stride, groups), seed)
    impl = transfer(official, dec.Qwen3TTSTokenizerV2CausalConvNet(cin, cout, kernel, dilation, stride, groups))
    x = rng_array(seed, (2, cin, length))
    expected = run_official(official, torch.from_numpy(x))
    got = impl(x)
    assert got.shape[-1] == -(-length // stride)  # ceil(L / stride) frames: padded to whole strides
    assert_close(expected, got)


@given(seed=seeds, cin=st.integers(1, 4), cout=st.integers(1, 4), kernel=st.integers(1, 8), stride=st.integers(1, 5),
       length=st.integers(1, 9))  # fmt: skip
def test_causal_trans_conv_net(seed: int, cin: int, cout: int, kernel: int, stride: int, length: int) -> None:
    official = randomized(M.Qwen3TTSTokenizerV2CausalTransConvNet(cin, cout, kernel, stride), seed)
    impl = transfer(official, dec.Qwen3TTSTokenizerV2CausalTransConvNet(cin, cout, kernel, stride))
    x = rng_array(seed, (2, cin, length))
    assert_close(run_official(official, torch.from_numpy(x)), impl(x))


@given(seed=seeds, dim=st.integers(1, 8), length=st.integers(1, 12))
def test_convnext_block(seed: int, dim: int, length: int) -> None:
    official = randomized(M.Qwen3TTSTokenizerV2ConvNeXtBlock(dim), seed)
    impl = transfer(official, dec.Qwen3TTSTokenizerV2ConvNeXtBlock(dim))
    x = rng_array(seed, (2, dim, length))
    assert_close(run_official(official, torch.from_numpy(x)), impl(x))


@given(seed=seeds, dim=st.integers(1, 8), length=st.integers(1, 12), scale=st.sampled_from([0.1, 1.0, 10.0]))
def test_snake_beta(seed: int, dim: int, length: int, scale: float) -> None:
    official = randomized(M.SnakeBeta(dim), seed)
    impl = transfer(official, dec.SnakeBeta(dim))
    x = rng_array(seed, (2, dim, length), scale)
    assert_close(run_official(official, torch.from_numpy(x)), impl(x))


@given(seed=seeds, dim=st.integers(1, 6), dilation=st.sampled_from([1, 2, 3, 9]), length=st.integers(1, 30))
def test_residual_unit(seed: int, dim: int, dilation: int, length: int) -> None:
    official = randomized(M.Qwen3TTSTokenizerV2DecoderDecoderResidualUnit(dim, dilation), seed)
    impl = transfer(official, dec.Qwen3TTSTokenizerV2DecoderDecoderResidualUnit(dim, dilation))
    x = rng_array(seed, (1, dim, length))
    assert_close(run_official(official, torch.from_numpy(x)), impl(x))


@given(seed=seeds, config=decoder_configs(), length=st.integers(1, 9), data=st.data())
def test_decoder_block(seed: int, config: dict[str, Any], length: int, data: Any) -> None:
    index = data.draw(st.integers(0, len(config["upsample_rates"]) - 1))
    official = randomized(M.Qwen3TTSTokenizerV2DecoderDecoderBlock(official_config(config), index), seed)
    impl = transfer(official, dec.Qwen3TTSTokenizerV2DecoderDecoderBlock(impl_config(config), index))
    x = rng_array(seed, (1, config["decoder_dim"] // 2**index, length))
    assert_close(run_official(official, torch.from_numpy(x)), impl(x))


# -- pre-transformer ------------------------------------------------------------------------------------------


@given(seed=seeds, config=decoder_configs(), length=st.integers(1, 14), batch=st.integers(1, 2),
       attn=st.sampled_from(["sdpa", "eager"]))  # fmt: skip
def test_pre_transformer(seed: int, config: dict[str, Any], length: int, batch: int, attn: str) -> None:
    """Input projection, RMSNorm, RoPE attention with the sliding window (lengths past the window
    included), layer scales, SiLU-gated MLP, final norm, output projection."""
    official = randomized(M.Qwen3TTSTokenizerV2DecoderTransformerModel(official_config(config, attn)), seed)
    impl = transfer(official, dec.Qwen3TTSTokenizerV2DecoderTransformerModel(impl_config(config, attn)))
    x = rng_array(seed, (batch, length, config["latent_dim"]))
    expected = run_official(official, inputs_embeds=torch.from_numpy(x))
    got = impl(inputs_embeds=x)
    assert list(got) == ["last_hidden_state"]
    assert_close(expected.last_hidden_state, got["last_hidden_state"])


@given(seed=seeds, config=decoder_configs(), length=st.integers(1, 10), attn=st.sampled_from(["sdpa", "eager"]))
def test_attention_alone(seed: int, config: dict[str, Any], length: int, attn: str) -> None:
    """The attention module called as the layer calls it; eager also returns the weights, SDPA None."""
    official = randomized(M.Qwen3TTSTokenizerV2DecoderAttention(official_config(config, attn), 0), seed)
    impl = transfer(official, dec.Qwen3TTSTokenizerV2DecoderAttention(impl_config(config, attn), 0))
    x = rng_array(seed, (1, length, config["hidden_size"]))
    head_dim = config["head_dim"]
    positions = np.arange(length)[None]
    angles = positions[..., None] * (1.0 / 10000 ** (np.arange(0, head_dim, 2) / head_dim))
    cos, sin = np.cos(np.concatenate([angles, angles], -1)), np.sin(np.concatenate([angles, angles], -1))
    from impl.common.attention import causal_mask

    mask = causal_mask(1, np.arange(length), length, sliding_window=config["sliding_window"], dtype=np.float64,
                       boolean=attn != "eager")  # what the model passes  # fmt: skip
    expected = run_official(official, hidden_states=torch.from_numpy(x), attention_mask=torch.from_numpy(mask),
                            position_embeddings=(torch.from_numpy(cos), torch.from_numpy(sin)))  # fmt: skip
    got = impl(hidden_states=x, attention_mask=mask, position_embeddings=(cos, sin))
    assert_close(expected[0], got[0])
    if attn == "eager":
        assert_close(expected[1], got[1])
    else:
        assert expected[1] is None and got[1] is None


# -- quantizer and the whole decoder ------------------------------------------------------------------------------


@given(seed=seeds, n_q=st.integers(2, 5), dim=st.integers(1, 6), bins=st.integers(1, 50), frames=st.integers(1, 9),
       semantic_only=st.booleans())  # fmt: skip
def test_split_rvq_decode(seed: int, n_q: int, dim: int, bins: int, frames: int, semantic_only: bool) -> None:
    """codebook = embedding_sum / clamp(cluster_usage, eps) (some usages drawn below eps), per-group
    output projections, sum; also with only the semantic codebook given."""
    kwargs = {"n_q": n_q, "n_q_semantic": 1, "dimension": dim, "bins": bins, "input_dimension": 2 * dim,
              "output_dimension": 2 * dim}  # fmt: skip
    official = randomized(M.SplitResidualVectorQuantizer(**kwargs), seed)
    with torch.no_grad():  # exercise the clamp: a few cluster usages below epsilon
        usage = official.rvq_first.vq.layers[0]._codebook.cluster_usage
        usage[: max(1, bins // 4)] = 1e-7
    impl = transfer(official, dec.SplitResidualVectorQuantizer(**kwargs))
    codes = np.random.default_rng(seed).integers(0, bins, size=(2, 1 if semantic_only else n_q, frames))
    expected = official.decode(torch.from_numpy(codes))
    assert_close(expected, impl.decode(codes))


@given(seed=seeds, config=decoder_configs(), frames=st.integers(1, 12))
def test_decoder_forward(seed: int, config: dict[str, Any], frames: int) -> None:
    official = randomized(M.Qwen3TTSTokenizerV2Decoder(official_config(config)), seed)
    impl = transfer(official, dec.Qwen3TTSTokenizerV2Decoder(impl_config(config)))
    codes = np.random.default_rng(seed).integers(0, config["codebook_size"], size=(1, config["num_quantizers"], frames))
    expected = run_official(official, torch.from_numpy(codes))
    got = impl(codes)
    assert got.shape == (1, 1, frames * impl.total_upsample)
    assert_close(expected, got)
    with pytest.raises(ValueError, match="layer of codes"):
        impl(codes[:, :1])


@given(
    seed=seeds, config=decoder_configs(), frames=st.integers(1, 14), chunk=st.integers(1, 6), context=st.integers(0, 5)
)
def test_chunked_decode(seed: int, config: dict[str, Any], frames: int, chunk: int, context: int) -> None:
    """chunked_decode exactly as official: chunk boundaries, left context (clipped at the start), the
    context's samples dropped, concatenation."""
    official = randomized(M.Qwen3TTSTokenizerV2Decoder(official_config(config)), seed)
    impl = transfer(official, dec.Qwen3TTSTokenizerV2Decoder(impl_config(config)))
    codes = np.random.default_rng(seed).integers(0, config["codebook_size"], size=(1, config["num_quantizers"], frames))
    import torch as t

    from conformance.subjects.qwen3_tts.precision import clean_precision

    with t.no_grad(), clean_precision(t.float64):
        expected = official.chunked_decode(t.from_numpy(codes), chunk_size=chunk, left_context_size=context)
    assert_close(expected, impl.chunked_decode(codes, chunk_size=chunk, left_context_size=context))


def test_decoder_float32_is_as_accurate_as_official_float32() -> None:
    """In float32 the impl computes in float32 (no silent upcast), and its distance to the clean float64
    result is within a few times the official float32's own distance to it (the float32 tolerance is
    derived from float64, not picked)."""
    config = {"codebook_size": 8, "codebook_dim": 4, "hidden_size": 8, "latent_dim": 4, "max_position_embeddings": 8000,
              "rope_theta": 10000, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 4,
              "attention_bias": False, "sliding_window": 3, "intermediate_size": 8, "hidden_act": "silu",
              "layer_scale_initial_scale": 0.01, "rms_norm_eps": 1e-5, "num_hidden_layers": 1, "num_quantizers": 3,
              "upsample_rates": [2, 3], "upsampling_ratios": [2], "decoder_dim": 8, "attention_dropout": 0.0}  # fmt: skip
    from conformance.metrics import compare_arrays
    from impl.common.weights import load_weights

    official64 = randomized(M.Qwen3TTSTokenizerV2Decoder(official_config(config)), 7)
    codes = np.random.default_rng(0).integers(0, 8, size=(1, 3, 9))
    truth = to_numpy(run_official(official64, torch.from_numpy(codes)))
    official32 = official64.float()
    with torch.no_grad():
        official_error = compare_arrays(truth, to_numpy(official32(torch.from_numpy(codes))).astype(np.float64)).rel_l2
    impl = dec.Qwen3TTSTokenizerV2Decoder(impl_config(config)).bind("")
    load_weights(impl, {k: v.numpy() for k, v in official32.state_dict().items()})
    got = impl(codes)
    assert got.dtype == np.float32
    impl_error = compare_arrays(truth, got.astype(np.float64)).rel_l2
    assert impl_error <= 4 * max(official_error, 1e-7), (impl_error, official_error)
