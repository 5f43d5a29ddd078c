"""The float64 goldens come from a clean float64 Qwen3: inside `clean_precision()` the spots where transformers
forces float32 (RMSNorm, RoPE, the eager softmax) compute in float64, and float32 runs are untouched bit for bit.
Without it a float64 model agrees with true float64 only to float32 rounding, and a padded batch turns to NaN."""

from __future__ import annotations

import numpy as np
import pytest

from conformance.subjects import get

from ...conftest import GOLDENS

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from conformance.subjects.qwen3_lm.cases import PROMPT, SHORT_PROMPT, left_padded  # noqa: E402
from conformance.subjects.qwen3_lm.precision import clean_precision  # noqa: E402

CHECKPOINT = GOLDENS / "checkpoints" / "qwen3_lm-tiny"
SUBJECT = get("qwen3_lm")


def logits(model: object, ids: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    kwargs = {"attention_mask": torch.from_numpy(mask)} if mask is not None else {}
    with torch.no_grad():
        return model(input_ids=torch.from_numpy(ids), **kwargs).logits.numpy()  # type: ignore[operator]


def rel(reference: np.ndarray, value: np.ndarray) -> float:
    return float(np.linalg.norm(value - reference) / np.linalg.norm(reference))


def test_float32_is_untouched_and_float64_is_float64_throughout() -> None:
    from impl.qwen3_lm import load

    ids = np.array([PROMPT], dtype=np.int64)
    model32 = SUBJECT.load(CHECKPOINT, "float32")
    plain32 = logits(model32, ids)
    with clean_precision():
        assert np.array_equal(logits(model32, ids), plain32)
    model64 = SUBJECT.load(CHECKPOINT, "float64")
    exact = load(CHECKPOINT, np.float64)(input_ids=ids)["logits"]  # the impl computes in float64 everywhere
    with clean_precision():
        clean = logits(model64, ids)
    forced = logits(model64, ids)
    assert rel(exact, clean) < 1e-13
    assert rel(exact, forced) > 1e-9 and rel(exact, forced) > 1e4 * rel(exact, clean)


def test_a_padded_batch_in_float64_stays_finite_only_with_clean_precision() -> None:
    ids, mask = left_padded([PROMPT, SHORT_PROMPT])
    model64 = SUBJECT.load(CHECKPOINT, "float64")
    with clean_precision():
        assert np.isfinite(logits(model64, ids, mask)).all()
    assert np.isnan(logits(model64, ids, mask)).any()  # float64's mask value is -inf in a float32 softmax
