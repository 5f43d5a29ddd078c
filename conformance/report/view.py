"""What the HTML report shows, computed from summary.json, the run history, the candidate arrays the run
kept and (when it is still there) the golden store. numpy + h5py + matplotlib only.

The summary of a full run holds tens of thousands of tensor verdicts; the page never lists them all. It
aggregates them per call (the drift chart), per module (the tree, as compact JSON the page's script turns
into a collapsible tree) and keeps short, capped tables of the worst and the failing tensors.
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import subjects
from ..compare.provenance import difference_line
from ..errors import ConformanceError
from . import figures
from .audio import MAX_PLAYER_SECONDS, compare_audio, wav_data_uri
from .writers import flat_items, module_rows

FAILING = ("fail", "error")
STATUS_ORDER = ("pass", "xpass", "skipped", "xfail", "not_covered", "interface_mismatch", "fail", "error")
STATUS_RANK = {s: i for i, s in enumerate(STATUS_ORDER)}
TOKEN_CLASSES = ("agree", "exact_tie", "near_tie", "token_swap", "logit_drift")
TOKEN_RANK = {c: i for i, c in enumerate(TOKEN_CLASSES)}
WORST_ROWS = 10  # worst tensors listed per case
FAILING_ROWS = 30  # failing tensors listed per case (the rest: summary.json)
TOKEN_FRAMES = 400  # frames drawn in a token grid
HISTORY_RUNS = 40  # runs drawn in a trend
GROWTH_FACTOR = 1.1  # a module is flagged when its worst rel L2 grew by more than this factor since the last run
FLAG_ROWS = 60
INF = 1e300  # how an infinite margin travels in the tree's JSON


def num(value: Any) -> float | None:
    """A metric from summary.json as a float ("inf"/"nan" strings included); None if absent or not a number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if value == "inf":
        return math.inf
    if value == "-inf":
        return -math.inf
    if value == "nan":
        return math.nan
    return None


def fmt(value: Any, digits: int = 3) -> str:
    """Short human form of a number for the page."""
    v = num(value)
    if v is None:
        return "—" if value is None or value == "" else str(value)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "∞" if v > 0 else "−∞"
    if v == 0:
        return "0"
    if v == int(v) and abs(v) < 1e6:
        return str(int(v))
    if 1e-3 <= abs(v) < 1e4:
        return f"{v:.{digits}g}"
    return f"{v:.{max(digits - 1, 1)}e}"


def anchor(name: str) -> str:
    return "case-" + re.sub(r"[^A-Za-z0-9_-]+", "-", name)


def stage_of(key: str) -> str:
    """The pipeline stage a module belongs to: its first two path components (or the method of the root)."""
    module, _, method = key.partition(":")
    if not module:
        return ":" + method
    parts = module.split(".")
    return ".".join(parts[:2])


def _tensor_name(t: dict[str, Any]) -> str:
    return f"{t['key']}#{t['call']}/{t['role']}"


def _is_output(t: dict[str, Any]) -> bool:
    return str(t["role"]).startswith("outputs")


def _thresholds_text(thresholds: dict[str, Any]) -> str:
    return ", ".join(f"{k} {fmt(v)}" for k, v in thresholds.items())


def tensor_row(t: dict[str, Any]) -> dict[str, Any]:
    metrics = t.get("metrics") or {}
    return {
        "mode": t["mode"], "name": _tensor_name(t), "key": t["key"], "call": t["call"], "role": t["role"],
        "status": t["status"], "shape": "×".join(str(s) for s in t.get("shape") or []) or "scalar",
        "dtype": t.get("dtype", ""), "rel_l2": fmt(metrics.get("rel_l2")), "max_abs": fmt(metrics.get("max_abs")),
        "thresholds": _thresholds_text(t.get("thresholds") or {}),
        "min_tolerance": _thresholds_text(t.get("min_tolerance") or {}), "margin": fmt(t.get("margin")),
        "margin_value": num(t.get("margin")) or 0.0, "source": t.get("source", ""), "message": t.get("message", ""),
        "xfail": t.get("xfail") or "", "note": t.get("note") or "", "precision": t.get("precision") or "",
        "noise": _thresholds_text({k: v for k, v in (t.get("noise") or {}).items() if k in ("rel_l2", "max_abs")}),
    }  # fmt: skip


# -- drift chart ---------------------------------------------------------------------------------------------


def _keep_worst(slot: dict[str, Any], metric: str, value: float | None, threshold: float | None) -> None:
    """Keep, per call and mode, the output whose metric uses most of its tolerance (or the largest one)."""
    if value is None or math.isnan(value):
        return
    score = value / threshold if threshold else None
    old = slot.get(metric)
    old_score = slot.get(metric + "_score")
    better = (
        old is None
        or (score is not None and (old_score is None or score > old_score))
        or (score is None and old_score is None and value > old)
    )
    if better:
        slot[metric], slot[metric + "_thr"], slot[metric + "_score"] = value, threshold, score


def drift_points(case: dict[str, Any]) -> list[dict[str, Any]]:
    """One point per call in execution order, per mode the worst output's rel L2 and max |Δ| with thresholds."""
    calls: dict[tuple[str, int], dict[str, Any]] = {}
    for t in case["tensors"]:
        if not _is_output(t):
            continue
        entry = calls.setdefault((t["key"], t["call"]), {"key": t["key"], "call": t["call"], "seq": t["seq_end"]})
        entry["seq"] = min(entry["seq"], t["seq_end"])
        slot = entry.setdefault(t["mode"], {"fail": False, "status": "pass"})
        metrics = t.get("metrics") or {}
        thresholds = t.get("thresholds") or {}
        _keep_worst(slot, "rel", num(metrics.get("rel_l2")), num(thresholds.get("rel_l2")))
        _keep_worst(slot, "abs", num(metrics.get("max_abs")), num(thresholds.get("max_abs")))
        if t.get("precision"):  # the official model's own error at the precision judged at, for the overlay
            noise = t.get("noise") or {}
            for metric, name in (("rel", "rel_l2"), ("abs", "max_abs")):
                value = num(noise.get(name))
                if value is not None and value > (slot.get(metric + "_official") or -1.0):
                    slot[metric + "_official"] = value
            slot["precision"] = t["precision"]
        if t["status"] in FAILING:
            slot["fail"] = True
        if STATUS_RANK.get(t["status"], 0) > STATUS_RANK.get(slot["status"], 0):
            slot["status"] = t["status"]
    points = sorted(calls.values(), key=lambda p: (p["seq"], p["key"], p["call"]))
    for x, point in enumerate(points):
        point["x"] = x
    return points


def _measured(points: list[dict[str, Any]]) -> bool:
    return any(p.get(m, {}).get(k) is not None for p in points for m in ("chained", "isolated") for k in ("rel", "abs"))


def stages(points: list[dict[str, Any]]) -> list[tuple[int, int, str]]:
    out: list[tuple[int, int, str]] = []
    for p in points:
        name = stage_of(p["key"])
        if out and out[-1][2] == name:
            out[-1] = (out[-1][0], p["x"], name)
        else:
            out.append((p["x"], p["x"], name))
    return out


# -- module tree ---------------------------------------------------------------------------------------------


def _round(value: float | None) -> float | None:
    if value is None or math.isnan(value):
        return None
    if math.isinf(value):
        return INF if value > 0 else -INF
    return float(f"{value:.4g}")


def tree_data(summary: dict[str, Any]) -> dict[str, Any]:
    """Compact rows (case, mode, module) → worst status, margin, metrics, minimum passing tolerance, counts.
    The page's script aggregates them into the module tree for the selected case and mode."""
    cases = [c["case"] for c in summary["cases"]]
    modes = ["isolated", "chained"]
    keys: dict[str, int] = {}
    rows = []
    for ci, case in enumerate(summary["cases"]):
        groups: dict[tuple[str, str], dict[str, Any]] = {}
        for t in case["tensors"]:
            if not _is_output(t) or t["mode"] not in modes:
                continue
            g = groups.get((t["mode"], t["key"]))
            if g is None:
                g = groups[(t["mode"], t["key"])] = {"status": "pass", "margin": 0.0, "rel": None, "abs": None,
                                                     "mt_rel": None, "mt_abs": None, "thr_rel": None, "thr_abs": None,
                                                     "calls": set(), "tensors": 0, "fails": 0, "seq": t["seq_end"],
                                                     "worst": ""}  # fmt: skip
            g["tensors"] += 1
            g["calls"].add(t["call"])
            g["seq"] = min(g["seq"], t["seq_end"])
            if STATUS_RANK.get(t["status"], 0) > STATUS_RANK.get(g["status"], 0):
                g["status"] = t["status"]
            if t["status"] in FAILING:
                g["fails"] += 1
            metrics, thresholds, minimum = (
                t.get("metrics") or {},
                t.get("thresholds") or {},
                t.get("min_tolerance") or {},
            )
            margin = num(t.get("margin"))
            if margin is not None and not math.isnan(margin) and (margin > g["margin"] or not g["worst"]):
                g["margin"] = max(margin, g["margin"])
                g["worst"] = f"#{t['call']}/{t['role']}"
                g["thr_rel"], g["thr_abs"] = num(thresholds.get("rel_l2")), num(thresholds.get("max_abs"))
            for name, metric in (("rel", "rel_l2"), ("abs", "max_abs")):
                v = num(metrics.get(metric))
                if v is not None and not math.isnan(v) and (g[name] is None or v > g[name]):
                    g[name] = v
            for name, metric in (("mt_rel", "rel_l2"), ("mt_abs", "max_abs")):
                v = num(minimum.get(metric))
                if v is not None and not math.isnan(v) and (g[name] is None or v > g[name]):
                    g[name] = v
        for (mode, key), g in groups.items():
            ki = keys.setdefault(key, len(keys))
            rows.append([ci, modes.index(mode), ki, STATUS_ORDER.index(g["status"]) if g["status"] in STATUS_ORDER else 0,
                         _round(g["margin"]), _round(g["rel"]), _round(g["abs"]), _round(g["mt_rel"]),
                         _round(g["mt_abs"]), _round(g["thr_rel"]), _round(g["thr_abs"]), len(g["calls"]),
                         g["tensors"], g["fails"], g["seq"], g["worst"]])  # fmt: skip
    return {"cases": cases, "modes": modes, "statuses": list(STATUS_ORDER), "keys": list(keys), "rows": rows,
            "columns": ["case", "mode", "key", "status", "margin", "rel_l2", "max_abs", "min_tol_rel_l2",
                        "min_tol_max_abs", "thr_rel_l2", "thr_max_abs", "calls", "tensors", "fails", "seq", "worst"]}  # fmt: skip


def json_for_script(data: Any) -> str:
    """JSON safe inside <script type="application/json">."""
    return json.dumps(data, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c").replace("&", "\\u0026")


# -- per-case panels -------------------------------------------------------------------------------------------

CONV_HINTS = ("conv", "block", "snake", "upsample", "downsample", "tdnn", "res2net", "se_block", "asp", "act",
              "pool", "decoder.decoder", "encoder.encoder", "resnet")  # fmt: skip


def channels_time(array: np.ndarray, key: str) -> tuple[np.ndarray, str, str]:
    """A tensor as a 2-D (channels × time) picture. Convolutional modules are laid out (…, channels, time);
    others (transformers, linear layers) (…, time, channels). Leading dims are stacked."""
    a = np.asarray(array, dtype=np.float64)
    while a.ndim > 2 and a.shape[0] == 1:
        a = a[0]
    if a.ndim == 0:
        return a.reshape(1, 1), "value", "value"
    if a.ndim == 1:
        return a.reshape(1, -1), "row", "element (dim 0)"
    lead = " · stacked leading dims" if a.ndim > 2 else ""
    if any(h in key for h in CONV_HINTS):
        return a.reshape(-1, a.shape[-1]), f"channels (dim −2{lead})", "time (dim −1)"
    return a.reshape(-1, a.shape[-1]).T, "channels (dim −1)", f"time (dim −2{lead})"


@dataclass
class Context:
    """What the panels can draw on besides summary.json."""

    golden: Any = None  # an open GoldenStore, or None
    golden_note: str = ""
    artifacts: dict[str, Any] = field(default_factory=dict)

    def case(self, name: str) -> Any:
        if self.golden is None or name not in self.golden.cases:
            return None
        return self.golden.case(name)


def _candidate_value(ctx: Context, case: str, key: str, call: int, role: str, mode: str) -> np.ndarray | None:
    slot = ctx.artifacts.get(case, {}).get((key, int(call)), {})
    value = slot.get(role if mode == "chained" else f"isolated:{role}")
    return value if isinstance(value, np.ndarray) else None


def divergence_panels(case: dict[str, Any], ctx: Context) -> list[dict[str, Any]]:
    """One panel per blamed call (chained and isolated usually blame the same one): the call, its inputs' and
    outputs' verdicts in both modes, and per blaming mode the per-element error of its worst failing output
    (when the candidate's values were kept and the golden store is readable)."""
    panels: dict[tuple[str, int], dict[str, Any]] = {}
    golden_case = ctx.case(case["case"])
    for mode in ("chained", "isolated", "repeat"):  # repeat: the first call that differs between runs (--repeat)
        blame = case["blame"].get(mode)
        if not blame:
            continue
        index = (blame["key"], blame["call"])
        if index not in panels:
            own = [t for t in case["tensors"] if t["key"] == blame["key"] and t["call"] == blame["call"]]
            outputs = [tensor_row(t) for t in own if _is_output(t)]
            outputs.sort(key=lambda r: (r["mode"] != mode, r["role"]))
            panels[index] = {"modes": [], "key": blame["key"], "call": blame["call"], "reasons": [], "own": own,
                             "inputs": [tensor_row(t) for t in own if not _is_output(t)], "outputs": outputs,
                             "worst": [], "replay_bundle": None}  # fmt: skip
        panel = panels[index]
        panel["replay_bundle"] = panel["replay_bundle"] or blame.get("replay_bundle")
        panel["modes"].append(mode)
        panel["reasons"].append((mode, blame["reason"]))
        failing = [t for t in panel["own"] if t["mode"] == mode and _is_output(t) and t["status"] in FAILING]
        if failing:
            worst = max(failing, key=lambda t: num(t.get("margin")) or 0.0)
            panel["worst"].append(
                {"mode": mode, **tensor_row(worst), **_heatmap(case["case"], worst, mode, golden_case, ctx)}
            )
    out = []
    for panel in panels.values():
        panel.pop("own")
        if "isolated" in panel["modes"]:
            panel["inputs_note"] = ("Isolated mode feeds the module the golden inputs, so there its inputs agree by "
                                    "construction" + ("; the rows above are its inputs in the chained run." if panel["inputs"] else "."))  # fmt: skip
        out.append(panel)
    return out


def _heatmap(case_name: str, worst: dict[str, Any], mode: str, golden_case: Any, ctx: Context) -> dict[str, Any]:
    empty: dict[str, Any] = {"heatmap": None, "heatmap_stats": None}
    value = _candidate_value(ctx, case_name, worst["key"], worst["call"], worst["role"], mode)
    if value is None:
        return {**empty, "heatmap_note": "The candidate's values of this tensor were not kept (no artifacts.npz beside "
                                         "the summary, or over the run's byte budget): per-element error not shown."}  # fmt: skip
    if golden_case is None:
        return {
            **empty,
            "heatmap_note": f"Golden store not available ({ctx.golden_note}): per-element error not shown.",
        }
    try:
        golden = golden_case.tensor(worst["key"], worst["call"], worst["role"])
    except Exception as exc:  # a stats-tier tensor, a damaged file: the panel says so and the page still renders
        return {**empty, "heatmap_note": f"Golden tensor not readable: {exc}"}
    if golden.shape != value.shape:
        return {**empty, "heatmap_note": f"Shapes differ (golden {list(golden.shape)}, candidate {list(value.shape)})."}
    error = value.astype(np.float64) - golden.astype(np.float64)
    picture, rows, cols = channels_time(error, worst["key"])
    flat = np.abs(error).reshape(-1)
    worst_index = tuple(int(i) for i in np.unravel_index(int(np.argmax(flat)), error.shape)) if flat.size else ()
    thresholds = {k: v for k, v in ((k, num(v)) for k, v in (worst.get("thresholds") or {}).items()) if v is not None}
    limit = thresholds.get("max_abs") or thresholds.get("atol")
    share = float(np.mean(flat > limit)) if limit and flat.size else None
    title = f"{mode}: {_tensor_name(worst)}  |candidate − golden| per element"
    stats = {"max_abs": fmt(flat.max() if flat.size else 0), "at": list(worst_index),
             "mean_abs": fmt(flat.mean() if flat.size else 0),
             "share_over": fmt(share * 100 if share is not None else None), "limit": fmt(limit)}  # fmt: skip
    return {
        "heatmap_note": "",
        "heatmap": figures.error_heatmap(picture, rows, cols, thresholds, title),
        "heatmap_stats": stats,
    }


def _find_kept_output(golden_case: Any, kept: dict[tuple[str, int], dict[str, np.ndarray]], reference: np.ndarray,
                      kinds: str) -> tuple[np.ndarray, str] | None:  # fmt: skip
    """The chained candidate array whose golden counterpart is this case output (matched by value, not name).
    A case output may be stored in another dtype than the module output it came from (a float64 golden keeps
    its waveform in float32), so the module's golden is cast to the output's dtype before comparing."""
    flat = reference.reshape(-1)
    found = None
    for (key, call), roles in kept.items():
        for role, value in roles.items():
            if role.startswith("isolated:") or not isinstance(value, np.ndarray) or value.dtype.kind not in kinds:
                continue
            if value.size != flat.size:
                continue
            try:
                golden = golden_case.tensor(key, call, role)
            except Exception:
                continue
            if golden.size == flat.size and np.array_equal(golden.reshape(-1).astype(flat.dtype), flat):
                seq = golden_case.get_call(key, call).seq_end if golden_case.has_call(key, call) else 0
                if found is None or seq > found[0]:
                    found = (seq, value, f"{key}#{call}/{role}")
    return (found[1], found[2]) if found else None


class TokenGrid:
    """The geometry of a case's token grids: one column per step along the layout's step axis from where generation
    starts (`start`: a causal LM's sequences begin with the prompt), one row per index of its other axes (a 1-D
    layout, a causal LM's positions, is one row; a batch of sequences one row each)."""

    def __init__(self, axes: list[str], step_axis: int, shape: tuple[int, ...], start: int = 0) -> None:
        self.axes = axes
        self.step_axis = step_axis if axes else 0
        self.shape = shape
        self.start = start
        self.other_axes = [a for i, a in enumerate(axes) if i != self.step_axis]
        self.other_shape = tuple(n for i, n in enumerate(shape) if i != self.step_axis)
        self.steps = max(shape[self.step_axis] - start, 0) if shape else 0
        self.rows = int(np.prod(self.other_shape)) if self.other_shape else 1

    def cell(self, index: list[int] | tuple[int, ...]) -> tuple[int, int]:
        """(row, column) of a token index; a column below 0 for a given (not generated) token."""
        rest = [int(i) for k, i in enumerate(index) if k != self.step_axis]
        row = int(np.ravel_multi_index(rest, self.other_shape)) if rest else 0
        return row, int(index[self.step_axis]) - self.start

    def row_names(self) -> list[str]:
        if not self.other_shape:
            return [""]
        return [",".join(str(i) for i in np.unravel_index(row, self.other_shape)) for row in range(self.rows)]

    def describe(self, index: list[int] | tuple[int, ...]) -> str:
        return ", ".join(f"{axis} {int(i)}" for axis, i in zip(self.axes, index))


def token_view(case: dict[str, Any], ctx: Context, near_tie: float) -> dict[str, Any] | None:
    """Token agreement on a grid over the subject's token axes (one column per generation step, one row per index
    of the other axes: codebooks, or a single row for 1-D tokens): teacher-forced (candidate logits on the golden
    history) and free-running (the tokens the candidate generated), each disagreement with its class; and the
    golden's top-1 margin per step."""
    # the whole model run for each step on the golden history is the headline; a logits head alone re-run on
    # golden hidden states agrees for a model that is wrong before its head, so it only stands in when no
    # whole-model step was replayed
    heads_only = [t for t in case.get("tokens", []) if t["mode"] == "teacher_forced"]
    model_level = [t for t in case.get("tokens", []) if t["mode"] == "teacher_forced_model" and t.get("index")]
    forced = model_level or heads_only
    layout = case.get("token_layout") or {}
    axes = list(layout.get("axes") or (model_level[0].get("axes") if model_level else []) or [])
    golden_case = ctx.case(case["case"])
    golden_tokens = candidate_tokens = None
    tokens_source = ""
    if layout and golden_case is not None:
        key, call, role = layout["location"]
        try:
            value = golden_case.tensor(key, int(call), role)
        except Exception:
            value = None
        if isinstance(value, np.ndarray) and value.dtype.kind in "iu" and value.ndim == len(axes) and value.size:
            golden_tokens = value
            mine = ctx.artifacts.get(case["case"], {}).get((key, int(call)), {}).get(role)
            if isinstance(mine, np.ndarray) and mine.shape == value.shape:
                candidate_tokens, tokens_source = mine, f"{key}#{call}/{role}"
    if not forced and golden_tokens is None:
        return None
    heads: list[str] = []
    for t in forced:
        if t["key"] not in heads:
            heads.append(t["key"])
    if golden_tokens is not None:
        shape = tuple(golden_tokens.shape)
    elif model_level:  # no golden tokens at hand: the grid spans the indices found
        shape = tuple(int(n) + 1 for n in np.max([t["index"] for t in model_level], axis=0))
    else:
        shape = ()
    grid = TokenGrid(axes, int(layout.get("step_axis", 0)), shape, int(layout.get("generated_from") or 0))
    # a head's call c is step c of its own row (heads in order of first use); a whole-model step names its index
    cells = [grid.cell(t["index"]) if model_level else (heads.index(t["key"]), t["call"]) for t in forced]
    forced, cells = [t for t, c in zip(forced, cells) if c[1] >= 0], [c for c in cells if c[1] >= 0]
    rows = max([grid.rows if shape else 0] + [row + 1 for row, _ in cells])
    steps = max([grid.steps] + [step + 1 for _, step in cells])
    row_names = grid.row_names() if shape else []
    row_names += [str(i) for i in range(len(row_names), rows)]
    labels = [""] * rows  # what decided each row: the head, or the whole model of the steps in it
    if model_level:
        for t, (row, _) in zip(forced, cells):
            labels[row] = t["key"]
    else:
        labels[: len(heads)] = heads
    shown = min(steps, TOKEN_FRAMES)
    # no logits (an encoder's tokens): no teacher-forced grid, only the tokens themselves
    tf_cells: list[list[dict[str, Any] | None]] | None = [[None] * shown for _ in range(rows)] if forced else None
    for t, (row, step) in zip(forced, cells):
        if step >= shown:
            continue
        assert tf_cells is not None
        old = tf_cells[row][step]
        if old is None or TOKEN_RANK.get(t["classification"], 0) > TOKEN_RANK.get(old["cls"], 0):
            tf_cells[row][step] = {"cls": t["classification"],
                                   "title": f"{t['key']}#{t['call']}: golden {t['golden_token']} (2nd {t['golden_second']}, "
                                            f"margin {fmt(t['margin'])}), candidate {t['candidate_token']}"}  # fmt: skip
    counts: dict[str, int] = defaultdict(int)
    for t in forced:
        counts[t["classification"]] += 1
    head_counts: dict[str, int] = defaultdict(int)
    for t in heads_only if model_level else []:
        head_counts[t["classification"]] += 1
    fr_cells: list[list[dict[str, Any] | None]] | None = None
    fr_counts: dict[str, int] = defaultdict(int)
    first = case.get("first_divergence") or {}
    first_index = tuple(first["index"]) if first.get("index") is not None else None
    if golden_tokens is not None and candidate_tokens is not None:
        fr_cells = [[None] * shown for _ in range(rows)]
        diverged = False
        # in generation order: step by step, and within a step the other axes in order
        order = sorted(np.ndindex(golden_tokens.shape), key=lambda i: (i[grid.step_axis], i))
        for index in order:
            row, step = grid.cell(index)
            if step >= shown or step < 0:  # not shown, or given (a prompt)
                continue
            g, c = int(golden_tokens[index]), int(candidate_tokens[index])
            if g == c:
                cls = "agree"
            elif not diverged:
                at_first = first_index == tuple(index)
                cls = str(first.get("classification") or "differs") if at_first else "differs"
                diverged = True
            else:
                cls = "after"
            fr_counts[cls] += 1
            fr_cells[row][step] = {"cls": cls, "title": f"{grid.describe(index)}: golden {g}, candidate {c}"}
    margins = {key: [(t["call"], num(t["margin"]) or 0.0, t["classification"] != "agree") for t in forced if t["key"] == key]
               for key in dict.fromkeys(h for h in heads if h)}  # fmt: skip
    figure = (
        figures.token_margins(margins, near_tie, f"{case['case']}: golden top-1 margin per step") if forced else None
    )
    step_axis = axes[grid.step_axis] if axes else "step"
    row_axis = ", ".join(grid.other_axes) if model_level or golden_tokens is not None else "head"
    return {
        "heads": labels, "row_names": row_names, "frames": shown, "frames_total": steps, "books": rows,
        "tf": tf_cells, "fr": fr_cells, "tf_counts": dict(counts), "fr_counts": dict(fr_counts), "first": first,
        "first_at": grid.describe(first_index) if first_index is not None else "", "margins": figure,
        "tf_level": "model" if model_level else "head", "tf_head_counts": dict(head_counts),
        "codes_source": tokens_source, "has_golden_codes": golden_tokens is not None, "axes": axes,
        "step_axis": step_axis, "row_axis": row_axis, "first_step": grid.start if model_level or golden_tokens is not None else 0,
    }  # fmt: skip


def audio_views(case: dict[str, Any], ctx: Context) -> list[dict[str, Any]]:
    """One audio panel per signal the case's subject declares (summary.json's `signals`): golden and candidate
    waveforms as players, their difference, log-mel spectrograms, SNR, log-mel distance. None for a case without
    signals (a language model's)."""
    golden_case = ctx.case(case["case"])
    if golden_case is None:
        return []
    views = []
    for signal in case.get("signals") or []:
        if signal.get("kind", "audio") != "audio":
            continue
        view = audio_view(case, ctx, golden_case, str(signal["output"]), int(signal["sample_rate"]))
        if view is not None:
            views.append(view)
    return views


def audio_view(case: dict[str, Any], ctx: Context, golden_case: Any, output: str, sr: int) -> dict[str, Any] | None:
    """The panel of one audio output at sample rate `sr`."""
    try:
        if output not in golden_case.output_names():
            return None
        stored = np.asarray(golden_case.output(output))
    except Exception:
        return None
    golden = stored.astype(np.float64).reshape(-1)
    found = _find_kept_output(golden_case, ctx.artifacts.get(case["case"], {}), stored, "f")
    candidate = found[0].astype(np.float64).reshape(-1) if found else None
    cut = int(MAX_PLAYER_SECONDS * sr)
    peak = max(
        float(np.abs(golden).max(initial=0.0)),
        float(np.abs(candidate).max(initial=0.0)) if candidate is not None else 0.0,
    )
    gain = 0.9 / peak if peak > 0 else 1.0
    view: dict[str, Any] = {"output": output, "sample_rate": sr, "seconds": fmt(golden.size / sr), "samples": golden.size,
                            "cut": golden.size > cut, "player_seconds": fmt(MAX_PLAYER_SECONDS),
                            "golden_wav": wav_data_uri(golden[:cut], sr, gain), "gain_db": fmt(20 * math.log10(gain)),
                            "source": found[1] if found else ""}  # fmt: skip
    comparison = compare_audio(golden, candidate if candidate is not None else golden, sr)
    if candidate is not None:
        diff = candidate - golden
        dpeak = float(np.abs(diff).max(initial=0.0))
        dgain = 0.9 / dpeak if dpeak > 0 else 1.0
        view.update(candidate_wav=wav_data_uri(candidate[:cut], sr, gain), diff_wav=wav_data_uri(diff[:cut], sr, dgain),
                    diff_gain_db=fmt(20 * math.log10(dgain / gain)) if dpeak > 0 else "—", snr=fmt(comparison.snr_db),
                    mel_distance=fmt(comparison.log_mel_distance_db), max_abs=fmt(dpeak))  # fmt: skip
    view["figure"] = None  # without the candidate's waveform, the golden alone is left to its player
    if candidate is not None:
        view["figure"] = figures.audio(golden, candidate, sr, comparison.golden_mel, comparison.candidate_mel,
                                       f"{case['case']}: waveform and log-mel spectrogram (n_fft {comparison.n_fft}, "
                                       f"hop {comparison.hop}, {sr} Hz)")  # fmt: skip
    return view


def subject_panels(case: dict[str, Any], ctx: Context) -> list[dict[str, Any]]:
    """The case's subject's own report sections (Subject.report_panels), when the subject is installed here."""
    name = case.get("subject")
    if not name:
        return []
    try:
        subject = subjects.get(str(name))
    except ConformanceError:  # a report rendered where the subject is not installed: its own panels are left out
        return []
    panels = subject.report_panels(case, ctx.case(case["case"]))
    return [{"title": p.title, "text": p.text, "rows": list(p.rows), "figure": p.figure} for p in panels]


def case_view(case: dict[str, Any], ctx: Context, summary: dict[str, Any]) -> dict[str, Any]:
    points = drift_points(case)
    blames = []
    by_call = {(p["key"], p["call"]): p["x"] for p in points}
    for mode in ("chained", "isolated"):
        b = case["blame"].get(mode)
        if b and (b["key"], b["call"]) in by_call:
            blames.append((mode, by_call[(b["key"], b["call"])], f"{b['key']}#{b['call']}"))
    outputs = [t for t in case["tensors"] if _is_output(t)]
    worst = sorted(outputs, key=lambda t: -(num(t.get("margin")) or 0.0))[:WORST_ROWS]
    failing = sorted((t for t in outputs if t["status"] in FAILING), key=lambda t: (t["seq_end"], t["mode"]))
    tokens_policy = (summary.get("policy") or {}).get("tokens", {})
    tokens_policy = (tokens_policy.get("subjects") or {}).get(case.get("subject") or "", tokens_policy)
    near_tie = float(tokens_policy.get("near_tie_margin", 0.0) or 0.0)
    margins = [num(t.get("margin")) for t in outputs]
    title = f"{case['case']}: error of every tapped call along the pipeline ({len(points)} calls)"
    return {
        "name": case["case"], "anchor": anchor(case["case"]), "family": case.get("family", ""),
        "description": case.get("description", ""), "verdict": case["verdict"], "counts": case["counts"],
        "modes": case["modes"], "seconds": case.get("seconds", {}), "notes": case.get("notes", []),
        "blame": {m: b for m, b in case["blame"].items() if b},
        "error": case.get("error"), "unmatched": case.get("unmatched") or [],
        "worst_margin": fmt(max([m for m in margins if m is not None and not math.isnan(m)], default=0.0)),
        "drift": figures.drift_chart(points, stages(points), blames, title) if _measured(points) else None,
        "divergence": divergence_panels(case, ctx),
        "tokens": token_view(case, ctx, near_tie),
        "audio": audio_views(case, ctx),
        "panels": subject_panels(case, ctx),
        "worst": [tensor_row(t) for t in worst],
        "failing": [tensor_row(t) for t in failing[:FAILING_ROWS]], "failing_more": max(0, len(failing) - FAILING_ROWS),
        "open": case["verdict"] != "pass",
    }  # fmt: skip


# -- history -------------------------------------------------------------------------------------------------------


def current_worst(summary: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per "case/mode", per module: the worst rel L2 (as history.jsonl records it)."""
    worst: dict[str, dict[str, float]] = {}
    for case in summary["cases"]:
        for mode in case["modes"]:
            for row in module_rows(case, mode):
                worst.setdefault(f"{case['case']}/{mode}", {})[row["key"]] = row["rel_l2"]
    return worst


def _sparkline(values: list[float | None], flags: list[bool]) -> str:
    width, height, pad = 180, 30, 3
    logs = [math.log10(v) if v and v > 0 else None for v in values]
    present = [v for v in logs if v is not None]
    if not present:
        return ""
    lo, hi = min(present), max(present)
    span = hi - lo or 1.0
    step = (width - 2 * pad) / max(len(values) - 1, 1)
    pts, dots = [], []
    for i, v in enumerate(logs):
        y = height - pad - ((v if v is not None else lo) - lo) / span * (height - 2 * pad)
        pts.append(f"{pad + i * step:.1f},{y:.1f}")
        colour, radius = ("#d62728", 2.8) if flags[i] else ("#1f5fbf", 1.6)
        dots.append(f'<circle cx="{pad + i * step:.1f}" cy="{y:.1f}" r="{radius}" fill="{colour}"/>')
    return (f'<svg class="spark" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img">'
            f'<polyline fill="none" stroke="#1f5fbf" stroke-width="1.3" points="{" ".join(pts)}"/>{"".join(dots)}</svg>')  # fmt: skip


def history_view(summary: dict[str, Any], history: list[dict[str, Any]]) -> dict[str, Any]:
    """Trend of the worst error per case and mode over the runs of the same candidate on the same goldens, and
    the modules whose worst rel L2 grew by more than GROWTH_FACTOR since that candidate's previous run (another
    candidate's errors are not comparable: official float64 after impl would flag nearly every module)."""
    same = [
        h for h in history
        if h.get("goldens") == summary.get("goldens") and h.get("candidate") == summary.get("candidate")
        and isinstance(h.get("worst_rel_l2"), dict)
    ]  # fmt: skip
    now = current_worst(summary)
    current = None
    for i in range(len(same) - 1, -1, -1):
        if same[i].get("started_utc") == summary.get("started_utc"):
            current = i
            break
    if current is None:
        for i in range(len(same) - 1, -1, -1):
            if same[i]["worst_rel_l2"] == now:
                current = i
                break
    earlier = same[:current] if current is not None else same
    previous = earlier[-1] if earlier else None
    this_run = {"worst_rel_l2": now, "verdict": summary["verdict"], "candidate": summary["candidate"],
                "time_utc": summary.get("started_utc"), "commit": None, "current": True}  # fmt: skip
    runs = [*earlier[-(HISTORY_RUNS - 1) :], this_run]
    flags: list[dict[str, Any]] = []
    if previous is not None:
        for group, modules in now.items():
            before_group = previous["worst_rel_l2"].get(group, {})
            for key, value in modules.items():
                before = num(before_group.get(key))
                if before is not None and value > 0 and value > before * GROWTH_FACTOR:
                    flags.append({"group": group, "key": key, "before": fmt(before), "now": fmt(value),
                                  "ratio": fmt(value / before) if before > 0 else "∞",
                                  "sort": value / before if before > 0 else math.inf})  # fmt: skip
    flags.sort(key=lambda f: -float(f["sort"]))
    flagged_groups = {f["group"] for f in flags}
    trends = []
    for group in now:
        values = [max((num(v) or 0.0 for v in run["worst_rel_l2"].get(group, {}).values()), default=None)
                  for run in runs]  # fmt: skip
        grew = [False] * len(runs)
        if group in flagged_groups:
            grew[-1] = True
        trends.append({"group": group, "spark": _sparkline(values, grew), "now": fmt(values[-1]),
                       "previous": fmt(values[-2]) if len(values) > 1 else "—", "flagged": group in flagged_groups,
                       "runs": sum(v is not None for v in values)})  # fmt: skip
    table = [{"time": r.get("time_utc"), "commit": (r.get("commit") or "")[:10], "candidate": r.get("candidate"),
              "verdict": r.get("verdict"), "counts": r.get("counts") or summary["counts"] if r.get("current") else r.get("counts") or {},
              "current": bool(r.get("current"))} for r in runs[-10:]]  # fmt: skip
    return {"runs": len(runs), "previous": previous is not None, "previous_time": previous.get("time_utc") if previous else None,
            "flags": flags[:FLAG_ROWS], "flags_more": max(0, len(flags) - FLAG_ROWS), "flag_count": len(flags),
            "trends": trends, "table": list(reversed(table)), "factor": GROWTH_FACTOR}  # fmt: skip


# -- header ----------------------------------------------------------------------------------------------------------


def flatten_hashes(node: Any, prefix: str = "") -> list[tuple[str, str]]:
    """{"component": {"file": sha}} as [("component/file", sha)]."""
    if isinstance(node, dict):
        out = []
        for k, v in node.items():
            out += flatten_hashes(v, f"{prefix}/{k}" if prefix else str(k))
        return out
    return [(prefix, str(node))] if node is not None else []


def header_view(summary: dict[str, Any]) -> dict[str, Any]:
    p = summary.get("golden_provenance") or {}
    policy = summary.get("policy") or {}
    counts = summary["counts"]
    shown = [("pass", counts.get("pass", 0)), ("fail", counts.get("fail", 0)),
             ("xfail", counts.get("xfail", 0)), ("not_covered", counts.get("not_covered", 0))]  # fmt: skip
    shown += [(s, counts.get(s, 0)) for s in ("interface_mismatch", "error", "skipped", "xpass") if counts.get(s)]
    cases = summary["cases"]
    return {
        "verdict": summary["verdict"], "exit_code": summary.get("exit_code"), "counts": shown,
        "candidate": summary.get("candidate"), "goldens": summary.get("goldens"), "modes": summary.get("modes", []),
        "command": summary.get("command", ""), "started": summary.get("started_utc", ""),
        "seconds": fmt(summary.get("seconds")), "cases_total": len(cases),
        "cases_failing": sum(c["verdict"] != "pass" for c in cases),
        "provenance": [(k, p.get(k)) for k in ("official_package", "official_version", "torch", "transformers", "dtype",
                                               "size", "seed", "threads", "attn_implementation", "created_utc", "path")
                       if p.get(k) is not None],
        "hashes": flatten_hashes(p.get("weights_sha256")),
        "config": json.dumps(p.get("config"), indent=1, sort_keys=True) if p.get("config") else "",
        "software": p.get("software") or {},
        "policy": policy, "policy_path": policy.get("path") or "built-in defaults",
        "precision": policy.get("precision") or "float32",
        "policy_json": json.dumps(policy, indent=1),
        "calibration": policy.get("calibration") or {}, "rules": policy.get("rules") or [],
        "defaults": policy.get("defaults") or {},
        "allow_partial": summary.get("allow_partial", False),
        "error": summary.get("error"),
        **candidate_view(summary),
    }  # fmt: skip


def candidate_view(summary: dict[str, Any]) -> dict[str, Any]:
    """What the candidate is, beside the golden's provenance: the fields both state (and the ones that differ,
    called out), the rest of its provenance, and the files it was read from (dumps)."""
    provenance = summary.get("candidate_provenance") or {}
    golden = summary.get("golden_provenance") or {}
    compared = provenance.get("compared_with_golden") or {}
    differing = {d["field"] for d in summary.get("provenance_differences") or []}
    skip = ("label", "files", "compared_with_golden")
    return {
        "differences": [difference_line(d) for d in summary.get("provenance_differences") or []],
        "comparison": [{"field": k, "candidate": v, "golden": golden.get(k, "—"), "differs": k in differing}
                       for k, v in compared.items()],
        "candidate_provenance": [(k, v) for k, v in flat_items({k: v for k, v in provenance.items() if k not in skip})],
        "candidate_files": provenance.get("files") or [],
    }  # fmt: skip


def overview_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for case in summary["cases"]:
        c = case["counts"]
        rows.append({"name": case["case"], "anchor": anchor(case["case"]), "family": case.get("family", ""),
                     "verdict": case["verdict"], "pass": c.get("pass", 0) + c.get("xpass", 0), "fail": c.get("fail", 0) + c.get("error", 0),
                     "xfail": c.get("xfail", 0), "not_covered": c.get("not_covered", 0), "skipped": c.get("skipped", 0),
                     "blame": {m: f"{b['key']}#{b['call']}" for m, b in case["blame"].items() if b},
                     "seconds": fmt(sum(case.get("seconds", {}).values()))})  # fmt: skip
    return rows
