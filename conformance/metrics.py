"""Per-tensor error metrics, vectorised and streamed chunk by chunk (numpy only): what the recorder's float64
oracle measures as noise (capture/oracle.py) and what the check engine measures as error (compare/engine.py).

Sums are folded into float64 accumulators. For two nearly identical tensors 1 - cos(r, c) is about
rel_l2**2/2, far below float32 resolution, so a cosine built as r.c / (|r| |c|) from dot products is
wrong even in float64. We never form it from its parts: with d = c - r (exact for nearby float32 values,
Sterbenz), only |d|^2, d.r and |r|^2 are summed, and

    1 - cos = (|d|^2 - (|c| - |r|)^2) / (2 |r| |c|),   |c| - |r| = (2 d.r + |d|^2) / (|c| + |r|)

involves no difference of large numbers, so it stays accurate when the tensors agree to the last bit.
Within a chunk, sums of float32 data are taken in float32 (BLAS), accurate to ~1e-6 relative, which no
metric here amplifies; across chunks they are accumulated in float64.

NaN and Inf are compared by position: a NaN (or an Inf of a given sign) where the reference has none is
a mismatch, reported with its index; positions where both hold the same non-finite value agree and are
left out of the numeric metrics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

CHUNK_ELEMENTS = 1 << 18


def _ulp(reference: np.ndarray, dtype: str) -> np.ndarray:
    """The spacing of floating-point numbers of `dtype` at each reference value."""
    magnitude = np.abs(reference)
    if dtype == "bfloat16":
        return np.spacing(magnitude.astype(np.float32)).astype(np.float64) * 65536.0
    if dtype in ("float16", "float32", "float64"):
        with np.errstate(over="ignore"):
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
        # (not dataclasses.asdict: it deep-copies field by field, and a generation check calls this for
        # every one of hundreds of thousands of tensors)
        out: dict[str, Any] = {}
        for name in _METRIC_FIELDS:
            value = getattr(self, name)
            if isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, float) and math.isnan(value):
                value = None
            out[name] = value
        return out

    def value(self, name: str) -> float:
        if name == "cosine":
            return self.cosine
        return float(getattr(self, name))


_METRIC_FIELDS = tuple(f.name for f in fields(Metrics))


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
    _sum_dr: float = 0.0
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
    is_integer: bool = field(default=False)
    _scratch: dict[str, dict[str, np.ndarray]] = field(default_factory=dict, repr=False)

    def update(self, reference: np.ndarray, candidate: np.ndarray) -> None:
        """Fold one chunk (flat, same length) into the running metrics."""
        r = np.asarray(reference).ravel()
        c = np.asarray(candidate).ravel()
        if r.size != c.size:
            raise ValueError("chunks of different sizes")
        offset = self._offset
        self._offset += r.size
        if r.size == 0:
            return
        if self.is_integer or (r.dtype.kind in "biu" and c.dtype.kind in "biu"):
            self.is_integer = True
            self._update_integer(r, c, offset)
            r, c = r.astype(np.float64), c.astype(np.float64)
        else:
            # Work in the wider of the two float types (float32 pairs stay float32: c - r of nearby float32
            # values is exact by Sterbenz's lemma, and every sum below is folded into float64).
            work = np.result_type(r.dtype, c.dtype, np.float32)
            r, c = r.astype(work, copy=False), c.astype(work, copy=False)
        buf = self._buffers(r.dtype, r.size)
        with np.errstate(over="ignore", invalid="ignore"):
            d = np.subtract(c, r, out=buf["d"])
            sum_dd, sum_rr, sum_dr = _dots(d, r)
        index_map = None
        if not math.isfinite(sum_dd + sum_rr + sum_dr):
            if not (np.isfinite(r).all() and np.isfinite(c).all()):
                keep = self._nonfinite(r, c, offset)
                if keep is None:
                    return
                index_map = np.flatnonzero(keep)
                r, c = r[keep], c[keep]
                buf = self._buffers(r.dtype, r.size, fresh=True)
                with np.errstate(over="ignore", invalid="ignore"):
                    d = np.subtract(c, r, out=buf["d"])
                    sum_dd, sum_rr, sum_dr = _dots(d, r)
            if not math.isfinite(sum_dd + sum_rr + sum_dr):  # finite values whose squares overflow (masks)
                d64, r64 = d.astype(np.float64), r.astype(np.float64)
                sum_dd, sum_rr, sum_dr = _dots(d64, r64)
        self._numel += r.size
        self._sum_d2 += sum_dd
        self._sum_r2 += sum_rr
        self._sum_dr += sum_dr
        ad = np.abs(d, out=buf["ad"])
        ar = np.abs(r, out=buf["ar"])
        i = int(np.argmax(ad))
        if ad[i] > self._max_abs or self._worst < 0:
            self._max_abs = float(ad[i])
            self._worst = offset + (int(index_map[i]) if index_map is not None else i)
        self._sum_abs += float(ad.sum())  # pairwise within the chunk, float64 across chunks
        self._ref_max_abs = max(self._ref_max_abs, float(ar.max()))
        if ad[i] == 0:
            return  # this chunk is identical: it adds nothing to the ratio metrics
        tmp, mask = buf["tmp"], buf["mask"]
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            # allclose: |d| <= atol + rtol |r|; the smallest passing atol is max(|d| - rtol |r|)
            np.multiply(ar, np.asarray(self.rtol, dtype=ar.dtype), out=tmp)
            np.subtract(ad, tmp, out=tmp)
            self._min_atol = max(self._min_atol, float(tmp.max()))
            if not self.is_integer:
                np.greater(tmp, self.atol, out=mask)
                n = int(np.count_nonzero(mask))
                if n:
                    self._n_outside += n
                    if self._first_outside < 0:
                        j = int(np.argmax(mask))
                        self._first_outside = offset + (int(index_map[j]) if index_map is not None else j)
            rel = np.divide(ad, ar, out=tmp)  # 0/0 (both exact zeros) gives NaN, which fmax ignores
            chunk_max_rel = float(np.fmax.reduce(rel))
            if chunk_max_rel != chunk_max_rel:  # every element was 0/0
                chunk_max_rel = 0.0
            self._max_rel = max(self._max_rel, chunk_max_rel)
            self._max_ulp = max(self._max_ulp, _max_ulps(ad, ar, self.dtype, buf))
            if self.atol > 0:
                np.greater(ad, self.atol, out=mask)
                over = np.flatnonzero(mask)
                if over.size:
                    self._min_rtol = max(self._min_rtol, float(((ad[over] - self.atol) / ar[over]).max()))
            else:
                self._min_rtol = max(self._min_rtol, chunk_max_rel)

    def _buffers(self, dtype: np.dtype, size: int, fresh: bool = False) -> dict[str, np.ndarray]:
        """Work arrays reused from chunk to chunk: allocating fresh temporaries per chunk costs more than
        the arithmetic (large allocations are fresh pages from the kernel every time)."""
        cached = None if fresh else self._scratch.get(dtype.str)
        if cached is None or cached["d"].size < size:
            cached = {name: np.empty(size, dtype=dtype) for name in ("d", "ad", "ar", "tmp")}
            cached["mask"] = np.empty(size, dtype=bool)
            if not fresh:
                self._scratch[dtype.str] = cached
        if cached["d"].size == size:
            return cached
        return {name: array[:size] for name, array in cached.items()}

    def _update_integer(self, r: np.ndarray, c: np.ndarray, offset: int) -> None:
        diff = r != c
        count = int(np.count_nonzero(diff))
        if count:
            self._integer_mismatch += count
            self._n_outside += count
            if self._first_outside < 0:
                self._first_outside = offset + int(np.argmax(diff))

    def _nonfinite(self, r: np.ndarray, c: np.ndarray, offset: int) -> np.ndarray | None:
        """Compare NaN/Inf positions; return the mask of positions where both values are finite."""
        finite_r, finite_c = np.isfinite(r), np.isfinite(c)
        both = finite_r & finite_c
        # Non-finite positions agree only when both hold the same value (NaN and NaN, +Inf and +Inf).
        same = (np.isnan(r) & np.isnan(c)) | (~finite_r & ~finite_c & (r == c))
        bad = ~both & ~same
        n_bad = int(np.count_nonzero(bad))
        if n_bad:
            self._nonfinite_mismatch += n_bad
            self._n_outside += n_bad
            first = offset + int(np.argmax(bad))
            if self._first_nonfinite < 0:
                self._first_nonfinite = first
            if self._first_outside < 0:
                self._first_outside = first
        return both if both.any() else None

    def result(self) -> Metrics:
        total = int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1
        n = self._numel
        # |c|^2 = |r|^2 + 2 d.r + |d|^2, and |c| - |r| = (2 d.r + |d|^2) / (|c| + |r|): no cancellation.
        sum_c2 = self._sum_r2 + 2 * self._sum_dr + self._sum_d2
        r_norm, c_norm, d_norm = (math.sqrt(v) if v == v and v >= 0 else math.inf
                                  for v in (self._sum_r2, max(sum_c2, 0.0), self._sum_d2))  # fmt: skip
        if not all(math.isfinite(v) for v in (r_norm, c_norm, d_norm)):
            rel_l2 = math.inf if d_norm else 0.0
            cos_dist, snr = (1.0, -math.inf) if d_norm else (0.0, math.inf)
        elif d_norm == 0:
            rel_l2, cos_dist, snr = 0.0, 0.0, math.inf
        elif r_norm == 0:
            rel_l2, cos_dist, snr = math.inf, 1.0, -math.inf
        else:
            rel_l2 = d_norm / r_norm
            snr = 20.0 * math.log10(r_norm / d_norm)
            if c_norm == 0:
                cos_dist = 1.0
            else:
                norm_gap = (2 * self._sum_dr + self._sum_d2) / (c_norm + r_norm)
                cos_dist = max(0.0, (self._sum_d2 - norm_gap**2) / (2 * r_norm * c_norm))
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
            exact=self._max_abs == 0 and self._nonfinite_mismatch == 0 and self._integer_mismatch == 0,
        )


_EXPONENT = {  # (integer view, exponent mask, mantissa bits) of the IEEE formats
    np.dtype(np.float32): (np.int32, 0x7F800000, 23),
    np.dtype(np.float64): (np.int64, 0x7FF0000000000000, 52),
}


def _max_ulps(ad: np.ndarray, ar: np.ndarray, dtype: str, buf: dict[str, np.ndarray]) -> float:
    """max |d| / ulp(|r|), with ulp measured in the golden's dtype.

    For a float32/float64 work array the ulp is built from the exponent bits: the float with the same
    exponent, minus the mantissa width, and a zero mantissa (or the smallest subnormal) - three integer
    passes instead of np.spacing, which is ten times slower."""
    layout = _EXPONENT.get(ar.dtype)
    if layout is None or dtype not in ("float32", "float64") or np.dtype(dtype) != ar.dtype:
        return float((ad / _ulp(ar, dtype)).max())
    view, mask_bits, mantissa = layout
    bits = buf["tmp"].view(view)  # rel is no longer needed: reuse its buffer
    np.bitwise_and(ar.view(view), mask_bits, out=bits)
    np.subtract(bits, mantissa << mantissa, out=bits)
    np.maximum(bits, 1, out=bits)  # below the smallest normal exponent: the smallest subnormal
    spacing = bits.view(ar.dtype)
    return float(np.divide(ad, spacing, out=spacing).max())


def _dots(d: np.ndarray, r: np.ndarray) -> tuple[float, float, float]:
    return float(np.dot(d, d)), float(np.dot(r, r)), float(np.dot(d, r))


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


# -- audio ---------------------------------------------------------------------------------------------------------

AUDIO_METRICS = ("snr_db", "log_mel", "frame_max_abs")
MEL_BANDS = 40
LOG_MEL_EPS = 1e-5  # the magnitude floor under the log: silence and rounding dust compare as equal


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def _mel_filters(sample_rate: int, n_fft: int, bands: int) -> np.ndarray:
    """Triangular mel filters (bands, n_fft // 2 + 1), HTK mel scale, unnormalised."""
    bins = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    edges_mel = np.linspace(0.0, float(_hz_to_mel(np.array(sample_rate / 2.0))), bands + 2)
    edges = 700.0 * (10.0 ** (edges_mel / 2595.0) - 1.0)
    filters = np.zeros((bands, bins.size))
    for b in range(bands):
        lo, mid, hi = edges[b], edges[b + 1], edges[b + 2]
        rise = (bins - lo) / max(mid - lo, 1e-9)
        fall = (hi - bins) / max(hi - mid, 1e-9)
        filters[b] = np.clip(np.minimum(rise, fall), 0.0, None)
    return filters


def log_mel(wave: np.ndarray, sample_rate: int, n_fft: int = 512, hop: int | None = None,
            bands: int = MEL_BANDS) -> np.ndarray:  # fmt: skip
    """log10 of the mel-band magnitude of a mono waveform, (frames, bands); short waves are zero-padded to one
    window. Hann window, float64 throughout."""
    x = np.asarray(wave, dtype=np.float64).reshape(-1)
    n_fft = int(min(n_fft, max(16, 1 << math.ceil(math.log2(max(x.size, 2))))))
    hop = hop or n_fft // 4
    if x.size < n_fft:
        x = np.pad(x, (0, n_fft - x.size))
    count = 1 + (x.size - n_fft) // hop
    index = np.arange(n_fft)[None, :] + hop * np.arange(count)[:, None]  # (frames, n_fft)
    spectrum = np.abs(np.fft.rfft(x[index] * np.hanning(n_fft)[None, :], axis=-1))  # (frames, n_fft//2+1)
    mel = spectrum @ _mel_filters(sample_rate, n_fft, bands).T  # (frames, bands)
    return np.log10(np.maximum(mel, LOG_MEL_EPS))


def audio_metrics(reference: np.ndarray, candidate: np.ndarray, sample_rate: int, frame: int) -> dict[str, float]:
    """Audio-level error of `candidate` against `reference` (same length, mono samples):

    * snr_db: 10 log10(|r|^2 / |c - r|^2), inf when identical;
    * log_mel: the mean absolute difference of log10 mel-band magnitudes (40 bands), what a listener's ear
      weighs rather than the samples;
    * frame_max_abs: the largest per-frame max |c - r| over frames of `frame` samples (one step of the signal's source), so a
      click in one frame is not averaged away; `worst_frame` says which frame.
    """
    r = np.asarray(reference, dtype=np.float64).reshape(-1)
    c = np.asarray(candidate, dtype=np.float64).reshape(-1)
    if r.shape != c.shape:
        raise ValueError(f"length {c.size} differs from the reference's {r.size}")
    d = c - r
    noise = float(np.dot(d, d))
    power = float(np.dot(r, r))
    snr = math.inf if noise == 0 else (10.0 * math.log10(power / noise) if power > 0 else -math.inf)
    frame = max(int(frame), 1)
    frames = -(-d.size // frame) if d.size else 0
    padded = np.pad(np.abs(d), (0, frames * frame - d.size)).reshape(frames, frame) if frames else np.zeros((0, 1))
    per_frame = padded.max(axis=1) if frames else np.zeros(0)
    mel = float(np.mean(np.abs(log_mel(c, sample_rate) - log_mel(r, sample_rate)))) if r.size else 0.0
    return {"snr_db": snr, "log_mel": mel, "frame_max_abs": float(per_frame.max()) if frames else 0.0,
            "worst_frame": int(per_frame.argmax()) if frames else 0}  # fmt: skip


def audio_thresholds(noise: dict[str, float], k: float, reference_peak: float, floor_eps: float) -> dict[str, float]:
    """Audio thresholds calibrated on the official float32-vs-float64 audio noise, k times the noise as for every
    tensor: an error k times the noise's amplitude lowers the SNR by 20 log10(k) dB. Floors keep a
    bit-identical noise (0, or an infinite SNR) from demanding bit-identity: `floor_eps` relative to the
    reference's peak for the per-frame error, the SNR of that error for the SNR."""
    frame_floor = floor_eps * max(reference_peak, 1e-30)
    floor_snr = -20.0 * math.log10(max(floor_eps, 1e-300))
    snr = noise.get("snr_db", math.inf)
    snr_limit = min(snr - 20.0 * math.log10(k), floor_snr) if math.isfinite(snr) else floor_snr
    return {"snr_db": snr_limit, "log_mel": max(k * noise.get("log_mel", 0.0), 10 * floor_eps),
            "frame_max_abs": max(k * noise.get("frame_max_abs", 0.0), frame_floor)}  # fmt: skip
