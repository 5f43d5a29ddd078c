"""The self-contained HTML divergence report: one file, inline CSS and JS, figures as PNG data: URIs,
audio as WAV data: URIs, no network access of any kind (numpy, h5py, matplotlib, jinja2 only).

Sections: header (verdict, counts, candidate, golden provenance, policy, command, timings), case overview,
module tree (collapsible, coloured by margin, filter and sort), one panel per case (pipeline drift chart,
first divergence with error heatmap and histogram, tokens, audio, worst and failing tensors), history.
See docs/report.md.
"""

from __future__ import annotations

import os
import time
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2

from ..store import GoldenStore
from . import view

_ENV: jinja2.Environment | None = None


def _environment() -> jinja2.Environment:
    global _ENV
    if _ENV is None:
        templates = resources.files("conformance.report") / "templates"
        env = jinja2.Environment(
            loader=jinja2.FunctionLoader(lambda name: (templates / name).read_text(encoding="utf-8")),
            autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
        )  # fmt: skip
        env.filters["fmt"] = view.fmt
        _ENV = env
    return _ENV


def open_golden(summary: dict[str, Any], near: Path | None = None) -> tuple[Any, str]:
    """The golden store the summary was checked against, if it is still there and still the same file. A
    relative path is tried from the working directory, then from the report's folder and its parent (a
    report rendered later from elsewhere: reports/ usually sits beside goldens/)."""
    path = Path(str(summary.get("goldens", "")))
    if not path.is_absolute() and not path.is_file() and near is not None:
        path = next((base / path for base in (near, near.parent) if (base / path).is_file()), path)
    if not path.is_file():
        return None, f"{path} not found"
    try:
        store = GoldenStore(path)
    except Exception as exc:
        return None, f"{path} not readable: {exc}"
    expected = (summary.get("golden_provenance") or {}).get("created_utc")
    if expected and store.created_utc != expected:
        store.close()
        return None, f"{path} is another recording (created {store.created_utc}, the run used {expected})"
    return store, ""


def build_context(summary: dict[str, Any], history: list[dict[str, Any]], artifacts: dict[str, Any] | None,
                  golden: Any = None, golden_note: str = "") -> dict[str, Any]:  # fmt: skip
    ctx = view.Context(golden=golden, golden_note=golden_note, artifacts=artifacts or {})
    header = view.header_view(summary)
    if golden is not None:  # the summary names the first case's weights; a run may span several checkpoints
        for case in summary["cases"]:
            recorded = ctx.case(case["case"])
            for name, digest in view.flatten_hashes(recorded.provenance.get("weights_sha256") if recorded else None):
                if (name, digest) not in header["hashes"]:
                    header["hashes"].append((name, digest))
    return {
        "header": header,
        "overview": view.overview_rows(summary),
        "tree_json": view.json_for_script(view.tree_data(summary)),
        "cases": [view.case_view(case, ctx, summary) for case in summary["cases"]],
        "history": view.history_view(summary, history),
        "golden_note": golden_note,
        "has_artifacts": bool(artifacts),
    }


def render_report(summary: dict[str, Any], path: Path, history: list[dict[str, Any]] | None = None,
                  artifacts: dict[str, Any] | None = None) -> Path:  # fmt: skip
    """Render the report of `summary` (the summary.json dict) to `path`, atomically. `history` is the parsed
    history.jsonl; `artifacts` the candidate arrays the run kept ({case: {(key, call): {role: array}}})."""
    started = time.time()
    golden, note = open_golden(summary, Path(path).resolve().parent)
    try:
        context = build_context(summary, history or [], artifacts, golden, note)
    finally:
        if golden is not None:
            golden.close()
    context["render_seconds"] = view.fmt(time.time() - started)
    context["generated_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    html = _environment().get_template("report.html.j2").render(**context)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(html, encoding="utf-8")
    os.replace(tmp, path)
    return path
