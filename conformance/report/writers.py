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

from ..compare.provenance import difference_line
from ..compare.results import ERROR, FAIL, INTERFACE, NOT_COVERED, PASS, SKIPPED, UNJUDGED, XFAIL, XPASS, RunResult

_RANK = {ERROR: 7, FAIL: 6, INTERFACE: 5, NOT_COVERED: 4, XFAIL: 3, XPASS: 2, SKIPPED: 1, PASS: 0}


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
        if tensor["status"] in (FAIL, ERROR, XFAIL, *UNJUDGED) and tensor.get("message"):
            row["messages"].append(f"{tensor['key']}#{tensor['call']}/{tensor['role']}: {tensor['message']}")
        row["seq_end"] = min(row["seq_end"], tensor["seq_end"])
    return sorted(rows.values(), key=lambda r: r["seq_end"])


def provenance_properties(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """(name, value) pairs saying what ran against what: the candidate's provenance, the golden's, and every
    difference between them (JUnit <properties>)."""
    props = [("candidate", str(summary.get("candidate", "")))]
    props += [(f"candidate.{name}", value) for name, value in flat_items(summary.get("candidate_provenance") or {})
              if name != "label"]  # fmt: skip
    golden = {k: v for k, v in (summary.get("golden_provenance") or {}).items() if k not in ("config", "software")}
    props += [(f"golden.{name}", value) for name, value in flat_items(golden)]
    props += [
        (f"provenance_difference.{d['field']}", difference_line(d)) for d in summary.get("provenance_differences") or []
    ]
    return props


def flat_items(node: Any, prefix: str = "") -> list[tuple[str, str]]:
    """A nested provenance as (dotted name, text) pairs, None values left out."""
    if isinstance(node, dict):
        return [pair for k, v in node.items() for pair in flat_items(v, f"{prefix}.{k}" if prefix else str(k))]
    if isinstance(node, list):
        return [pair for i, v in enumerate(node) for pair in flat_items(v, f"{prefix}.{i}")]
    return [] if node is None else [(prefix, str(node))]


def write_junit(summary: dict[str, Any], path: Path) -> None:
    suites = ET.Element("testsuites", name="conformance", tests="0", failures="0", errors="0", skipped="0")
    totals: dict[str, int] = defaultdict(int)
    properties = provenance_properties(summary)
    for case in summary["cases"]:
        error = case.get("error")
        # a crash belongs to the mode it happened in; one while loading or preparing to the case's first mode
        error_mode = (error.get("stage") if error and error.get("stage") in case["modes"] else
                      case["modes"][0] if error and case["modes"] else None)  # fmt: skip
        for mode in case["modes"]:
            rows = module_rows(case, mode)
            suite = ET.SubElement(suites, "testsuite", name=f"{case['case']}.{mode}")
            props = ET.SubElement(suite, "properties")
            for name, value in properties:
                ET.SubElement(props, "property", name=name, value=value)
            counts: dict[str, int] = defaultdict(int)
            if mode == error_mode:
                testcase = ET.SubElement(suite, "testcase", classname=f"{case['case']}.{mode}",
                                         name="(the candidate crashed)")  # fmt: skip
                ET.SubElement(testcase, "error", message=str(error.get("line") or error.get("message"))[:500],
                              type=str(error.get("type", ""))).text = error.get("traceback") or ""  # fmt: skip
                counts["tests"] += 1
                counts["errors"] += 1
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
                elif row["status"] in (NOT_COVERED, INTERFACE) and not summary.get("allow_partial"):
                    # a module the candidate lacks, or cannot be called with the golden's arguments, fails the gate
                    # (verdict incomplete): the JUnit view agrees, with a type that says it is not a numeric failure
                    label = "not covered" if row["status"] == NOT_COVERED else "interface mismatch"
                    ET.SubElement(testcase, "failure", type=row["status"],
                                  message=f"{label}: {(row['messages'] or [''])[0][:400]}")  # fmt: skip
                    counts["failures"] += 1
                elif row["status"] in (XFAIL, NOT_COVERED, INTERFACE, SKIPPED):
                    label = {XFAIL: "expected failure", NOT_COVERED: "not covered", INTERFACE: "interface mismatch",
                             SKIPPED: "skipped"}[row["status"]]  # fmt: skip
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


def _md(text: Any) -> str:
    """Text safe inside a markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _blame_cell(blame: dict[str, Any] | None) -> str:
    if not blame:
        return "—"
    where = f"`{blame['key']}#{blame['call']}`"
    if blame.get("kind") == "input" and blame.get("inputs"):
        where += f" (through input `{blame['inputs'][0]}`)"
    return where


def _provenance_lines(summary: dict[str, Any]) -> list[str]:
    provenance = summary.get("candidate_provenance") or {}
    golden = summary.get("golden_provenance") or {}
    lines = []
    package = provenance.get("package") or {}
    if package.get("location"):
        install = f", {package['install']}" if package.get("install") else ""
        lines.append(f"Candidate package `{package.get('import')}` from `{package['location']}`{install}.")
    compared = provenance.get("compared_with_golden") or {}
    if compared:
        lines += ["", "| | candidate | golden |", "|---|---|---|"]
        lines += [f"| {field} | {_md(value)} | {_md(golden.get(field, '—'))} |" for field, value in compared.items()]
    files = provenance.get("files") or []
    if files:
        lines += ["", "Dump files read (sha256):", ""]
        lines += [f"- `{info['path']}`: `{info.get('sha256', '')}`" for info in files[:20]]
        if len(files) > 20:
            lines.append(f"- … and {len(files) - 20} more (all in summary.json)")
    differences = summary.get("provenance_differences") or []
    if differences:
        lines += [
            "",
            f"> ⚠️ **The candidate is not what the golden was recorded with** ({len(differences)} difference(s)):",
        ]
        lines += [f"> - {difference_line(d)}" for d in differences]
    return lines


def write_markdown(summary: dict[str, Any], path: Path, html_name: str | None = "index.html") -> str:
    counts = summary["counts"]
    icon = {"pass": "✅", "fail": "❌", "error": "💥", "incomplete": "⚠️", "partial": "⚠️"}.get(summary["verdict"], "")
    lines = [f"## {icon} conformance: {summary['verdict']} (exit {summary.get('exit_code')})", ""]
    if summary.get("error"):
        lines += [f"**Error:** {summary['error']}", ""]
    lines += [
        f"Candidate **{summary['candidate']}** against `{summary['goldens']}` ({', '.join(summary['modes'])}).",
        *_provenance_lines(summary),
        "",
        "| pass | fail | error | xfail | not covered | interface mismatch | skipped |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        f"| {counts['pass']} | {counts['fail']} | {counts['error']} | {counts['xfail']} | {counts['not_covered']} "
        f"| {counts.get(INTERFACE, 0)} | {counts['skipped']} |",
        "",
        "| case | verdict | first divergence (isolated) | first divergence (chained) |",
        "|---|---|---|---|",
    ]  # fmt: skip
    for case in summary["cases"]:
        blames = case["blame"]
        lines.append(f"| {case['case']} | {case['verdict']} | {_blame_cell(blames.get('isolated'))} "
                     f"| {_blame_cell(blames.get('chained'))} |")  # fmt: skip
    crashed = [case for case in summary["cases"] if case.get("error")]
    if crashed:
        lines += ["", "Cases on which the candidate crashed (full tracebacks in summary.json):", ""]
        lines += [f"- {case['case']}: {case['error'].get('line') or case['error'].get('message')}" for case in crashed]
    mismatches = _interface_mismatches(summary)
    if mismatches:
        lines += ["", "Interface mismatches (isolated replay could not call these modules with the golden's arguments; "
                      "not a numeric divergence, chained mode still judges their numbers):", ""]  # fmt: skip
        lines += [f"- {name}: `{key}` — {message}" for name, key, message in mismatches[:10]]
        if len(mismatches) > 10:
            lines.append(f"- … and {len(mismatches) - 10} more (summary.json)")
    lines += _teacher_forced_lines(summary)
    flaky = [(case["case"], case["blame"]["repeat"]) for case in summary["cases"] if case["blame"].get("repeat")]
    if flaky:  # --repeat: a nondeterministic candidate, whatever run 1 scored against the goldens
        lines += ["", "Runs of the candidate that differ from its first run (`--repeat`):", ""]
        lines += [f"- {name}: {b['reason']}" for name, b in flaky]
    if summary.get("notes"):  # run-wide notes, e.g. a calibration fallback: they qualify the verdict
        lines += [""] + [f"> **Note:** {note}" for note in summary["notes"]]
    bundles = [
        (case["case"], b) for case in summary["cases"] for b in case["blame"].values() if b and b.get("replay_bundle")
    ]
    if bundles:
        lines += ["", "Replay bundles of the blamed modules (one module's golden inputs, weights and outputs, as "
                      "`conformance export` writes them):", ""]  # fmt: skip
        lines += sorted({f"- {name}: `{b['key']}#{b['call']}` → `{b['replay_bundle']}`" for name, b in bundles})
    unmatched = [(case["case"], case["unmatched"]) for case in summary["cases"] if case.get("unmatched")]
    if unmatched:
        lines += [
            "",
            "Dump tensors that matched no golden tensor (all of them in summary.json and the HTML report):",
            "",
        ]
        for name, items in unmatched:
            first = items[0]
            lines.append(f"- {name}: {len(items)}, first `{first['name']}`: {_md(first['reason'])}")
    if summary.get("notes"):
        lines += ["", *[f"> {note}" for note in summary["notes"]]]
    if html_name:
        lines += ["", f"Full report: [{html_name}]({html_name}) (self-contained HTML, attach it as a CI artifact)."]
    text = "\n".join(lines) + "\n"
    _atomic_write(path, text)
    return text


def _interface_mismatches(summary: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(case, module key, message) of every module with an interface mismatch, once per module."""
    found: dict[tuple[str, str], str] = {}
    for case in summary["cases"]:
        for tensor in case["tensors"]:
            if tensor["status"] == INTERFACE:
                found.setdefault((case["case"], tensor["key"]), tensor.get("message", ""))
    return [(name, key, message) for (name, key), message in found.items()]


def _teacher_forced_lines(summary: dict[str, Any]) -> list[str]:
    """The teacher-forced headline: the candidate's whole model run for each generation step on the golden history
    (not only its logits heads on golden hidden states, which agree for a model wrong before its head)."""
    steps = {case["case"]: [t for t in case.get("tokens", []) if t["mode"] == "teacher_forced_model"]
             for case in summary["cases"]}  # fmt: skip
    total = sum(len(found) for found in steps.values())
    if not total:
        return []
    agree = sum(t["classification"] == "agree" for found in steps.values() for t in found)
    lines = ["", f"Teacher-forced top-1 (whole model per step on the golden history): {agree} of {total} steps agree."]
    for name, found in steps.items():
        differ = [t for t in found if t["classification"] != "agree"]
        if differ:
            first = differ[0]
            at = ", ".join(f"{axis} {i}" for axis, i in zip(first.get("axes") or [], first.get("index") or []))
            lines.append(f"- {name}: {len(differ)} of {len(found)} steps disagree, first {at or 'step'} "
                         f"({first['classification']}, `{first['key']}#{first['call']}`)")  # fmt: skip
    return lines


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
