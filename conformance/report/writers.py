"""Machine-readable outputs of a check run, for CI: summary.json, junit.xml, summary.md, history.jsonl.

summary.json is the complete record (every tensor's metrics, thresholds and verdict) from which the
HTML report is rendered; junit.xml has one testcase per case x module x mode; summary.md is short enough
for a CI step summary; history.jsonl gets one line per run so reports can show trends.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path
from typing import Any

from ..compare.results import ERROR, FAIL, NOT_COVERED, PASS, SKIPPED, XFAIL, XPASS, RunResult

_RANK = {ERROR: 6, FAIL: 5, NOT_COVERED: 4, XFAIL: 3, XPASS: 2, SKIPPED: 1, PASS: 0}


def write_summary(run: RunResult, path: Path) -> dict[str, Any]:
    data = run.to_json()
    # compact: a full run holds ~27,000 tensor verdicts (45 MB indented, 32 MB without); `jq` reads it back
    _atomic_write(path, json.dumps(data, separators=(",", ":"), sort_keys=False))
    return data


def module_rows(case: dict[str, Any], mode: str) -> list[dict[str, Any]]:
    """Per module key: worst status, worst margin, worst rel_l2, tensor count (outputs only)."""
    rows: dict[str, dict[str, Any]] = {}
    for tensor in case["tensors"]:
        if tensor["mode"] != mode or not tensor["role"].startswith("outputs"):
            continue
        row = rows.setdefault(tensor["key"], {"key": tensor["key"], "status": PASS, "tensors": 0, "margin": 0.0,
                                               "rel_l2": 0.0, "messages": [], "seq_end": tensor["seq_end"]})  # fmt: skip
        row["tensors"] += 1
        if _RANK[tensor["status"]] > _RANK[row["status"]]:
            row["status"] = tensor["status"]
        margin = tensor.get("margin")
        if isinstance(margin, (int, float)):
            row["margin"] = max(row["margin"], margin)
        elif margin == "inf":
            row["margin"] = float("inf")
        rel = (tensor.get("metrics") or {}).get("rel_l2")
        if isinstance(rel, (int, float)):
            row["rel_l2"] = max(row["rel_l2"], rel)
        if tensor["status"] in (FAIL, ERROR, XFAIL, NOT_COVERED) and tensor.get("message"):
            row["messages"].append(f"{tensor['key']}#{tensor['call']}/{tensor['role']}: {tensor['message']}")
        row["seq_end"] = min(row["seq_end"], tensor["seq_end"])
    return sorted(rows.values(), key=lambda r: r["seq_end"])


def write_junit(summary: dict[str, Any], path: Path) -> None:
    suites = ET.Element("testsuites", name="conformance", tests="0", failures="0", errors="0", skipped="0")
    totals: dict[str, int] = defaultdict(int)
    for case in summary["cases"]:
        for mode in case["modes"]:
            rows = module_rows(case, mode)
            suite = ET.SubElement(suites, "testsuite", name=f"{case['case']}.{mode}")
            counts: dict[str, int] = defaultdict(int)
            for row in rows:
                testcase = ET.SubElement(suite, "testcase", classname=f"{case['case']}.{mode}", name=row["key"])
                counts["tests"] += 1
                message = "\n".join(row["messages"][:20])
                if row["status"] == FAIL:
                    ET.SubElement(
                        testcase, "failure", message=(row["messages"] or ["diverged"])[0][:500]
                    ).text = message
                    counts["failures"] += 1
                elif row["status"] == ERROR:
                    ET.SubElement(testcase, "error", message=(row["messages"] or ["error"])[0][:500]).text = message
                    counts["errors"] += 1
                elif row["status"] == NOT_COVERED and not summary.get("allow_partial"):
                    # a module the candidate lacks fails the gate (verdict incomplete): the JUnit view agrees
                    ET.SubElement(testcase, "failure", message=f"not covered: {(row['messages'] or [''])[0][:400]}")
                    counts["failures"] += 1
                elif row["status"] in (XFAIL, NOT_COVERED, SKIPPED):
                    label = {XFAIL: "expected failure", NOT_COVERED: "not covered", SKIPPED: "skipped"}[row["status"]]
                    ET.SubElement(testcase, "skipped", message=f"{label}: {(row['messages'] or [''])[0][:400]}")
                    counts["skipped"] += 1
                ET.SubElement(
                    testcase, "system-out"
                ).text = f"worst rel_l2 {row['rel_l2']:.3g}, margin {row['margin']:.3g}"
            for name in ("tests", "failures", "errors", "skipped"):
                suite.set(name, str(counts[name]))
                totals[name] += counts[name]
            suite.set("time", str(sum(case["seconds"].values())))
    for name in ("tests", "failures", "errors", "skipped"):
        suites.set(name, str(totals[name]))
    ET.indent(suites)
    _atomic_write(path, ET.tostring(suites, encoding="unicode", xml_declaration=True))


def write_markdown(summary: dict[str, Any], path: Path, html_name: str | None = "index.html") -> str:
    counts = summary["counts"]
    icon = {"pass": "✅", "fail": "❌", "incomplete": "⚠️", "partial": "⚠️"}.get(summary["verdict"], "")
    lines = [
        f"## {icon} conformance: {summary['verdict']}",
        "",
        f"Candidate **{summary['candidate']}** against `{summary['goldens']}` ({', '.join(summary['modes'])}).",
        "",
        "| pass | fail | xfail | not covered | error | skipped |",
        "|---:|---:|---:|---:|---:|---:|",
        f"| {counts['pass']} | {counts['fail']} | {counts['xfail']} | {counts['not_covered']} | {counts['error']} | {counts['skipped']} |",
        "",
        "| case | verdict | first divergence |",
        "|---|---|---|",
    ]  # fmt: skip
    for case in summary["cases"]:
        blame = next((b for b in (case["blame"].get("chained"), case["blame"].get("isolated")) if b), None)
        where = f"`{blame['key']}#{blame['call']}` ({blame['mode']})" if blame else "—"
        lines.append(f"| {case['case']} | {case['verdict']} | {where} |")
    if summary.get("notes"):  # run-wide notes, e.g. a calibration fallback: they qualify the verdict
        lines += [""] + [f"> **Note:** {note}" for note in summary["notes"]]
    bundles = [
        (case["case"], b) for case in summary["cases"] for b in case["blame"].values() if b and b.get("replay_bundle")
    ]
    if bundles:
        lines += ["", "Replay bundles of the blamed modules (one module's golden inputs, weights and outputs):", ""]
        lines += sorted({f"- {name}: `{b['key']}#{b['call']}` → `{b['replay_bundle']}`" for name, b in bundles})
    if html_name:
        lines += ["", f"Full report: [{html_name}]({html_name}) (self-contained HTML, attach it as a CI artifact)."]
    text = "\n".join(lines) + "\n"
    _atomic_write(path, text)
    return text


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def append_history(summary: dict[str, Any], path: Path) -> dict[str, Any]:
    worst: dict[str, dict[str, float]] = {}
    for case in summary["cases"]:
        for mode in case["modes"]:
            for row in module_rows(case, mode):
                worst.setdefault(f"{case['case']}/{mode}", {})[row["key"]] = row["rel_l2"]
    entry = {
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "started_utc": summary.get("started_utc"),  # ties the entry to its summary.json (the report finds "this run")
        "commit": _git_commit(),
        "candidate": summary["candidate"],
        "goldens": summary["goldens"],
        "verdict": summary["verdict"],
        "counts": summary["counts"],
        "worst_rel_l2": worst,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        handle.write(json.dumps(entry, sort_keys=True) + "\n")
    return entry


def read_history(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    entries = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            try:
                entries.append(json.loads(line))
            except ValueError:
                continue  # a torn line from an interrupted run is skipped, not fatal
    return entries


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
