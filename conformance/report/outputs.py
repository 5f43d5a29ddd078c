"""Every output of a check run at once (what `conformance check` writes), and the HTML report redrawn from a
previous run's summary.json (what `conformance report` does)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..compare.results import RunResult
from ..errors import ConformanceError
from .artifacts import load_artifacts, save_artifacts
from .html import render_report
from .writers import append_history, read_history, write_junit, write_markdown, write_summary

SUMMARY_SCHEMA = "conformance-summary/1"


def write_reports(run: RunResult, folder: Path, html: bool = True) -> dict[str, Any]:
    """Write summary.json, junit.xml, history.jsonl (appended), artifacts.npz (the candidate arrays the page draws
    on, so `conformance report` can redraw it), index.html (unless `html` is off) and summary.md into `folder`.
    Returns the summary (summary.json's content)."""
    folder.mkdir(parents=True, exist_ok=True)
    summary = write_summary(run, folder / "summary.json")
    write_junit(summary, folder / "junit.xml")
    append_history(summary, folder / "history.jsonl")
    save_artifacts(run.artifacts, folder / "artifacts.npz", summary)
    html_name = None
    if html:
        render_report(summary, folder / "index.html", history=read_history(folder / "history.jsonl"),
                      artifacts=run.artifacts)  # fmt: skip
        html_name = "index.html"
    write_markdown(summary, folder / "summary.md", html_name)
    return summary


def read_summary(path: Path) -> dict[str, Any]:
    """A summary.json written by a check; a ConformanceError naming the file when it is missing or not one."""
    try:
        summary = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConformanceError("summary not found (run `conformance check` first)", path=path) from None
    except ValueError as exc:
        raise ConformanceError(f"not a summary.json ({exc})", path=path) from None
    if not isinstance(summary, dict) or summary.get("schema") != SUMMARY_SCHEMA:
        raise ConformanceError("not a conformance summary (schema field)", path=path)
    return summary


def render_from_summary(summary_path: Path, output: Path) -> Path:
    """Redraw the HTML report (and summary.md beside it) from a previous run's summary.json, with the history and
    the kept candidate arrays found beside that summary."""
    summary = read_summary(summary_path)
    history = read_history(summary_path.parent / "history.jsonl")
    artifacts = load_artifacts(summary_path.parent / "artifacts.npz", summary)
    render_report(summary, output, history=history, artifacts=artifacts)
    write_markdown(summary, output.parent / "summary.md", output.name)
    return output
