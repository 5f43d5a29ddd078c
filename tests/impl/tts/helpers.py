"""Shared by the talker / speaker-encoder tests: the official stack (skipped cleanly when absent), freshly
built official modules with every parameter randomised, their weights copied into the NumPy twin, clean
float64 runs of the official code, and float64 comparisons."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from impl.common.nn import Module
from impl.common.weights import load_weights

ROOT = Path(__file__).resolve().parents[3]
TINY = ROOT / "goldens" / "checkpoints" / "qwen3_tts-tiny"

# float64 against float64: BLAS blocking and summation order differ, so allow a few hundred ulps of the
# tensor's scale, nothing more
RTOL64 = 1e-10


def require_official() -> Any:
    """The official namespace (`o.tts_modeling`, `o.tts_config`, ...); skips when torch/qwen-tts are missing."""
    pytest.importorskip("torch")
    try:
        from conformance.subjects.qwen3_tts.checkpoints import official

        return official()
    except ImportError as exc:  # pragma: no cover - depends on the environment
        pytest.skip(f"official stack not importable: {exc}")


def randomized(module: Any, seed: int) -> Any:
    """The official module with every parameter and buffer randomised (seeded), in float64, eval mode."""
    from conformance.subjects.qwen3_tts.checkpoints import randomize_

    randomize_(module, seed, "property")
    return module.double().eval()


def transfer(official_module: Any, impl_module: Module) -> Module:
    """Bind the impl module at "" and load the official module's parameters into it by name (float64):
    every official tensor must find its place and every impl parameter must be filled."""
    tensors = {name: value.detach().double().numpy() for name, value in official_module.state_dict().items()}
    impl_module.bind("")
    unused = load_weights(impl_module, tensors, np.float64)
    assert not unused, f"official tensors with no impl counterpart: {unused}"
    return impl_module


def run_official(module: Any, *args: Any, **kwargs: Any) -> Any:
    """Call an official module (or function) in clean float64: its float32-forcing spots computing in float64."""
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


def tensor(array: np.ndarray) -> Any:
    import torch

    return torch.from_numpy(np.ascontiguousarray(array))


def assert_close(reference: Any, candidate: Any, rtol: float = RTOL64) -> None:
    """|candidate - reference| <= rtol * (|reference| + rms(reference)) elementwise, shapes equal."""
    reference, candidate = np.asarray(to_numpy(reference)), np.asarray(candidate)
    assert reference.shape == candidate.shape, f"shape {candidate.shape} != {reference.shape}"
    scale = np.sqrt(np.mean(reference.astype(np.float64) ** 2)) if reference.size else 0.0
    error = np.abs(candidate.astype(np.float64) - reference.astype(np.float64))
    bound = rtol * (np.abs(reference) + scale) + 1e-300
    worst = float(np.max(error / bound)) if error.size else 0.0
    assert worst <= 1.0, f"max error {error.max():.3g} is {worst:.3g} x the bound (rtol {rtol})"


def rel_l2(reference: np.ndarray, candidate: np.ndarray) -> float:
    reference, candidate = np.asarray(reference, np.float64), np.asarray(candidate, np.float64)
    return float(np.linalg.norm(candidate - reference) / max(np.linalg.norm(reference), 1e-300))


@functools.lru_cache(maxsize=8)
def tiny_model(model_type: str, dtype: str = "float64") -> Any:
    """The committed tiny checkpoint's TTS model (no codec), cached per type and dtype."""
    from impl.qwen3_tts.tts import load_model

    return load_model(TINY / model_type, np.dtype(dtype))
