"""Metamorphic and differential tests of the talker, the code predictor and generation (float64, on the
committed tiny checkpoint):

- KV-cache incremental decoding equals a full recompute (talker and code predictor models, and a whole
  generation replayed in one forward with the positions `get_rope_index` gives);
- a left-padded batch of two equals each item alone, and equals the official batch generate, including
  rows that stop at EOS at different steps (min_new_tokens, pad-with-EOS, the EOS cut);
- prompt-mode invariants: streaming and non-streaming prompts hold the same text embeddings in different
  places, ICL layouts likewise; dialect override; speaker and x-vector rows;
- sampling with an explicit seeded generator.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from impl.common.attention import new_cache
from impl.qwen3_tts import nn, text
from impl.qwen3_tts.tts import load_model

from .helpers import TINY, assert_close, tiny_model

TEXT_A, TEXT_B = "Hello, world.", "A somewhat longer second sentence, to force padding."


@functools.lru_cache(maxsize=1)
def tokenizer() -> text.QwenTokenizer:
    return text.QwenTokenizer(TINY / "custom_voice")


def ids(s: str) -> np.ndarray:
    return tokenizer()(text.build_assistant_text(s))


GREEDY = {"do_sample": False, "subtalker_dosample": False, "repetition_penalty": 1.05}


class Recorder:
    """Collects (args, kwargs, outputs) of every call of the given keys while tapping."""

    def __init__(self, *keys: str) -> None:
        self.keys = set(keys)
        self.calls: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self._open: dict[str, list[dict[str, Any]]] = defaultdict(list)

    def __call__(self, key: str, phase: str, args: tuple, kwargs: dict, outputs: Any) -> None:
        if key not in self.keys:
            return
        if phase == "call":
            record = {"args": args, "kwargs": dict(kwargs)}
            self.calls[key].append(record)
            self._open[key].append(record)
        else:
            self._open[key].pop()["outputs"] = outputs


# -- KV cache -------------------------------------------------------------------------------------------------------


@given(prefix=st.integers(1, 6), steps=st.integers(1, 5), seed=st.integers(0, 2**31 - 1), predictor=st.booleans())
def test_incremental_decoding_equals_full_recompute(prefix, steps, seed, predictor):
    model = tiny_model("custom_voice")
    decoder = model.talker.code_predictor.model if predictor else model.talker.model
    width = 24 if predictor else 32
    x = np.random.default_rng(seed).standard_normal((1, prefix + steps, width))
    full = decoder(inputs_embeds=x, attention_mask=np.ones((1, prefix + steps), np.int64))["last_hidden_state"]
    cache = new_cache()
    pieces = [
        decoder(inputs_embeds=x[:, :prefix], past_key_values=cache, attention_mask=np.ones((1, prefix), np.int64))
    ]
    for i in range(prefix, prefix + steps):
        pieces.append(decoder(inputs_embeds=x[:, i : i + 1], past_key_values=cache, cache_position=np.array([i]),
                              attention_mask=np.ones((1, i + 1), np.int64)))  # fmt: skip
    incremental = np.concatenate([p["last_hidden_state"] for p in pieces], axis=1)
    assert_close(full, incremental)
    assert cache["layers"][0]["keys"].shape[2] == prefix + steps


def _generate(model: Any, texts: list[str], speakers: list[str], languages: list[str], tap: Any = None, **kwargs: Any):
    call = lambda: model.generate(input_ids=[ids(t) for t in texts], speakers=speakers, languages=languages,  # noqa: E731
                                  **{**GREEDY, "max_new_tokens": 5, **kwargs})  # fmt: skip
    if tap is None:
        return call()
    with nn.tapping(tap):
        return call()


@pytest.mark.parametrize("non_streaming", [True, False])
def test_generation_equals_one_full_forward(non_streaming):
    """Every step's talker output equals one forward over prompt + all step inputs at the positions
    get_rope_index gives the full mask: the cache, cache_position and rope_deltas bookkeeping is right,
    left padding included."""
    model = tiny_model("custom_voice")
    recorder = Recorder("talker.model")
    _generate(model, [TEXT_A, TEXT_B], ["Ryan", "Vivian"], ["English", "English"], recorder,
              non_streaming_mode=non_streaming)  # fmt: skip
    calls = recorder.calls["talker.model"]
    embeds = np.concatenate([c["kwargs"]["inputs_embeds"] for c in calls], axis=1)
    mask = calls[-1]["kwargs"]["attention_mask"]
    positions, _ = model.talker.get_rope_index(mask)
    full = model.talker.model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions)["last_hidden_state"]
    stepwise = np.concatenate([c["outputs"]["last_hidden_state"] for c in calls], axis=1)
    real = mask.astype(bool)  # padded rows attend to nothing real; compare real positions
    assert_close(full[real], stepwise[real])


# -- batches -------------------------------------------------------------------------------------------------------------


def test_batch_of_two_equals_each_alone():
    model = tiny_model("custom_voice")
    both = _generate(model, [TEXT_A, TEXT_B], ["Ryan", "Dylan"], ["English", "Chinese"])
    alone_a = _generate(model, [TEXT_A], ["Ryan"], ["English"])
    alone_b = _generate(model, [TEXT_B], ["Dylan"], ["Chinese"])
    for i, alone in enumerate((alone_a, alone_b)):
        np.testing.assert_array_equal(both[0][i], alone[0][0])
        assert_close(alone[1][0], both[1][i])


def _eos_after(codec_head: Any, row: int, eos: int, official: bool) -> Any:
    """From the second codec-head call on, make EOS the best logit of `row` (min_new_tokens keeps it out
    of the first two tokens), so that row stops early and is padded with EOS. Returns the torch hook handle."""
    count = [0]

    def boost(out: Any) -> Any:
        count[0] += 1
        if count[0] >= 2:
            out = out.clone() if official else out.copy()
            out[row, :, eos] += 1e4
        return out

    if official:
        return codec_head.register_forward_hook(lambda module, args, output: boost(output))
    original = codec_head.forward
    codec_head.forward = lambda x, **kwargs: boost(original(x))
    return None


@pytest.fixture(scope="module")
def official_custom_voice() -> Any:
    pytest.importorskip("torch")
    import torch

    from conformance.subjects.qwen3_tts.checkpoints import load_tts

    return load_tts(TINY / "custom_voice", torch.float64)


@pytest.mark.official
@pytest.mark.parametrize("non_streaming", [True, False])
def test_batch_generate_matches_official_with_early_eos(official_custom_voice, non_streaming):
    """Batch of two with left padding, row 0 stopping at EOS: codes and hidden states equal the official."""
    import torch

    from conformance.subjects.qwen3_tts.precision import clean_precision

    official_custom_voice = official_custom_voice.model
    impl = load_model(TINY / "custom_voice", np.float64)
    eos = impl.config.talker_config.codec_eos_token_id
    handle = _eos_after(official_custom_voice.talker.codec_head, 0, eos, official=True)
    _eos_after(impl.talker.codec_head, 0, eos, official=False)
    texts, speakers, languages = [TEXT_A, TEXT_B], ["Ryan", "Vivian"], ["English", "Auto"]
    kwargs = {**GREEDY, "max_new_tokens": 6, "non_streaming_mode": non_streaming}
    try:
        with torch.no_grad(), clean_precision(torch.float64):
            expected = official_custom_voice.generate(
                input_ids=[torch.from_numpy(ids(t)) for t in texts], speakers=speakers, languages=languages, **kwargs
            )
    finally:
        handle.remove()
    got = impl.generate(input_ids=[ids(t) for t in texts], speakers=speakers, languages=languages, **kwargs)
    assert [len(c) for c in got[0]] == [2, 5]  # row 0: two tokens before EOS; row 1: max_new_tokens - 1
    for i in range(2):
        np.testing.assert_array_equal(expected[0][i].numpy(), got[0][i])
        assert_close(expected[1][i], got[1][i])


@pytest.mark.official
def test_a_long_generation_with_a_strong_repetition_penalty_matches_official(official_custom_voice):
    """Sixteen frames, where the repetition penalty changes which codes win (the committed goldens' three
    frames never let it decide): the impl's codes and hidden states equal the official's, frame by frame."""
    import torch

    from conformance.subjects.qwen3_tts.precision import clean_precision

    official = official_custom_voice.model
    impl = load_model(TINY / "custom_voice", np.float64)
    request = {"speakers": ["Ryan"], "languages": ["English"], "do_sample": False, "subtalker_dosample": False,
               "max_new_tokens": 17, "non_streaming_mode": True}  # fmt: skip

    def official_codes(penalty: float) -> tuple[Any, Any]:
        with torch.no_grad(), clean_precision(torch.float64):
            return official.generate(input_ids=[torch.from_numpy(ids(TEXT_B))], repetition_penalty=penalty, **request)

    expected = official_codes(3.0)
    got = impl.generate(input_ids=[ids(TEXT_B)], repetition_penalty=3.0, **request)
    assert got[0][0].shape == (16, 4)
    np.testing.assert_array_equal(expected[0][0].numpy(), got[0][0])
    assert_close(expected[1][0], got[1][0])
    unpenalised = official_codes(1.0)[0][0].numpy()
    assert not np.array_equal(unpenalised[:, 0], got[0][0][:, 0]), "the penalty must decide some codebook-0 token"


@pytest.mark.official
def test_batch_api_matches_official(official_custom_voice):
    """The wrapper API on a batch of two texts (left-padded prompts, one padded codec decode) gives the
    official waveforms."""
    import torch

    from conformance.subjects.qwen3_tts.precision import clean_precision
    from impl.qwen3_tts import pipeline
    from impl.qwen3_tts.tts import load_tts

    request = {"text": [TEXT_A, TEXT_B], "speaker": ["Ryan", "Dylan"], "language": ["English", "Chinese"],
               "max_new_tokens": 4, "do_sample": False, "subtalker_dosample": False}  # fmt: skip
    with torch.no_grad(), clean_precision(torch.float64):
        expected, rate = official_custom_voice.generate_custom_voice(**request)
    got, got_rate = pipeline.Qwen3TTSModel(load_tts(TINY / "custom_voice", np.float64)).generate_custom_voice(**request)
    assert got_rate == rate and len(got) == 2
    for e, g in zip(expected, got):
        assert g.dtype == np.float32 and g.shape == e.shape
        np.testing.assert_allclose(g, e, rtol=0, atol=1e-6 * float(np.abs(e).max()))


# -- prompt layouts ------------------------------------------------------------------------------------------------------


def _talker_inputs(model: Any, **kwargs: Any) -> dict[str, np.ndarray]:
    recorder = Recorder("talker:generate")
    with nn.tapping(recorder):
        model.generate(**{**GREEDY, "max_new_tokens": 2, **kwargs})
    return recorder.calls["talker:generate"][0]["kwargs"]


def _codec(model: Any, token: int) -> np.ndarray:
    return model.talker.model.codec_embedding.weight[token]


def _text(model: Any, tokens: Any) -> np.ndarray:
    return model.talker.text_projection(model.talker.model.text_embedding(np.asarray(tokens)[None]))[0]


def test_streaming_and_non_streaming_hold_the_same_text():
    """Non-streaming rows P.. = text + tts_eos (+ codec_pad), then tts_pad + codec_bos; streaming puts the
    first token against codec_bos and feeds the rest + tts_eos as trailing text."""
    model = tiny_model("custom_voice")
    config = model.config.talker_config
    input_id = ids(TEXT_A)
    common = {"input_ids": [input_id], "speakers": ["Ryan"], "languages": ["English"]}
    streaming = _talker_inputs(model, non_streaming_mode=False, **common)
    non_streaming = _talker_inputs(model, non_streaming_mode=True, **common)
    s_rows, n_rows = streaming["inputs_embeds"][0], non_streaming["inputs_embeds"][0]
    prefix = s_rows.shape[0] - 1
    n_text = input_id.shape[1] - 8  # [3:-5]
    assert n_rows.shape[0] == prefix + n_text + 2
    assert_close(s_rows[:prefix], n_rows[:prefix])
    text_rows = n_rows[prefix : prefix + n_text + 1] - _codec(model, config.codec_pad_id)
    streamed = np.concatenate(
        [s_rows[prefix:] - _codec(model, config.codec_bos_id), streaming["trailing_text_hidden"][0]]
    )
    assert_close(text_rows, streamed)
    tts_pad = _text(model, [model.config.tts_pad_token_id])[0]
    assert_close(n_rows[-1] - _codec(model, config.codec_bos_id), tts_pad)
    assert_close(non_streaming["trailing_text_hidden"][0, 0], tts_pad)
    assert_close(_text(model, input_id[0, 3:-5]), text_rows[:-1])


@pytest.mark.parametrize(("language", "speaker", "expected"), [
    ("Chinese", "Dylan", "beijing_dialect"), ("Auto", "Eric", "sichuan_dialect"), ("English", "Dylan", "english"),
    ("Chinese", "Ryan", "chinese"), ("Auto", "Ryan", None),
])  # fmt: skip
def test_language_row_and_dialect_override(language, speaker, expected):
    model = tiny_model("custom_voice")
    config = model.config.talker_config
    rows = _talker_inputs(model, input_ids=[ids(TEXT_A)], speakers=[speaker], languages=[language])["inputs_embeds"][0]
    tts_pad = _text(model, [model.config.tts_pad_token_id])[0]
    tags = rows[3:] - tts_pad  # after the role
    if expected is None:  # auto: nothink, think_bos, think_eos, then the speaker
        tokens = [config.codec_nothink_id, config.codec_think_bos_id, config.codec_think_eos_id]
    else:
        tokens = [config.codec_think_id, config.codec_think_bos_id, config.codec_language_id[expected],
                  config.codec_think_eos_id]  # fmt: skip
    tokens.append(config.spk_id[speaker.lower()])
    assert_close(np.stack([_codec(model, t) for t in tokens]), tags[: len(tokens)])


def test_x_vector_takes_the_speaker_row():
    model = tiny_model("base")
    vector = np.random.default_rng(5).standard_normal(32)
    prompt = {"ref_code": [None], "ref_spk_embedding": [vector], "x_vector_only_mode": [True], "icl_mode": [False]}
    rows = _talker_inputs(model, input_ids=[ids(TEXT_A)], languages=["English"], voice_clone_prompt=prompt,
                          ref_ids=[None])["inputs_embeds"][0]  # fmt: skip
    tts_pad = _text(model, [model.config.tts_pad_token_id])[0]
    assert_close(rows[3 + 4], vector + tts_pad)  # role (3 rows), 4 tags, then the x-vector


@pytest.mark.parametrize("text_len", [2, 30])
def test_icl_layouts_hold_the_same_rows(text_len):
    """ICL non-streaming = [text + codec_pad ; codec + tts_pad]; streaming overlaps them row by row (text
    padded with tts_pad, or cut with its tail as trailing text)."""
    model = tiny_model("base")
    config = model.config.talker_config
    rng = np.random.default_rng(text_len)
    text_id, ref_id = rng.integers(0, 150000, (1, text_len)), rng.integers(0, 150000, (1, 3))
    ref_code = rng.integers(0, 2048, (6, config.num_code_groups))
    special = _text(model, [model.config.tts_eos_token_id, model.config.tts_pad_token_id])
    eos, pad = special[None, 0:1], special[None, 1:2]
    kwargs = {"text_id": text_id, "ref_id": ref_id, "ref_code": ref_code, "tts_pad_embed": pad, "tts_eos_embed": eos}
    rows_n, trailing_n = model.generate_icl_prompt(non_streaming_mode=True, **kwargs)
    rows_s, trailing_s = model.generate_icl_prompt(non_streaming_mode=False, **kwargs)
    n_text = 3 + text_len + 1
    text_rows = rows_n[0, :n_text] - _codec(model, config.codec_pad_id)
    codec_rows = rows_n[0, n_text:] - pad[0, 0]
    assert codec_rows.shape[0] == ref_code.shape[0] + 1  # codec_bos + frames
    assert_close(trailing_n, pad)
    overlap = rows_s[0] - codec_rows
    if n_text <= codec_rows.shape[0]:
        assert_close(overlap, np.concatenate([text_rows, np.repeat(pad[0], codec_rows.shape[0] - n_text, 0)]))
        assert_close(trailing_s, pad)
    else:
        assert_close(overlap, text_rows[: codec_rows.shape[0]])
        assert_close(trailing_s[0], text_rows[codec_rows.shape[0] :])


# -- sampling ------------------------------------------------------------------------------------------------------------


def test_sampling_needs_a_generator_and_is_reproducible():
    model = tiny_model("custom_voice")
    sample = {"do_sample": True, "subtalker_dosample": True, "temperature": 0.9, "top_k": 50, "top_p": 0.9}
    with pytest.raises(ValueError, match="Generator"):
        _generate(model, [TEXT_A], ["Ryan"], ["English"], **sample)
    runs = [_generate(model, [TEXT_A], ["Ryan"], ["English"], generator=np.random.default_rng(seed), **sample)[0][0]
            for seed in (1, 1, 2)]  # fmt: skip
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])


def test_top_k_one_sampling_is_greedy():
    model = tiny_model("custom_voice")
    greedy = _generate(model, [TEXT_A], ["Ryan"], ["English"])[0][0]
    sampled = _generate(model, [TEXT_A], ["Ryan"], ["English"], generator=np.random.default_rng(0), do_sample=True,
                        subtalker_dosample=True, top_k=1, subtalker_top_k=1)[0][0]  # fmt: skip
    np.testing.assert_array_equal(greedy, sampled)
