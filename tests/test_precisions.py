"""Precisions and weight formats (conformance/precisions.py): numpy only, the ggml formats exactly as the `gguf`
package quantizes them, the record options parsed with one-line errors."""

from __future__ import annotations

import numpy as np
import pytest

from conformance import precisions
from conformance.errors import UsageError

gguf = pytest.importorskip("gguf")


def test_block_formats_round_trip_exactly_as_ggml_defines_them() -> None:
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize, quantize

    weight = np.random.default_rng(0).standard_normal((6, 96)).astype(np.float32)
    for name, kind in (("q8_0", "Q8_0"), ("q4_0", "Q4_0"), ("f16", "F16")):
        qtype = GGMLQuantizationType[kind]
        expected = dequantize(quantize(weight, qtype), qtype)
        assert np.array_equal(precisions.WEIGHT_FORMATS[name].roundtrip(weight), expected)
    assert np.array_equal(
        precisions.WEIGHT_FORMATS["f16"].roundtrip(weight), weight.astype(np.float16).astype(np.float32)
    )
    q8 = precisions.WEIGHT_FORMATS["q8_0"].roundtrip(weight)
    q4 = precisions.WEIGHT_FORMATS["q4_0"].roundtrip(weight)
    error = [np.linalg.norm(q - weight) / np.linalg.norm(weight) for q in (q8, q4)]
    assert 0 < error[0] < 0.01 < error[1] < 0.2  # Q8_0 ~0.5 %, Q4_0 ~8 % of a Gaussian weight


def test_a_block_format_applies_to_matrices_whose_last_axis_is_whole_blocks_only() -> None:
    q8 = precisions.WEIGHT_FORMATS["q8_0"]
    assert q8.applies((4, 64)) and q8.applies((2, 3, 32))
    assert not q8.applies((64,)) and not q8.applies((8, 8, 7))  # a norm's vector, a width-7 conv kernel
    kernel = np.random.default_rng(1).standard_normal((8, 8, 7)).astype(np.float32)
    assert np.array_equal(q8.roundtrip(kernel), kernel)  # left in float32, as llama.cpp's converters leave it
    bf16 = precisions.WEIGHT_FORMATS["bf16"].roundtrip(kernel[..., :6].copy())
    assert np.array_equal(bf16.view(np.uint32) & 0xFFFF, np.zeros_like(bf16.view(np.uint32)))


def test_record_options_name_twins_and_reject_unknown_ones() -> None:
    twins = precisions.twins("bfloat16, float16", "q8_0,f16")
    assert [t.name for t in twins] == ["bfloat16", "float16", "q8_0", "f16-weights"]
    assert [(t.compute, t.weights) for t in twins] == [("bfloat16", None), ("float16", None), ("float32", "q8_0"),
                                                      ("float32", "f16")]  # fmt: skip
    with pytest.raises(UsageError, match="--precisions takes bfloat16, float16, not 'q8_0'"):
        precisions.twins("q8_0")
    with pytest.raises(UsageError, match="--weights-quant takes"):
        precisions.twins((), "q5_k")
    assert (
        precisions.noise_mode("chained", "q8_0") == "chained:q8_0"
        and precisions.noise_mode("isolated", None) == "isolated"
    )
    assert precisions.record_command("q4_0") == "--weights-quant q4_0"
    assert precisions.record_command("bfloat16") == "--precisions bfloat16"


def test_a_policy_names_a_precision_at_the_top_and_per_rule() -> None:
    from conformance.compare.policy import parse_policy
    from conformance.errors import PolicyError

    policy = parse_policy({"precision": "bfloat16", "rule": [{"modules": "*norm*", "precision": "float32"},
                                                             {"modules": "dec.conv*", "precision": "f16-weights"}]})  # fmt: skip
    assert policy.precision == "bfloat16" and policy.precisions_named() == ["bfloat16", "f16-weights"]
    assert policy.precision_for("layers.0.input_layernorm", "outputs/0", "float32", "isolated") is None
    assert policy.precision_for("dec.conv1", "outputs/0", "float32", "chained") == "f16-weights"
    assert policy.precision_for("layers.0.mlp", "outputs/0", "float32", "chained") == "bfloat16"
    assert policy.at_precision("float16").precision == "float16" and policy.at_precision("float32").precision is None
    assert policy.describe()["precision"] == "bfloat16"
    # without a noise record at the precision, the defaults of its dtype
    resolved = policy.resolve("layers.0.mlp", "outputs/0", "float32", "isolated", None, "bfloat16")
    assert resolved.thresholds == policy.defaults["bfloat16"] and resolved.source == "default bfloat16"
    with pytest.raises(PolicyError, match="precision must be one of"):
        parse_policy({"precision": "int3"})
    with pytest.raises(PolicyError, match=r"rule 1\.precision must be one of"):
        parse_policy({"rule": [{"modules": "*", "precision": "fp8"}]})
