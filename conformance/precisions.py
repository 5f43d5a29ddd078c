"""Precisions a port runs at, and the weight formats behind them (numpy only; `gguf` and `ml_dtypes` on use).

A *precision* names how a candidate computes: its compute dtype (`bfloat16`, `float16`, `float32`) and how its
weights are stored (cast to the compute dtype, or a weight format such as ggml's Q8_0 dequantized for a float32
compute). The recorder re-runs every hooked call on twins of the official model at each requested precision and
keeps, per golden tensor, the twin's noise against the clean float64 oracle (capture/oracle.py); the check
scales a candidate's thresholds on the noise of the precision it is judged at (compare/policy.py).

Weight formats round-trip a weight tensor through its storage (`WeightFormat.roundtrip`): ggml's block formats
through the `gguf` package's own `quantize`/`dequantize` (the reference NumPy code of llama.cpp's formats),
bfloat16 through `ml_dtypes`. A format applies to weights of two dimensions or more whose last axis (ggml's
`ne0`, a Linear weight's input features) is a whole number of blocks, as llama.cpp's converters do; norms,
biases and odd shapes stay in float32.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .errors import UsageError

FLOAT32 = "float32"


@dataclass(frozen=True)
class WeightFormat:
    """How a weight is stored: `roundtrip` gives the float32 values a port computes with after storing it."""

    name: str
    block: int  # elements per block along the last axis (1: any shape)
    description: str
    encode: Callable[[np.ndarray], np.ndarray]  # float32 rows (n, last axis) -> the same values after storage

    def applies(self, shape: tuple[int, ...]) -> bool:
        """Whether a weight of this shape is stored in this format (else it stays float32)."""
        return len(shape) >= 2 and shape[-1] % self.block == 0

    def roundtrip(self, weight: np.ndarray) -> np.ndarray:
        """`weight` (float32 or wider) as stored in this format and read back, float32, same shape."""
        values = np.ascontiguousarray(weight, dtype=np.float32)
        if not self.applies(values.shape):
            return values
        rows = values.reshape(-1, values.shape[-1])  # (n, ne0): blocks run along the last axis
        return self.encode(rows).astype(np.float32).reshape(values.shape)


def _ggml(kind: str) -> Callable[[np.ndarray], np.ndarray]:
    def encode(rows: np.ndarray) -> np.ndarray:
        from gguf import GGMLQuantizationType
        from gguf.quants import dequantize, quantize

        qtype = GGMLQuantizationType[kind]
        return dequantize(quantize(rows, qtype), qtype)

    return encode


def _bfloat16(rows: np.ndarray) -> np.ndarray:
    import ml_dtypes

    return rows.astype(ml_dtypes.bfloat16).astype(np.float32)


WEIGHT_FORMATS: dict[str, WeightFormat] = {
    "f16": WeightFormat("f16", 1, "IEEE float16 weights (ggml F16)", _ggml("F16")),
    "bf16": WeightFormat("bf16", 1, "bfloat16 weights", _bfloat16),
    "q8_0": WeightFormat("q8_0", 32, "ggml Q8_0: blocks of 32 int8 with one float16 scale", _ggml("Q8_0")),
    "q4_0": WeightFormat("q4_0", 32, "ggml Q4_0: blocks of 32 4-bit values with one float16 scale", _ggml("Q4_0")),
}


@dataclass(frozen=True)
class Precision:
    """A precision a candidate runs at: compute dtype and weight storage.

    defaults: the per-dtype default thresholds a tensor falls back to when the golden holds no noise of this
    precision for it (the policy's [defaults.<dtype>] table).
    """

    name: str
    compute: str  # bfloat16, float16, float32
    weights: str | None  # a WEIGHT_FORMATS name; None: weights cast to the compute dtype
    defaults: str
    description: str

    @property
    def weight_format(self) -> WeightFormat | None:
        return WEIGHT_FORMATS[self.weights] if self.weights else None

    @property
    def is_reference(self) -> bool:
        """float32 itself: the golden's own noise records (mode `isolated`, chained against the float64 twin)."""
        return self.name == FLOAT32


PRECISIONS: dict[str, Precision] = {
    "float32": Precision("float32", "float32", None, "float32", "float32 compute and weights (the golden's own)"),
    "bfloat16": Precision("bfloat16", "bfloat16", None, "bfloat16", "bfloat16 compute, weights cast to bfloat16"),
    "float16": Precision("float16", "float16", None, "float16", "float16 compute, weights cast to float16"),
    "f16-weights": Precision("f16-weights", "float32", "f16", "float16", "float16 weights, float32 compute"),
    "q8_0": Precision("q8_0", "float32", "q8_0", "float16", "ggml Q8_0 weights, float32 compute"),
    "q4_0": Precision("q4_0", "float32", "q4_0", "bfloat16", "ggml Q4_0 weights, float32 compute"),
}
COMPUTE_PRECISIONS = ("bfloat16", "float16")  # `record --precisions`
WEIGHT_PRECISIONS = {"f16": "f16-weights", "q8_0": "q8_0", "q4_0": "q4_0"}  # `record --weights-quant` -> precision


def get(name: str) -> Precision:
    """The precision called `name`, or a UsageError listing the known ones."""
    if name not in PRECISIONS:
        raise UsageError(f"unknown precision {name!r} (known: {', '.join(PRECISIONS)})")
    return PRECISIONS[name]


def twins(precisions: str | list[str] | tuple[str, ...] = (), weights: str | list[str] | tuple[str, ...] = ()
          ) -> list[Precision]:  # fmt: skip
    """The twins `record --precisions A,B --weights-quant C,D` asks for, in that order, without repeats."""
    out: list[Precision] = []
    for name in _names(precisions):
        if name not in COMPUTE_PRECISIONS:
            raise UsageError(f"--precisions takes {', '.join(COMPUTE_PRECISIONS)}, not {name!r}")
        out.append(PRECISIONS[name])
    for name in _names(weights):
        if name not in WEIGHT_PRECISIONS:
            raise UsageError(f"--weights-quant takes {', '.join(WEIGHT_PRECISIONS)}, not {name!r}")
        out.append(PRECISIONS[WEIGHT_PRECISIONS[name]])
    return list(dict.fromkeys(out))


def _names(value: str | list[str] | tuple[str, ...]) -> list[str]:
    items = value.split(",") if isinstance(value, str) else list(value)
    return [item.strip() for item in items if item and item.strip()]


def noise_mode(mode: str, precision: str | None) -> str:
    """The oracle-table mode of a twin's noise records: `isolated:bfloat16`, `chained:q8_0` (float32: `isolated`)."""
    return mode if precision in (None, FLOAT32) else f"{mode}:{precision}"


def record_command(precision: str) -> str:
    """The `record` options that record the twin of `precision`."""
    spec = PRECISIONS.get(precision)
    if spec is not None and spec.weights:
        return f"--weights-quant {spec.weights}"
    return f"--precisions {precision}"


__all__ = ["COMPUTE_PRECISIONS", "PRECISIONS", "WEIGHT_FORMATS", "WEIGHT_PRECISIONS", "Precision", "WeightFormat",
           "get", "noise_mode", "record_command", "twins"]  # fmt: skip
