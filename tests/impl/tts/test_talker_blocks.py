"""Property tests: the talker's and code predictor's blocks against freshly built official modules (every
parameter randomised, weights copied by name) over random shapes, positions, caches and padding, both
sides in clean float64."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from impl.common import attention, layers, rope
from impl.qwen3_tts import code_predictor as cp
from impl.qwen3_tts import decoder, talker
from impl.qwen3_tts.code_predictor import CodePredictorConfig
from impl.qwen3_tts.talker import TalkerConfig

from .helpers import assert_close, randomized, require_official, run_official, tensor, to_numpy, transfer

pytestmark = pytest.mark.official


@pytest.fixture(scope="module")
def off():
    return require_official()


seeds = st.integers(0, 2**31 - 1)


@st.composite
def attention_shapes(draw: st.DrawFn) -> dict:
    kv_heads = draw(st.integers(1, 3))
    heads = kv_heads * draw(st.integers(1, 3))
    half = draw(st.integers(2, 8))
    # MRoPE sections summing to head_dim / 2
    first = draw(st.integers(0, half))
    second = draw(st.integers(0, half - first))
    return {
        "heads": heads,
        "kv_heads": kv_heads,
        "head_dim": 2 * half,
        "hidden": draw(st.integers(4, 24)),
        "sections": [first, second, half - first - second],
        "interleaved": draw(st.booleans()),
        "batch": draw(st.integers(1, 2)),
        "length": draw(st.integers(1, 6)),
        "past": draw(st.integers(0, 5)),
        "pads": draw(st.lists(st.integers(0, 3), min_size=2, max_size=2)),
        "theta": draw(st.sampled_from([1e4, 1e6])),
    }


def _official_talker_config(off, s: dict, layers_: int = 1):
    config = off.tts_config.Qwen3TTSTalkerConfig(
        hidden_size=s["hidden"], intermediate_size=2 * s["hidden"], num_hidden_layers=layers_,
        num_attention_heads=s["heads"], num_key_value_heads=s["kv_heads"], head_dim=s["head_dim"],
        rope_theta=s["theta"], rms_norm_eps=1e-6, vocab_size=64, text_vocab_size=32, text_hidden_size=8,
        rope_scaling={"rope_type": "default", "mrope_section": s["sections"], "interleaved": s["interleaved"]},
        num_code_groups=4,
        code_predictor_config={"hidden_size": s["hidden"], "intermediate_size": 2 * s["hidden"],
                               "num_hidden_layers": layers_, "num_attention_heads": s["heads"],
                               "num_key_value_heads": s["kv_heads"], "head_dim": s["head_dim"], "vocab_size": 64,
                               "num_code_groups": 4, "rope_theta": s["theta"]},
    )  # fmt: skip
    config._attn_implementation = "eager"
    config.code_predictor_config._attn_implementation = "eager"
    return config


def _positions(rng: np.random.Generator, s: dict, distinct_rows: bool) -> np.ndarray:
    """(3, batch, length) positions continuing after the past, rows equal (text) or not."""
    base = s["past"] + np.arange(s["length"])[None].repeat(s["batch"], 0) + rng.integers(0, 50, (s["batch"], 1))
    rows = [base + (rng.integers(0, 40, base.shape) if distinct_rows and i else 0) for i in range(3)]
    return np.stack(rows).astype(np.float64)


def _mask_inputs(rng: np.random.Generator, s: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A left-padded 2-D mask over past + new positions, cache positions, and the 4-D additive mask."""
    total = s["past"] + s["length"]
    mask2d = np.ones((s["batch"], total), dtype=np.int64)
    for b in range(s["batch"]):
        mask2d[b, : min(s["pads"][b], total - 1)] = 0
    cache_position = np.arange(s["past"], total)
    return mask2d, cache_position, attention.causal_mask(s["batch"], cache_position, total, mask2d, dtype=np.float64)


# -- norms, MLPs --------------------------------------------------------------------------------------------------


@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=3), hidden=st.integers(1, 40), seed=seeds,
       scale=st.sampled_from([1e-3, 1.0, 1e3]))  # fmt: skip
def test_rms_norm(off, shape, hidden, seed, scale):
    official = randomized(off.tts_modeling.Qwen3TTSRMSNorm(hidden, eps=1e-6), seed)
    impl = transfer(official, layers.RMSNorm(hidden, eps=1e-6))
    x = np.random.default_rng(seed).standard_normal((*shape, hidden)) * scale
    assert_close(run_official(official, tensor(x)), impl(x))


@given(hidden=st.integers(1, 24), intermediate=st.integers(1, 48), length=st.integers(1, 5), seed=seeds)
def test_text_mlp(off, hidden, intermediate, length, seed):
    config = SimpleNamespace(hidden_size=hidden, intermediate_size=intermediate, hidden_act="silu")
    official = randomized(off.tts_modeling.Qwen3TTSTalkerTextMLP(config), seed)
    impl = transfer(official, layers.GatedMLP(hidden, intermediate, "silu"))
    x = np.random.default_rng(seed).standard_normal((2, length, hidden)) * 3
    assert_close(run_official(official, tensor(x)), impl(x))


@given(text_hidden=st.integers(1, 16), hidden=st.integers(1, 24), length=st.integers(1, 5), seed=seeds)
def test_text_projection(off, text_hidden, hidden, length, seed):
    official = randomized(
        off.tts_modeling.Qwen3TTSTalkerResizeMLP(text_hidden, text_hidden, hidden, "silu", bias=True), seed
    )
    impl = transfer(official, talker.TalkerResizeMLP(text_hidden, text_hidden, hidden, "silu", bias=True))
    x = np.random.default_rng(seed).standard_normal((1, length, text_hidden))
    assert_close(run_official(official, tensor(x)), impl(x))


# -- rotary embeddings ---------------------------------------------------------------------------------------------


@given(s=attention_shapes(), distinct=st.booleans(), seed=seeds)
def test_talker_rotary_embedding(off, s, distinct, seed):
    config = _official_talker_config(off, s)
    official = off.tts_modeling.Qwen3TTSTalkerRotaryEmbedding(config)
    impl = rope.RotaryEmbedding(s["head_dim"], s["theta"])
    positions = _positions(np.random.default_rng(seed), s, distinct)
    x = np.zeros((s["batch"], s["length"], s["hidden"]))
    expected = run_official(official, tensor(x), tensor(positions))
    got = impl(x, positions)
    for e, g in zip(expected, got):
        assert_close(e, g)


@given(s=attention_shapes(), seed=seeds)
def test_multimodal_rope_matches_official(off, s, seed):
    """Interleaved and block MRoPE with three different position rows (the general case)."""
    rng = np.random.default_rng(seed)
    cos, sin = rope.RotaryEmbedding(s["head_dim"], s["theta"])(np.zeros((1, 1, 1)), _positions(rng, s, True))
    q = rng.standard_normal((s["batch"], s["heads"], s["length"], s["head_dim"]))
    k = rng.standard_normal((s["batch"], s["kv_heads"], s["length"], s["head_dim"]))
    expected = off.tts_modeling.apply_multimodal_rotary_pos_emb(tensor(q), tensor(k), tensor(cos), tensor(sin),
                                                                s["sections"], s["interleaved"])  # fmt: skip
    got = rope.apply_multimodal_rotary_pos_emb(q, k, cos, sin, s["sections"], s["interleaved"])
    for e, g in zip(expected, got):
        assert_close(e, g)


@given(s=attention_shapes(), seed=seeds)
def test_interleaved_mrope_with_equal_rows_is_plain_rope(s, seed):
    """With the three position rows equal (text), MRoPE reduces to 1-D RoPE, whatever the sections."""
    rng = np.random.default_rng(seed)
    positions = _positions(rng, s, False)
    x = np.zeros((1, 1, 1))
    cos3, sin3 = rope.RotaryEmbedding(s["head_dim"], s["theta"])(x, positions)
    cos1, sin1 = rope.RotaryEmbedding(s["head_dim"], s["theta"])(x, positions[0])
    q = rng.standard_normal((s["batch"], s["heads"], s["length"], s["head_dim"]))
    k = rng.standard_normal((s["batch"], s["kv_heads"], s["length"], s["head_dim"]))
    multimodal = rope.apply_multimodal_rotary_pos_emb(q, k, cos3, sin3, s["sections"], s["interleaved"])
    plain = rope.apply_rotary_pos_emb(q, k, cos1, sin1)
    for m, p in zip(multimodal, plain):
        np.testing.assert_array_equal(m, p)


@given(s=attention_shapes(), seed=seeds)
def test_code_predictor_rotary_embedding(off, s, seed):
    config = _official_talker_config(off, s).code_predictor_config
    official = off.tts_modeling.Qwen3TTSRotaryEmbedding(config)
    impl = rope.RotaryEmbedding(s["head_dim"], s["theta"])
    positions = _positions(np.random.default_rng(seed), s, False)[0].astype(np.int64)
    x = np.zeros((s["batch"], s["length"], s["hidden"]))
    for e, g in zip(run_official(official, tensor(x), tensor(positions)), impl(x, positions)):
        assert_close(e, g)


# -- masks, attention, decoder layers --------------------------------------------------------------------------------


@given(s=attention_shapes(), seed=seeds)
def test_causal_mask_matches_transformers(off, s, seed):
    import torch
    from transformers.cache_utils import DynamicCache
    from transformers.masking_utils import create_causal_mask

    config = _official_talker_config(off, s)
    mask2d, cache_position, mine = _mask_inputs(np.random.default_rng(seed), s)
    cache = DynamicCache()
    if s["past"]:
        past = torch.zeros(s["batch"], s["kv_heads"], s["past"], s["head_dim"], dtype=torch.float64)
        cache.update(past, past, 0)
    expected = create_causal_mask(config=config, input_embeds=torch.zeros(s["batch"], s["length"], s["hidden"], dtype=torch.float64),
                                  attention_mask=tensor(mask2d), cache_position=tensor(cache_position),
                                  past_key_values=cache, position_ids=None)  # fmt: skip
    np.testing.assert_array_equal(to_numpy(expected), mine)


def _official_cache(layer_keys: list[tuple[np.ndarray, np.ndarray]]):
    from transformers.cache_utils import DynamicCache

    cache = DynamicCache()
    for i, (k, v) in enumerate(layer_keys):
        cache.update(tensor(k), tensor(v), i)
    return cache


def _impl_cache(layer_keys: list[tuple[np.ndarray, np.ndarray]]) -> dict:
    cache = attention.new_cache()
    for i, (k, v) in enumerate(layer_keys):
        attention.cache_update(cache, i, k.copy(), v.copy())
    return cache


def _attention_case(off, s: dict, seed: int, multimodal: bool):
    rng = np.random.default_rng(seed)
    config = _official_talker_config(off, s)
    hidden = rng.standard_normal((s["batch"], s["length"], s["hidden"]))
    _, cache_position, mask = _mask_inputs(rng, s)
    past = []
    if s["past"]:
        shape = (s["batch"], s["kv_heads"], s["past"], s["head_dim"])
        past = [(rng.standard_normal(shape), rng.standard_normal(shape))]
    if multimodal:
        cos_sin = rope.RotaryEmbedding(s["head_dim"], s["theta"])(hidden, _positions(rng, s, False))
    else:
        cos_sin = rope.RotaryEmbedding(s["head_dim"], s["theta"])(hidden, _positions(rng, s, False)[0])
    return config, hidden, mask, cache_position, past, cos_sin


@given(s=attention_shapes(), seed=seeds)
def test_talker_attention_with_cache_and_padding(off, s, seed):
    config, hidden, mask, cache_position, past, (cos, sin) = _attention_case(off, s, seed, multimodal=True)
    official = randomized(off.tts_modeling.Qwen3TTSTalkerAttention(config, 0), seed)
    impl = transfer(official, decoder.Qwen3TTSAttention(TalkerConfig.from_dict(config.to_dict()), 0))
    official_cache, impl_cache = _official_cache(past), _impl_cache(past)
    expected = run_official(official, tensor(hidden), (tensor(cos), tensor(sin)), tensor(mask),
                            past_key_values=official_cache, cache_position=tensor(cache_position))  # fmt: skip
    got = impl(hidden, (cos, sin), mask, past_key_values=impl_cache, cache_position=cache_position)
    assert_close(expected[0], got[0])
    assert_close(expected[1], got[1])
    assert_close(official_cache.layers[0].keys, impl_cache["layers"][0]["keys"])
    assert_close(official_cache.layers[0].values, impl_cache["layers"][0]["values"])


@given(s=attention_shapes(), seed=seeds)
def test_code_predictor_attention_with_cache_and_padding(off, s, seed):
    config, hidden, mask, cache_position, past, (cos, sin) = _attention_case(off, s, seed, multimodal=False)
    cp_config = config.code_predictor_config
    official = randomized(off.tts_modeling.Qwen3TTSAttention(cp_config, 0), seed)
    impl = transfer(official, decoder.Qwen3TTSAttention(CodePredictorConfig.from_dict(cp_config.to_dict()), 0))
    official_cache, impl_cache = _official_cache(past), _impl_cache(past)
    expected = run_official(official, tensor(hidden), (tensor(cos), tensor(sin)), tensor(mask),
                            past_key_values=official_cache, cache_position=tensor(cache_position))  # fmt: skip
    got = impl(hidden, (cos, sin), mask, past_key_values=impl_cache, cache_position=cache_position)
    assert_close(expected[0], got[0])
    assert_close(expected[1], got[1])
    assert_close(official_cache.layers[0].keys, impl_cache["layers"][0]["keys"])


@given(s=attention_shapes(), seed=seeds, predictor=st.booleans())
def test_decoder_layers(off, s, seed, predictor):
    config, hidden, mask, cache_position, past, (cos, sin) = _attention_case(off, s, seed, multimodal=not predictor)
    if predictor:
        official = randomized(off.tts_modeling.Qwen3TTSDecoderLayer(config.code_predictor_config, 0), seed)
        impl = transfer(official, decoder.Qwen3TTSDecoderLayer(
            CodePredictorConfig.from_dict(config.code_predictor_config.to_dict()), 0))  # fmt: skip
    else:
        official = randomized(off.tts_modeling.Qwen3TTSTalkerDecoderLayer(config, 0), seed)
        impl = transfer(official, decoder.Qwen3TTSDecoderLayer(TalkerConfig.from_dict(config.to_dict()), 0))
    official_cache, impl_cache = _official_cache(past), _impl_cache(past)
    expected = run_official(official, tensor(hidden), attention_mask=tensor(mask), past_key_values=official_cache,
                            use_cache=True, cache_position=tensor(cache_position),
                            position_embeddings=(tensor(cos), tensor(sin)))  # fmt: skip
    got = impl(hidden, attention_mask=mask, past_key_values=impl_cache, use_cache=True, cache_position=cache_position,
               position_embeddings=(cos, sin))  # fmt: skip
    assert len(got) == len(expected) == 1
    assert_close(expected[0], got[0])


# -- logits processors ---------------------------------------------------------------------------------------------------


@st.composite
def scores_and_ids(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, int]:
    batch, vocab, steps = draw(st.integers(1, 3)), draw(st.integers(2, 40)), draw(st.integers(0, 6))
    seed = draw(seeds)
    rng = np.random.default_rng(seed)
    scores = (rng.standard_normal((batch, vocab)) * 4).astype(np.float32)
    ids = rng.integers(0, vocab, (batch, steps))
    return scores, ids, seed


@given(data=scores_and_ids(), penalty=st.floats(0.5, 2.0), minimum=st.integers(0, 4), top_k=st.integers(1, 50),
       top_p=st.floats(0.05, 0.99), temperature=st.floats(0.2, 2.0))  # fmt: skip
def test_logits_processors_match_transformers(off, data, penalty, minimum, top_k, top_p, temperature):
    from transformers.generation import logits_process as lp

    from impl.common import generation as g

    scores, ids, seed = data
    vocab = scores.shape[1]
    eos = int(np.random.default_rng(seed).integers(0, vocab))
    suppress = sorted({int(x) for x in np.random.default_rng(seed + 1).integers(0, vocab, 3)} - {eos})
    ids_t, s_t = tensor(ids), tensor(scores)
    checks = [
        (lp.RepetitionPenaltyLogitsProcessor(penalty)(ids_t, s_t.clone()), g.apply_repetition_penalty(ids, scores, penalty)),
        (lp.MinNewTokensLengthLogitsProcessor(0, minimum, eos)(ids_t, s_t.clone()),
         g.apply_min_new_tokens(ids, scores, 0, minimum, [eos])),
        (lp.SuppressTokensLogitsProcessor(suppress)(ids_t, s_t.clone()), g.apply_suppress_tokens(scores, suppress)),
        (lp.TemperatureLogitsWarper(temperature)(ids_t, s_t.clone()), g.apply_temperature(scores, temperature)),
        (lp.TopKLogitsWarper(top_k)(ids_t, s_t.clone()), g.apply_top_k(scores, top_k)),
        (lp.TopPLogitsWarper(top_p)(ids_t, s_t.clone()), g.apply_top_p(scores, top_p)),
    ]  # fmt: skip
    for expected, got in checks:
        assert got.dtype == np.float32
        np.testing.assert_array_equal(to_numpy(expected), got)


@given(s=attention_shapes(), seed=seeds, same_width=st.booleans(), steps=st.integers(1, 3))
def test_code_predictor_head_with_and_without_the_projection(off, s, seed, same_width, steps):
    """The whole code predictor (prefill on [talker hidden, code-0 embedding], then one step per further
    codebook): with the talker as wide as the predictor, `small_to_mtp_projection` is an Identity (the
    published 0.6B layout, which the tiny checkpoints, with a narrower predictor, never take)."""
    config = _official_talker_config(off, s)
    if not same_width:
        config.hidden_size = s["hidden"] + 4
    official = randomized(off.tts_modeling.Qwen3TTSTalkerCodePredictorModelForConditionalGeneration(
        config.code_predictor_config, config), seed)  # fmt: skip
    impl = transfer(official, cp.CodePredictorForConditionalGeneration(
        CodePredictorConfig.from_dict(config.code_predictor_config.to_dict()), TalkerConfig.from_dict(config.to_dict())))  # fmt: skip
    assert isinstance(impl.small_to_mtp_projection, layers.Identity) == same_width
    rng = np.random.default_rng(seed)
    prefill = rng.standard_normal((1, 2, config.hidden_size))
    codes = rng.integers(0, 64, (1, steps))
    official_cache, impl_cache = _official_cache([]), _impl_cache([])
    expected = [run_official(official, inputs_embeds=tensor(prefill), past_key_values=official_cache, use_cache=True)]
    got = [impl(inputs_embeds=prefill, past_key_values=impl_cache, use_cache=True)]
    for step in range(1, steps):
        position = np.array([1 + step])
        expected.append(run_official(official, input_ids=tensor(codes[:, step : step + 1]), generation_steps=step,
                                     past_key_values=official_cache, use_cache=True,
                                     cache_position=tensor(position)))  # fmt: skip
        got.append(impl(input_ids=codes[:, step : step + 1], generation_steps=step, past_key_values=impl_cache,
                        use_cache=True, cache_position=position))  # fmt: skip
    for e, g in zip(expected, got):
        assert_close(e.logits, g["logits"])
        assert e.generation_steps == g["generation_steps"]
