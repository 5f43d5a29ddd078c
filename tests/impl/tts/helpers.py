"""Shared by the talker / speaker-encoder tests: the official stack (skipped cleanly when absent), freshly
built official modules with every parameter randomised, their weights copied into the NumPy twin, clean
float64 runs of the official code, and float64 comparisons."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from impl.qwen3_tts.layers import load_params
from impl.qwen3_tts.nn import Module

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
    load_params(impl_module, tensors, np.float64)
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


def talker_config(official: Any, hidden: int, heads: int, kv_heads: int, head_dim: int, sections: list[int],
                  interleaved: bool, layers: int = 1, theta: float = 1e6) -> Any:  # fmt: skip
    """An official talker config (eager attention) for property tests."""
    config = official.tts_config.Qwen3TTSTalkerConfig(
        hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers, num_attention_heads=heads,
        num_key_value_heads=kv_heads, head_dim=head_dim, rope_theta=theta, rms_norm_eps=1e-6,
        rope_scaling={"rope_type": "default", "mrope_section": sections, "interleaved": interleaved},
        vocab_size=64, text_vocab_size=32, text_hidden_size=8, num_code_groups=4,
        code_predictor_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                               "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 8, "vocab_size": 64,
                               "num_code_groups": 4},
    )  # fmt: skip
    config._attn_implementation = "eager"
    return config


def impl_config(official_config: Any) -> Any:
    """The impl's view of an official config object (SimpleNamespace of its attributes)."""
    from types import SimpleNamespace

    values = dict(official_config.to_dict())
    values.setdefault("head_dim", getattr(official_config, "head_dim", None))
    return SimpleNamespace(**values)
