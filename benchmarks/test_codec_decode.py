"""Impl (NumPy) vs official (torch) codec decode on the same full-size weights: 50 frames (4 s of audio)
through the wrapper API (`Qwen3TTSTokenizer.decode` / `impl.qwen3_tts.codec.decode_codes`).

Both sides run float32 on the same number of threads, $CONFORMANCE_BENCH_THREADS (default 1, like the
recorder): torch through set_num_threads, NumPy's BLAS through threadpoolctl. Compare the two entries of
the "codec-decode" group in pytest-benchmark's table.

    pytest benchmarks/test_codec_decode.py                  # builds/uses the seeded full codec (~350 MB)
    CONFORMANCE_BENCH_SIZE=tiny pytest benchmarks/test_codec_decode.py   # a quick smoke run

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
FRAMES = 50  # 4 s at 12.5 Hz


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
def codecs() -> tuple[Any, Any]:
    try:
        from conformance.subjects.qwen3_tts import checkpoints
        from conformance.subjects.qwen3_tts.record import DEFAULT_SEED, ensure_checkpoints

        checkpoints.official()
    except ImportError as exc:
        pytest.skip(f"official stack not importable: {exc}")
    from impl.qwen3_tts import codec

    folder = ensure_checkpoints(SIZE, DEFAULT_SEED, models=("codec",)).codec_dir
    assert folder is not None
    return checkpoints.load_codec(folder, torch.float32), codec.load_codec(folder, np.float32)


@pytest.fixture(scope="module")
def codes(codecs: tuple[Any, Any]) -> np.ndarray:
    _, impl = codecs
    config = impl.config.decoder_config
    rng = np.random.default_rng(0)
    return rng.integers(0, config.codebook_size, size=(FRAMES, config.num_quantizers))


def _info(benchmark: Any, side: str) -> None:
    benchmark.extra_info.update(side=side, size=SIZE, frames=FRAMES, torch_threads=torch.get_num_threads(),
                                blas_threads=THREADS, cpu_count=os.cpu_count())  # fmt: skip


def _official_decode(official: Any, codes: np.ndarray) -> np.ndarray:
    wavs, _ = official.decode([{"audio_codes": codes}])
    return wavs[0]


@pytest.mark.benchmark(group="codec-decode")
def test_decode_impl(benchmark: Any, codecs: tuple[Any, Any], codes: np.ndarray) -> None:
    from impl.qwen3_tts import codec

    official, impl = codecs
    _info(benchmark, "impl")
    wav = benchmark.pedantic(lambda: codec.decode_codes(impl, codes), rounds=3, iterations=1, warmup_rounds=1)
    reference = _official_decode(official, codes)
    assert wav.shape == reference.shape
    # The same function up to float32 rounding. On these random full-size weights the official float32
    # waveform is itself ~1.3e-4 (rel. L2) from the clean float64 one (the decoder amplifies rounding), so
    # impl vs official is of that order; a wrong computation gives O(1).
    assert np.linalg.norm(wav - reference) / np.linalg.norm(reference) < 1e-2


@pytest.mark.benchmark(group="codec-decode")
def test_decode_official(benchmark: Any, codecs: tuple[Any, Any], codes: np.ndarray) -> None:
    official, _ = codecs
    _info(benchmark, "official")
    benchmark.pedantic(lambda: _official_decode(official, codes), rounds=3, iterations=1, warmup_rounds=1)
