"""Per-tensor error metrics, vectorised and streamed chunk by chunk (numpy only).

All sums are accumulated in float64. For two nearly identical tensors 1 - cos(r, c) is about rel_l2**2/2,
far below float32 resolution, so a cosine built from float32 dot products is wrong; we never form the
cosine from its parts but compute the cosine distance from the error norm:

    1 - cos = (|d|^2 - (|c| - |r|)^2) / (2 |r| |c|),   d = c - r

which stays accurate when the two tensors agree to the last bit.

NaN and Inf are compared by position: a NaN (or an Inf of a given sign) where the reference has none is
a mismatch, reported with its index; positions where both hold the same non-finite value agree and are
left out of the numeric metrics.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

CHUNK_ELEMENTS = 1 << 16


def _ulp(reference: np.ndarray, dtype: str) -> np.ndarray:
    """The spacing of floating-point numbers of `dtype` at each reference value."""
    magnitude = np.abs(reference)
    if dtype == "bfloat16":
        return np.spacing(magnitude.astype(np.float32)).astype(np.float64) * 65536.0
    if dtype in ("float16", "float32", "float64"):
        return np.spacing(magnitude.astype(dtype)).astype(np.float64)
    return np.ones_like(magnitude, dtype=np.float64)


@dataclass
class Metrics:
    """Error of a candidate tensor against its reference (the golden)."""

    numel: int = 0
    max_abs: float = 0.0
    mean_abs: float = 0.0
    max_rel: float = 0.0
    rel_l2: float = 0.0
    cos_dist: float = 0.0
    snr_db: float = math.inf
    max_ulp: float = 0.0
    ref_rms: float = 0.0
    ref_max_abs: float = 0.0
    worst_index: tuple[int, ...] | None = None
    nonfinite_mismatch: int = 0
    first_nonfinite_mismatch: tuple[int, ...] | None = None
    n_outside: int = 0
    frac_outside: float = 0.0
    first_outside: tuple[int, ...] | None = None
    min_atol: float = 0.0  # smallest atol that passes at the rule's rtol
    min_rtol: float = 0.0  # smallest rtol that passes at the rule's atol
    integer_mismatch: int = 0
    exact: bool = True

    @property
    def cosine(self) -> float:
        return 1.0 - self.cos_dist

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for name in ("worst_index", "first_nonfinite_mismatch", "first_outside"):
            if out[name] is not None:
                out[name] = list(out[name])
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in out.items()}

    def value(self, name: str) -> float:
        if name == "cosine":
            return self.cosine
        return float(getattr(self, name))


@dataclass
class MetricAccumulator:
    """Streams (reference, candidate) chunks of one tensor and accumulates its metrics in float64."""

    shape: tuple[int, ...]
    dtype: str = "float32"
    atol: float = 0.0
    rtol: float = 0.0
    _numel: int = 0
    _offset: int = 0
    _sum_abs: float = 0.0
    _sum_d2: float = 0.0
    _sum_r2: float = 0.0
    _sum_c2: float = 0.0
    _max_abs: float = 0.0
    _worst: int = -1
    _max_rel: float = 0.0
    _max_ulp: float = 0.0
    _ref_max_abs: float = 0.0
    _nonfinite_mismatch: int = 0
    _first_nonfinite: int = -1
    _n_outside: int = 0
    _first_outside: int = -1
    _min_atol: float = 0.0
    _min_rtol: float = 0.0
    _integer_mismatch: int = 0
    _exact: bool = True
    is_integer: bool = field(default=False)

    def update(self, reference: np.ndarray, candidate: np.ndarray) -> None:
        r = np.asarray(reference).ravel()
        c = np.asarray(candidate).ravel()
        if r.size != c.size:
            raise ValueError("chunks of different sizes")
        offset = self._offset
        self._offset += r.size
        if r.size == 0:
            return
        if self._exact and not np.array_equal(r, c, equal_nan=r.dtype.kind == "f" and c.dtype.kind == "f"):
            self._exact = False
        if self.is_integer or r.dtype.kind in "biu" and c.dtype.kind in "biu":
            diff = r != c
            count = int(diff.sum())
            if count:
                self._integer_mismatch += count
                if self._first_outside < 0:
                    self._first_outside = offset + int(np.argmax(diff))
                self._n_outside += count
        r64 = r.astype(np.float64, copy=False)
        c64 = c.astype(np.float64, copy=False)
        finite_r = np.isfinite(r64)
        finite_c = np.isfinite(c64)
        both_finite = finite_r & finite_c
        if not both_finite.all():
            # Non-finite positions agree only if both hold the same value (NaN-NaN, +Inf/+Inf).
            same = (np.isnan(r64) & np.isnan(c64)) | (~finite_r & ~finite_c & (r64 == c64))
            bad = ~both_finite & ~same
            n_bad = int(bad.sum())
            if n_bad:
                self._nonfinite_mismatch += n_bad
                self._n_outside += n_bad
                first = offset + int(np.argmax(bad))
                if self._first_nonfinite < 0:
                    self._first_nonfinite = first
                if self._first_outside < 0:
                    self._first_outside = first
            r64 = r64[both_finite]
            c64 = c64[both_finite]
            index_map = np.flatnonzero(both_finite)
        else:
            index_map = None
        if r64.size == 0:
            return
        self._numel += r64.size
        d = c64 - r64
        ad = np.abs(d)
        ar = np.abs(r64)
        self._sum_abs += float(ad.sum())
        self._sum_d2 += float(np.dot(d, d))
        self._sum_r2 += float(np.dot(r64, r64))
        self._sum_c2 += float(np.dot(c64, c64))
        i = int(np.argmax(ad))
        if ad[i] > self._max_abs or self._worst < 0:
            self._max_abs = float(ad[i])
            self._worst = offset + (int(index_map[i]) if index_map is not None else i)
        self._ref_max_abs = max(self._ref_max_abs, float(ar.max()))
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.where(ad == 0, 0.0, ad / ar)
            self._max_rel = max(self._max_rel, float(rel.max()))
            ulps = np.where(ad == 0, 0.0, ad / _ulp(r64, self.dtype))
            self._max_ulp = max(self._max_ulp, float(ulps.max()))
            if not self.is_integer:
                outside = ad > self.atol + self.rtol * ar
                n = int(outside.sum())
                if n:
                    self._n_outside += n
                    if self._first_outside < 0:
                        j = int(np.argmax(outside))
                        self._first_outside = offset + (int(index_map[j]) if index_map is not None else j)
                self._min_atol = max(self._min_atol, float((ad - self.rtol * ar).max()))
                need = np.where(ad <= self.atol, 0.0, (ad - self.atol) / ar)
                self._min_rtol = max(self._min_rtol, float(need.max()))

    def result(self) -> Metrics:
        total = int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1
        n = self._numel
        r_norm, c_norm, d_norm = math.sqrt(self._sum_r2), math.sqrt(self._sum_c2), math.sqrt(self._sum_d2)
        if d_norm == 0:
            rel_l2, cos_dist, snr = 0.0, 0.0, math.inf
        elif r_norm == 0:
            rel_l2, cos_dist, snr = math.inf, 1.0, -math.inf
        else:
            rel_l2 = d_norm / r_norm
            snr = 20.0 * math.log10(r_norm / d_norm)
            cos_dist = 1.0 if c_norm == 0 else max(0.0, (self._sum_d2 - (c_norm - r_norm) ** 2) / (2 * r_norm * c_norm))
        unravel = _unravel(self.shape)
        return Metrics(
            numel=total,
            max_abs=self._max_abs,
            mean_abs=self._sum_abs / n if n else 0.0,
            max_rel=self._max_rel,
            rel_l2=rel_l2,
            cos_dist=min(cos_dist, 2.0),
            snr_db=snr,
            max_ulp=self._max_ulp,
            ref_rms=math.sqrt(self._sum_r2 / n) if n else 0.0,
            ref_max_abs=self._ref_max_abs,
            worst_index=unravel(self._worst) if self._worst >= 0 and self._max_abs > 0 else None,
            nonfinite_mismatch=self._nonfinite_mismatch,
            first_nonfinite_mismatch=unravel(self._first_nonfinite) if self._first_nonfinite >= 0 else None,
            n_outside=self._n_outside,
            frac_outside=self._n_outside / total if total else 0.0,
            first_outside=unravel(self._first_outside) if self._first_outside >= 0 else None,
            min_atol=max(0.0, self._min_atol),
            min_rtol=max(0.0, self._min_rtol),
            integer_mismatch=self._integer_mismatch,
            exact=self._exact,
        )


def _unravel(shape: tuple[int, ...]):  # type: ignore[no-untyped-def]
    def go(flat: int) -> tuple[int, ...]:
        if not shape:
            return ()
        return tuple(int(i) for i in np.unravel_index(flat, shape))

    return go


def compare_arrays(
    reference: np.ndarray,
    candidate: np.ndarray,
    *,
    dtype: str | None = None,
    atol: float = 0.0,
    rtol: float = 0.0,
    chunk: int = CHUNK_ELEMENTS,
) -> Metrics:
    """Metrics of `candidate` against `reference` (same shape), streamed in chunks of `chunk` elements."""
    reference = np.asarray(reference)
    candidate = np.asarray(candidate)
    if reference.shape != candidate.shape:
        raise ValueError(f"shape {candidate.shape} differs from the reference's {reference.shape}")
    kind = dtype or reference.dtype.name
    acc = MetricAccumulator(tuple(reference.shape), kind, atol, rtol,
                            is_integer=reference.dtype.kind in "biu" and candidate.dtype.kind in "biu")  # fmt: skip
    flat_r = reference.reshape(-1)
    flat_c = candidate.reshape(-1)
    if flat_r.size == 0:
        acc.update(flat_r, flat_c)
    for start in range(0, flat_r.size, chunk):
        acc.update(flat_r[start : start + chunk], flat_c[start : start + chunk])
    return acc.result()


def noise_metrics(reference: np.ndarray, candidate: np.ndarray, dtype: str) -> dict[str, float]:
    """The oracle's noise record: `candidate` (official at the recorded precision) against `reference`
    (the clean float64 oracle), in the metric names of the golden store's oracle table."""
    m = compare_arrays(reference, candidate, dtype=dtype)
    return {
        "max_abs": m.max_abs,
        "mean_abs": m.mean_abs,
        "rel_l2": m.rel_l2,
        "max_rel": m.max_rel,
        "cos_dist": m.cos_dist,
        "max_ulp": m.max_ulp,
    }
