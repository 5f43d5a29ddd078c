"""One page over several check runs (what `python -m conformance.project check` writes at the top of reports/: a run
per golden store of every subject): each run's subject, golden, candidate, verdict, counts, teacher-forced token
agreement and first divergence, linking to its own report. Read from each run's summary.json."""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .outputs import read_summary
from .writers import _atomic_write

ICONS = {"pass": "✅", "fail": "❌", "error": "💥", "incomplete": "⚠️", "partial": "⚠️"}


def run_row(folder: Path, root: Path) -> dict[str, Any]:
    """What the index says of one run (its folder holds summary.json and index.html)."""
    summary = read_summary(folder / "summary.json")
    cases = summary.get("cases", [])
    steps = [t for case in cases for t in case.get("tokens", []) if t["mode"] == "teacher_forced_model"]
    first = next(((case["case"], case["blame"].get(mode)) for case in cases for mode in ("isolated", "chained")
                  if (case.get("blame") or {}).get(mode)), None)  # fmt: skip
    return {
        "subjects": sorted({str(case.get("subject") or "-") for case in cases}),
        "golden": Path(str(summary.get("goldens", ""))).name,
        "candidate": summary.get("candidate", ""),
        "verdict": summary["verdict"],
        "counts": summary.get("counts", {}),
        "cases": len(cases),
        "tokens": f"{sum(t['classification'] == 'agree' for t in steps)} of {len(steps)}" if steps else "",
        "first": f"{first[0]}: {first[1]['key']}#{first[1]['call']}" if first else "",
        "link": (folder / "index.html").relative_to(root).as_posix(),
    }


def write_index(root: Path, folders: Sequence[Path]) -> list[dict[str, Any]]:
    """Write `root/index.html` and `root/summary.md` over the runs reported in `folders` (below `root`)."""
    rows = [run_row(Path(folder), Path(root)) for folder in folders]
    head = "| subject | golden | candidate | verdict | pass | fail | teacher-forced top-1 | first divergence | report |"
    lines = ["# conformance: every subject", "", head, "|---|---|---|---|---:|---:|---|---|---|"]
    for row in rows:
        lines.append(f"| {', '.join(row['subjects'])} | `{row['golden']}` | {row['candidate']} | "
                     f"{ICONS.get(row['verdict'], '')} {row['verdict']} | {row['counts'].get('pass', 0)} | "
                     f"{row['counts'].get('fail', 0)} | {row['tokens'] or '—'} | {row['first'] or '—'} | "
                     f"[{row['link']}]({row['link']}) |")  # fmt: skip
    _atomic_write(Path(root) / "summary.md", "\n".join(lines) + "\n")
    cells = "".join(
        f"<tr class='v-{html.escape(row['verdict'])}'><td>{html.escape(', '.join(row['subjects']))}</td>"
        f"<td><code>{html.escape(row['golden'])}</code></td><td>{html.escape(row['candidate'])}</td>"
        f"<td>{ICONS.get(row['verdict'], '')} {html.escape(row['verdict'])}</td><td>{row['counts'].get('pass', 0)}</td>"
        f"<td>{row['counts'].get('fail', 0)}</td><td>{html.escape(row['tokens'] or '—')}</td>"
        f"<td>{html.escape(row['first'] or '—')}</td><td><a href='{html.escape(row['link'])}'>report</a></td></tr>"
        for row in rows
    )
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>conformance: every subject</title><style>"
            "body{font:14px system-ui,sans-serif;margin:24px}table{border-collapse:collapse}td,th{border:1px solid "
            "#d9dde3;padding:4px 10px;text-align:left}.v-pass td:nth-child(4){color:#2e7d32}.v-fail td:nth-child(4),"
            ".v-error td:nth-child(4){color:#d62728}</style></head><body><h1>conformance: every subject</h1><table>"
            "<tr><th>subject</th><th>golden</th><th>candidate</th><th>verdict</th><th>pass</th><th>fail</th>"
            f"<th>teacher-forced top-1</th><th>first divergence</th><th></th></tr>{cells}</table></body></html>\n")  # fmt: skip
    _atomic_write(Path(root) / "index.html", page)
    return rows
