"""Figures of the HTML report, drawn with matplotlib's Agg canvas and embedded as PNG data: URIs.

Only the object-oriented API is used (no pyplot, no global state): each function builds a Figure, saves
it to PNG in memory and returns the URI. Large inputs are reduced before drawing (max-pooled heatmaps,
min/max envelopes of long waveforms), so figure size does not grow with the model.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullLocator
from matplotlib.transforms import blended_transform_factory

DPI = 100
PALETTE = 160  # colours of the palette PNGs
MODE_COLOURS = {"chained": "#1f5fbf", "isolated": "#e07b00"}
FAIL_COLOUR = "#d62728"
BLAME_COLOUR = "#b00020"
HEATMAP_ROWS, HEATMAP_COLS = 96, 480  # a heatmap is max-pooled down to at most this many cells
STAGE_TINTS = (
    "#d2e4f0",
    "#ffe5cf",
    "#d5ecd5",
    "#f7d4d4",
    "#eae1f2",
    "#e8dddb",
    "#f9e4f3",
    "#e5e5e5",
    "#f2f2d3",
    "#d1f2f5",
)  # tab10 lightened: one per stage, named below the chart
ENVELOPE_POINTS = 2000  # longer waveforms are drawn as a min/max envelope of this many blocks


def _uri(fig: Figure, dpi: int = DPI) -> str:
    """Draw with Agg and encode as a palette PNG (a few times smaller than RGBA for these plots)."""
    from PIL import Image  # matplotlib's own image dependency

    canvas = FigureCanvasAgg(fig)
    fig.set_dpi(dpi)
    canvas.draw()
    rgb = Image.fromarray(np.asarray(canvas.buffer_rgba())[..., :3])
    buffer = io.BytesIO()
    rgb.quantize(colors=PALETTE, method=Image.Quantize.FASTOCTREE).save(buffer, format="png")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _log_axis(axis: Any) -> None:
    """Log scale with plain "1e-5" labels and no minor ticks (mathtext tick labels dominate drawing time)."""
    if axis.axis_name == "y":
        axis.axes.set_yscale("log")
    else:
        axis.axes.set_xscale("log")
    axis.set_major_locator(LogLocator(base=10, numticks=8))
    axis.set_minor_locator(NullLocator())
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"1e{round(math.log10(v))}" if v > 0 else "0"))


def _floor(values: Sequence[float | None]) -> float:
    positive = [v for v in values if v is not None and v > 0 and math.isfinite(v)]
    return min(positive) / 10 if positive else 1e-20


def drift_chart(points: list[dict[str, Any]], stages: list[tuple[int, int, str]], blames: list[tuple[str, int, str]],
                title: str) -> str:  # fmt: skip
    """Error of every tapped call in execution order: relative L2 (top) and max |Δ| (bottom), log scale,
    chained and isolated, each with its tolerance (dashed), failing calls marked, the blamed call a red line; judged
    at a reduced precision, the official model's own error at that precision (dotted) beside the candidate's."""
    fig = Figure(figsize=(12, 6.0))
    axes = fig.subplots(2, 1, sharex=True)
    fig.subplots_adjust(left=0.07, right=0.99, top=0.8, bottom=0.16, hspace=0.08)
    n = max(len(points), 1)
    names = list(dict.fromkeys(name for _, _, name in stages))
    tints = {name: STAGE_TINTS[i % len(STAGE_TINTS)] for i, name in enumerate(names)}
    for ax, metric, label in zip(axes, ("rel", "abs"), ("relative L2", "max |Δ|")):
        values = [p[m].get(metric) for p in points for m in ("chained", "isolated") if m in p]
        thresholds = [p[m].get(metric + "_thr") for p in points for m in ("chained", "isolated") if m in p]
        floor = _floor(values + thresholds)
        for start, end, name in stages:
            ax.axvspan(start - 0.5, end + 0.5, color=tints[name], lw=0, zorder=0)
        for mode, colour in MODE_COLOURS.items():
            xs = [p["x"] for p in points if mode in p and p[mode].get(metric) is not None]
            ys = [max(p[mode][metric], floor) for p in points if mode in p and p[mode].get(metric) is not None]
            if not xs:
                continue
            ax.plot(xs, ys, lw=1.0, color=colour, label=mode, zorder=2, marker="." if len(xs) < 60 else None, ms=3)
            tx = [p["x"] for p in points if mode in p and p[mode].get(metric + "_thr") is not None]
            ty = [p[mode][metric + "_thr"] for p in points if mode in p and p[mode].get(metric + "_thr") is not None]
            if tx:
                ax.step(tx, ty, where="mid", ls="--", lw=0.8, color=colour, alpha=0.75, zorder=1,
                        label=f"{mode} tolerance")  # fmt: skip
            ox = [p["x"] for p in points if mode in p and p[mode].get(metric + "_official") is not None]
            if ox:  # the official model's own error at the precision the candidate is judged at
                oy = [max(p[mode][metric + "_official"], floor) for p in points
                      if mode in p and p[mode].get(metric + "_official") is not None]  # fmt: skip
                precision = next(p[mode]["precision"] for p in points if mode in p and p[mode].get("precision"))
                ax.plot(ox, oy, lw=1.6, ls=":", color="#333333" if mode == "chained" else "#8a5a00", zorder=2.5,
                        label=f"official {precision} error ({mode})")  # fmt: skip
            fx = [p["x"] for p in points if mode in p and p[mode].get("fail") and p[mode].get(metric) is not None]
            fy = [
                max(p[mode][metric], floor)
                for p in points
                if mode in p and p[mode].get("fail") and p[mode].get(metric) is not None
            ]
            if fx:
                ax.scatter(fx, fy, s=16, color=FAIL_COLOUR, marker="o" if mode == "chained" else "x", zorder=3,
                           label=f"{mode} fails", lw=1)  # fmt: skip
        for mode, x, _ in blames:
            ax.axvline(x, color=BLAME_COLOUR, lw=1.4, ls="-" if mode == "chained" else ":", zorder=4)
        _log_axis(ax.yaxis)
        ax.set_ylabel(label)
        ax.grid(True, which="major", axis="y", color="#dddddd", lw=0.6)
        ax.set_xlim(-0.5, n - 0.5)
        ax.text(0.002, 0.02, "exact (0) values sit on the bottom edge", transform=ax.transAxes, fontsize=7,
                color="#777777")  # fmt: skip
    axes[1].set_xlabel("tapped call, in execution order")
    handles, labels = axes[0].get_legend_handles_labels()
    seen: dict[str, Any] = {}
    for h, lab in zip(handles, labels):
        seen.setdefault(lab, h)
    fig.legend(seen.values(), seen.keys(), fontsize=7, ncol=8, loc="upper right", bbox_to_anchor=(0.995, 0.95),
               frameon=False)  # fmt: skip
    # which band is which stage, also where a band is too narrow to carry its name
    from matplotlib.patches import Patch

    fig.legend([Patch(facecolor=tints[name], edgecolor="#bbbbbb", lw=0.5) for name in names], names, fontsize=7,
               ncol=min(len(names), 6), loc="lower left", bbox_to_anchor=(0.065, 0.0), frameon=False,
               title="stages (background bands)", title_fontsize=7, alignment="left")  # fmt: skip
    transform = blended_transform_factory(axes[0].transData, axes[0].transAxes)
    for start, end, name in stages:
        if (end - start + 1) / n >= 0.04:
            axes[0].text((start + end) / 2, 1.01, name, transform=transform, ha="center", va="bottom", fontsize=7,
                         color="#555555", clip_on=False)  # fmt: skip
    labels_at: dict[int, list[str]] = {}
    for mode, x, name in blames:
        labels_at.setdefault(x, []).append(f"{mode}: {name}" if len({b[2] for b in blames}) > 1 else mode)
    for x, texts in labels_at.items():
        label = "blamed (" + ", ".join(texts) + ")" + (f": {blames[0][2]}" if len({b[2] for b in blames}) == 1 else "")
        axes[0].annotate(label, xy=(x, 1.0), xycoords=transform, xytext=(0, 22),
                         textcoords="offset points", ha="center" if 0.2 < x / n < 0.8 else ("left" if x / n <= 0.2 else "right"),
                         fontsize=8, color=BLAME_COLOUR, arrowprops={"arrowstyle": "-", "color": BLAME_COLOUR, "lw": 0.8})  # fmt: skip
    fig.suptitle(title, fontsize=10, x=0.07, ha="left", y=0.995)
    return _uri(fig)


def pool_abs(error: np.ndarray, rows: int = HEATMAP_ROWS, cols: int = HEATMAP_COLS) -> np.ndarray:
    """Max-pool |error| (2-D) down to at most rows × cols cells."""
    a = np.abs(np.asarray(error, dtype=np.float64))
    r, c = a.shape
    fr, fc = max(1, math.ceil(r / rows)), max(1, math.ceil(c / cols))
    if fr == 1 and fc == 1:
        return a
    padded = np.zeros((math.ceil(r / fr) * fr, math.ceil(c / fc) * fc))
    padded[:r, :c] = a
    return padded.reshape(padded.shape[0] // fr, fr, padded.shape[1] // fc, fc).max(axis=(1, 3))


def error_heatmap(error: np.ndarray, row_label: str, col_label: str, thresholds: dict[str, float], title: str) -> str:
    """|candidate − golden| per element (channels × time, max-pooled) beside the histogram of log10 |Δ|."""
    fig = Figure(figsize=(12, 3.6))
    grid = fig.add_gridspec(1, 2, width_ratios=(3.2, 1.2), wspace=0.22, left=0.06, right=0.98, top=0.86, bottom=0.16)
    ax, hist = fig.add_subplot(grid[0]), fig.add_subplot(grid[1])
    pooled = pool_abs(error)
    positive = pooled[pooled > 0]
    low = float(np.log10(positive.min())) if positive.size else -20.0
    image = np.log10(np.where(pooled > 0, pooled, 10.0**low))
    shown = ax.imshow(image, aspect="auto", interpolation="nearest", cmap="magma", origin="upper")
    fig.colorbar(shown, ax=ax, pad=0.01, fraction=0.04).set_label("log10 |Δ|", fontsize=8)
    r, c = error.shape
    note = f" (max-pooled from {r}×{c})" if pooled.shape != error.shape else ""
    ax.set_xlabel(f"{col_label} ({c}){note}", fontsize=8)
    ax.set_ylabel(f"{row_label} ({r})", fontsize=8)
    if pooled.shape != error.shape:
        ax.set_xticks([])
        ax.set_yticks([])
    elif r <= 16:
        ax.set_yticks(range(r))
    flat = np.abs(np.asarray(error, dtype=np.float64)).reshape(-1)
    nonzero = flat[flat > 0]
    if nonzero.size:
        hist.hist(np.log10(nonzero), bins=60, color="#555577")
    hist.set_xlabel("log10 |Δ| per element", fontsize=8)
    hist.set_ylabel("elements", fontsize=8)
    for name, colour in (("max_abs", FAIL_COLOUR), ("atol", "#1f77b4")):
        value = thresholds.get(name)
        if value and value > 0:
            hist.axvline(math.log10(value), color=colour, lw=1.2, ls="--", label=f"{name} tolerance {value:.2g}")
    if flat.size - nonzero.size:
        hist.text(
            0.02, 0.95, f"{flat.size - nonzero.size} exact elements", transform=hist.transAxes, fontsize=7, va="top"
        )
    if hist.get_legend_handles_labels()[0]:
        hist.legend(fontsize=7, loc="upper right")
    for a in (ax, hist):
        a.tick_params(labelsize=7)
    fig.suptitle(title, fontsize=9, x=0.06, ha="left")
    return _uri(fig)


def _envelope(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = x.size
    block = max(1, math.ceil(n / ENVELOPE_POINTS))
    padded = np.pad(x, (0, (-n) % block), mode="edge")
    blocks = padded.reshape(-1, block)
    return np.arange(blocks.shape[0]) * block, blocks.min(axis=1), blocks.max(axis=1)


def audio(golden: np.ndarray, candidate: np.ndarray | None, sample_rate: int, golden_mel: np.ndarray,
          candidate_mel: np.ndarray | None, title: str) -> str:  # fmt: skip
    """Waveforms (golden and candidate overlaid, their difference; min/max envelopes when long) above log-mel
    spectrograms side by side (golden, candidate, candidate − golden in dB)."""
    both = candidate is not None and candidate_mel is not None
    fig = Figure(figsize=(12, 6.2 if both else 4.6))
    grid = fig.add_gridspec(3 if both else 2, 3, height_ratios=(1, 0.8, 1.9) if both else (1, 1.9), hspace=0.5,
                            wspace=0.28, left=0.06, right=0.97, top=0.92, bottom=0.08)  # fmt: skip
    wave = fig.add_subplot(grid[0, :])
    series = [("golden", golden, "#333333")] + ([("candidate", candidate, MODE_COLOURS["chained"])] if both else [])
    for name, x, colour in series:
        t, lo, hi = _envelope(np.asarray(x, dtype=np.float64).reshape(-1))
        wave.fill_between(t / sample_rate, lo, hi, color=colour, alpha=0.55 if name == "golden" else 0.45, lw=0.6,
                          label=name, step="mid")  # fmt: skip
    wave.legend(fontsize=7, loc="upper right")
    wave.set_ylabel("amplitude", fontsize=8)
    if both:
        diff_ax = fig.add_subplot(grid[1, :], sharex=wave)
        diff = np.asarray(candidate, dtype=np.float64).reshape(-1) - np.asarray(golden, dtype=np.float64).reshape(-1)
        t, lo, hi = _envelope(diff)
        diff_ax.fill_between(t / sample_rate, lo, hi, color=FAIL_COLOUR, lw=0.6, step="mid")
        diff_ax.set_ylabel("cand. − golden", fontsize=8)
        diff_ax.set_xlabel("seconds", fontsize=8)
        diff_ax.tick_params(labelsize=7)
    else:
        wave.set_xlabel("seconds", fontsize=8)
    wave.tick_params(labelsize=7)
    top = float(golden_mel.max())
    extent = (0.0, golden.size / sample_rate, 0.0, float(golden_mel.shape[0]))
    row = 2 if both else 1
    panels: list[tuple[str, np.ndarray, str, float, float]] = [("golden (dB)", golden_mel, "viridis", top - 80, top)]
    if candidate is not None and candidate_mel is not None:
        diff_mel = np.maximum(candidate_mel, top - 80) - np.maximum(golden_mel, top - 80)
        bound = max(float(np.abs(diff_mel).max()), 1e-6)
        panels += [("candidate (dB)", candidate_mel, "viridis", top - 80, top),
                   ("candidate − golden (dB)", diff_mel, "RdBu_r", -bound, bound)]  # fmt: skip
    for i, (name, image, cmap, lo_v, hi_v) in enumerate(panels):
        ax = fig.add_subplot(grid[row, i])
        shown = ax.imshow(image, origin="lower", aspect="auto", cmap=cmap, vmin=lo_v, vmax=hi_v, extent=extent)
        ax.set_title(f"log-mel, {name}", fontsize=8)
        ax.set_xlabel("seconds", fontsize=8)
        ax.tick_params(labelsize=7)
        fig.colorbar(shown, ax=ax, pad=0.02, fraction=0.06).ax.tick_params(labelsize=7)
        if i == 0:
            ax.set_ylabel("mel band", fontsize=8)
    fig.suptitle(title, fontsize=9, x=0.06, ha="left")
    return _uri(fig)


def token_margins(series: dict[str, list[tuple[int, float, bool]]], near_tie: float, title: str) -> str:
    """The golden's top-1 margin per generation step (log scale), one line per logits head; disagreeing steps red."""
    fig = Figure(figsize=(12, 2.8))
    ax = fig.add_subplot(1, 1, 1)
    fig.subplots_adjust(left=0.07, right=0.99, top=0.86, bottom=0.18)
    cmap = ListedColormap(["#1f5fbf", "#2ca02c", "#9467bd", "#8c564b", "#17becf", "#7f7f7f", "#bcbd22", "#e377c2"])
    values = [m for points in series.values() for _, m, _ in points]
    floor = _floor([*values, near_tie])
    for i, (name, points) in enumerate(series.items()):
        xs = [p[0] for p in points]
        ys = [max(p[1], floor) for p in points]
        ax.plot(xs, ys, lw=1, marker=".", ms=4, color=cmap(i % cmap.N), label=name)
        bad = [(x, max(m, floor)) for x, m, disagree in points if disagree]
        if bad:
            ax.scatter([b[0] for b in bad], [b[1] for b in bad], s=30, color=FAIL_COLOUR, zorder=3)
    if near_tie > 0:
        ax.axhline(near_tie, color=FAIL_COLOUR, ls="--", lw=0.8, label=f"near-tie margin {near_tie:g}")
    _log_axis(ax.yaxis)
    ax.set_xlabel("generation step (call)", fontsize=8)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("golden top-1 margin", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7, ncol=min(len(series) + 1, 6), loc="lower right", framealpha=0.85)
    fig.suptitle(title, fontsize=9, x=0.07, ha="left")
    return _uri(fig)
