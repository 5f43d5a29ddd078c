"""Impl (NumPy) vs official (torch) talker on the same full-size weights: one prefill and one generation frame.

A generation frame is one talker forward after the prefill: the code predictor's 15-step generate for the
remaining codebooks, the frame embedding, and one talker decoder step. Both sides run float32 with the
same number of threads, $CONFORMANCE_BENCH_THREADS (default 1, like the recorder): torch through
set_num_threads, NumPy's BLAS through threadpoolctl. On a shared machine, several BLAS threads per side
make both sides several times slower and the timings meaningless. Compare the groups with
pytest-benchmark's tables.

    pytest benchmarks/test_talker.py                   # builds/uses the seeded 0.6B checkpoint (~2 GB, minutes)
    CONFORMANCE_BENCH_SIZE=tiny pytest benchmarks/test_talker.py   # the tiny config, for a quick smoke run

Checkpoints are cached under $CONFORMANCE_CACHE (default ~/.cache/conformance). Skips cleanly without
torch or the official qwen-tts package.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

SIZE = os.environ.get("CONFORMANCE_BENCH_SIZE", "full")
THREADS = int(os.environ.get("CONFORMANCE_BENCH_THREADS", "1"))
PROMPT = 50  # prefill positions, about a short sentence with its tags


@pytest.fixture(scope="module", autouse=True)
def same_threads() -> Any:
    """Both sides on THREADS threads."""
    previous = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl ships with the recording stack
        limits = None
    else:
        limits = threadpool_limits(limits=THREADS, user_api="blas")
    yield
    if limits is not None:
        limits.restore_original_limits()
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def models() -> tuple[Any, Any]:
    try:
        from conformance.subjects.qwen3_tts import checkpoints
        from conformance.subjects.qwen3_tts.record import DEFAULT_SEED, ensure_checkpoints

        checkpoints.official()
    except ImportError as exc:
        pytest.skip(f"official stack not importable: {exc}")
    from impl.qwen3_tts.tts import load_model

    folder = ensure_checkpoints(SIZE, DEFAULT_SEED, models=("custom_voice",)).tts_dirs["custom_voice"]
    official = checkpoints.load_tts(folder, torch.float32).model
    return official, load_model(folder, np.float32)


def _inputs(hidden: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "inputs_embeds": rng.standard_normal((1, PROMPT, hidden)).astype(np.float32),
        "attention_mask": np.ones((1, PROMPT), dtype=np.int64),
        "trailing_text_hidden": rng.standard_normal((1, 1, hidden)).astype(np.float32),
        "tts_pad_embed": rng.standard_normal((1, 1, hidden)).astype(np.float32),
    }


def _official_prefill(model: Any, inputs: dict[str, np.ndarray]) -> Any:
    from transformers.cache_utils import DynamicCache

    t = {k: torch.from_numpy(v) for k, v in inputs.items()}
    with torch.no_grad():
        return model.talker(**t, cache_position=torch.arange(PROMPT), past_key_values=DynamicCache(config=model.talker.config),
                            use_cache=True, output_hidden_states=True, return_dict=True)  # fmt: skip


def _impl_prefill(model: Any, inputs: dict[str, np.ndarray]) -> Any:
    from impl.common.attention import new_cache

    return model.talker(**inputs, cache_position=np.arange(PROMPT), past_key_values=new_cache(model.talker.config.num_hidden_layers),
                        use_cache=True, output_hidden_states=True)  # fmt: skip


def _official_frame(model: Any, inputs: dict[str, np.ndarray], prefill: Any) -> Any:
    with torch.no_grad():
        return model.talker(
            input_ids=torch.tensor([[100]]), attention_mask=torch.ones(1, PROMPT + 1, dtype=torch.long),
            cache_position=torch.tensor([PROMPT]), past_key_values=prefill.past_key_values,
            past_hidden=prefill.past_hidden, generation_step=0,
            trailing_text_hidden=torch.from_numpy(inputs["trailing_text_hidden"]),
            tts_pad_embed=torch.from_numpy(inputs["tts_pad_embed"]), subtalker_dosample=False, subtalker_top_k=50,
            subtalker_top_p=1.0, subtalker_temperature=0.9, use_cache=True, output_hidden_states=True, return_dict=True,
        )  # fmt: skip


def _impl_frame(model: Any, inputs: dict[str, np.ndarray], prefill: Any) -> Any:
    return model.talker(
        input_ids=np.array([[100]]), attention_mask=np.ones((1, PROMPT + 1), dtype=np.int64),
        cache_position=np.array([PROMPT]), past_key_values=prefill["past_key_values"], past_hidden=prefill["past_hidden"],
        generation_step=0, trailing_text_hidden=inputs["trailing_text_hidden"], tts_pad_embed=inputs["tts_pad_embed"],
        subtalker_dosample=False, subtalker_top_k=50, subtalker_top_p=1.0, subtalker_temperature=0.9, use_cache=True,
        output_hidden_states=True,
    )  # fmt: skip


def _threads(benchmark: Any, side: str) -> None:
    benchmark.extra_info["side"] = side
    benchmark.extra_info["size"] = SIZE
    benchmark.extra_info["torch_threads"] = torch.get_num_threads()
    benchmark.extra_info["blas_threads"] = THREADS
    benchmark.extra_info["cpu_count"] = os.cpu_count()


def _rel(reference: Any, candidate: np.ndarray) -> float:
    reference = (
        reference.detach().double().numpy() if hasattr(reference, "detach") else np.asarray(reference, np.float64)
    )
    return float(np.linalg.norm(candidate - reference) / np.linalg.norm(reference))


@pytest.mark.benchmark(group="talker-prefill")
def test_prefill_impl(benchmark: Any, models: tuple[Any, Any]) -> None:
    official, impl = models
    inputs = _inputs(impl.talker.config.hidden_size)
    _threads(benchmark, "impl")
    out = benchmark.pedantic(lambda: _impl_prefill(impl, inputs), rounds=5, iterations=1, warmup_rounds=1)
    assert _rel(_official_prefill(official, inputs).logits, out["logits"]) < 1e-4  # same function, float32 rounding


@pytest.mark.benchmark(group="talker-prefill")
def test_prefill_official(benchmark: Any, models: tuple[Any, Any]) -> None:
    official, impl = models
    inputs = _inputs(impl.talker.config.hidden_size)
    _threads(benchmark, "official")
    benchmark.pedantic(lambda: _official_prefill(official, inputs), rounds=5, iterations=1, warmup_rounds=1)


@pytest.mark.benchmark(group="talker-frame")
def test_frame_impl(benchmark: Any, models: tuple[Any, Any]) -> None:
    official, impl = models
    inputs = _inputs(impl.talker.config.hidden_size)
    _threads(benchmark, "impl")
    out = benchmark.pedantic(_impl_frame, setup=lambda: ((impl, inputs, _impl_prefill(impl, inputs)), {}), rounds=3,
                             iterations=1)  # fmt: skip
    expected = _official_frame(official, inputs, _official_prefill(official, inputs))
    np.testing.assert_array_equal(out["hidden_states"][1], expected.hidden_states[1].numpy())  # same codes
    assert _rel(expected.logits, out["logits"]) < 1e-4


@pytest.mark.benchmark(group="talker-frame")
def test_frame_official(benchmark: Any, models: tuple[Any, Any]) -> None:
    official, impl = models
    inputs = _inputs(impl.talker.config.hidden_size)
    _threads(benchmark, "official")
    benchmark.pedantic(_official_frame, setup=lambda: ((official, inputs, _official_prefill(official, inputs)), {}),
                       rounds=3, iterations=1)  # fmt: skip
