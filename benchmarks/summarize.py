"""Turn pytest-benchmark's JSON into the markdown table docs/performance.md quotes: one row per benchmark,
grouped, best time, and the ratios and figures each benchmark put in its extra_info.

    python benchmarks/summarize.py reports/benchmarks/results.json [-o reports/benchmarks/summary.md]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def summarize(results: dict[str, Any]) -> str:
    machine = results.get("machine_info", {})
    cpu = machine.get("cpu", {}).get("brand_raw") or machine.get("processor", "")
    lines = [
        f"Run {results.get('datetime', '?')} on {cpu} ({machine.get('cpu', {}).get('count', '?')} cores), "
        f"Python {machine.get('python_version', '?')}, commit {results.get('commit_info', {}).get('id', '?')[:10]}",
        "",
        "| group | benchmark | best (s) | rounds | figures |",
        "|---|---|---|---|---|",
    ]
    for bench in sorted(results.get("benchmarks", []), key=lambda b: (b.get("group") or "", b["name"])):
        stats = bench["stats"]
        extra = ", ".join(f"{k}={v}" for k, v in sorted(bench.get("extra_info", {}).items()))
        lines.append(
            f"| {bench.get('group') or ''} | {bench['name']} | {stats['min']:.3f} | {stats['rounds']} | {extra} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, help="pytest-benchmark JSON (--benchmark-json)")
    parser.add_argument("-o", "--output", type=Path, help="write the markdown here too")
    args = parser.parse_args(argv)
    try:
        results = json.loads(args.results.read_text())
    except (OSError, ValueError) as exc:
        print(f"error: {args.results}: cannot read benchmark results: {exc}", file=sys.stderr)
        return 2
    table = summarize(results)
    print(table)
    if args.output:
        args.output.write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
