"""Shared by the codec tests: the official stack (skipped cleanly when absent), copying a freshly built
official module's weights into its NumPy twin, and float64 comparisons."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from impl.common.nn import Module
from impl.common.weights import load_weights
from impl.qwen3_tts import codec

ROOT = Path(__file__).resolve().parents[3]
TINY_CODEC = ROOT / "goldens" / "checkpoints" / "qwen3_tts-tiny" / "speech_tokenizer"

# Float64 against float64: both sides round differently (BLAS blocking, summation order), so allow a
# few hundred ulps relative to the tensor's scale, nothing more.
RTOL64 = 1e-10


def require_official() -> Any:
    """The official namespace (`o.codec_modeling`, `o.mimi`, ...); skips the module when it is missing."""
    pytest.importorskip("torch")
    try:
        from conformance.subjects.qwen3_tts.checkpoints import official

        return official()
    except ImportError as exc:  # pragma: no cover - depends on the environment
        pytest.skip(f"official stack not importable: {exc}", allow_module_level=True)


@functools.lru_cache(maxsize=2)
def tiny_codec(dtype: str = "float64") -> codec.Qwen3TTSTokenizerV2Model:
    return codec.load_codec(TINY_CODEC, np.dtype(dtype))


def randomized(module: Any, seed: int) -> Any:
    """A freshly built official module with every parameter and buffer randomised (seeded), in float64."""
    from conformance.subjects.qwen3_tts.checkpoints import randomize_

    randomize_(module, seed, "property")
    return module.double().eval()


def transfer(official_module: Any, impl_module: Module) -> Module:
    """Bind `impl_module` at the root and load the official module's state dict into it (float64).
    Fails if a tensor of the official module has no place in the impl (nothing may go unused)."""
    tensors = {name: value.detach().double().numpy() for name, value in official_module.state_dict().items()}
    impl_module.bind("")
    unused = load_weights(impl_module, tensors)
    assert not unused, f"official tensors with no impl counterpart: {unused}"
    return impl_module


def run_official(module: Any, *args: Any, **kwargs: Any) -> Any:
    """Call an official module in clean float64 (its float32-forcing spots patched to float64)."""
    import torch

    from conformance.subjects.qwen3_tts.precision import clean_precision

    with torch.no_grad(), clean_precision(torch.float64):
        return module(*args, **kwargs)


def to_numpy(value: Any) -> Any:
    import torch

    if isinstance(value, torch.Tensor):
        return value.detach().numpy()
    if isinstance(value, (tuple, list)):
        return type(value)(to_numpy(v) for v in value)
    return value


def assert_close(reference: Any, candidate: Any, rtol: float = RTOL64) -> None:
    """candidate == reference elementwise within rtol, plus rtol times the reference's RMS (so values
    near zero are judged against the tensor's scale); same shape and dtype."""
    reference, candidate = to_numpy(reference), np.asarray(to_numpy(candidate))
    reference = np.asarray(reference)
    assert candidate.shape == reference.shape, (candidate.shape, reference.shape)
    assert candidate.dtype == reference.dtype, (candidate.dtype, reference.dtype)
    scale = float(np.sqrt(np.mean(np.square(reference)))) if reference.size else 0.0
    np.testing.assert_allclose(candidate, reference, rtol=rtol, atol=rtol * max(scale, 1e-30))


def rng_array(seed: int, shape: tuple[int, ...], scale: float = 1.0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape) * scale
