"""Reports of a check run: JSON summary, JUnit XML, markdown summary, run history, and the HTML report."""

from .artifacts import load_artifacts, save_artifacts
from .html import render_report
from .index import write_index
from .outputs import read_summary, render_from_summary, write_reports
from .writers import append_history, read_history, write_junit, write_markdown, write_summary

__all__ = [
    "append_history",
    "load_artifacts",
    "read_history",
    "read_summary",
    "render_from_summary",
    "render_report",
    "save_artifacts",
    "write_index",
    "write_junit",
    "write_markdown",
    "write_reports",
    "write_summary",
]
