"""`conformance check` and `conformance report`: argument handling and console output around the library
(conformance.compare.check_goldens, conformance.ports for candidates and replay bundles, conformance.report)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..compare import STATUSES, check_goldens, find_policy, load_policy
from ..compare.provenance import difference_line
from ..compare.run import MODES
from ..ports import CandidateSpec, add_replay_bundles
from ..precisions import PRECISIONS
from ..report import render_from_summary, write_reports
from .common import command_line


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "check",
        help="compare a candidate (the NumPy impl, the official model, a port's dump) with a golden store",
        description=(
            "Check a candidate against a golden store, module by module. isolated: each module runs on its "
            "golden inputs; chained: the candidate runs each case from its inputs and every intermediate is "
            "compared. Thresholds come from the tolerance policy (calibrated on the official model's own "
            "float32-vs-float64 noise by default). Writes summary.json, junit.xml, summary.md, history.jsonl "
            "and index.html to --reports, also when the candidate crashes. Exit codes: 0 conform (or partial "
            "with --allow-partial); 1 a divergence beyond policy, or golden tensors not covered or met with an "
            "interface mismatch; 2 bad input or usage (one line naming the file and tensor), or a candidate "
            "that crashed while loading or running a case (its cases get an error verdict, the others are "
            "still judged)."
        ),
    )
    p.add_argument("--goldens", required=True, type=Path, help="golden store (.h5)")
    p.add_argument("--candidate", default="impl",
                   help="impl[:float32|float64] | official[:float32|float64][:perturb=<param>[@scale]] | dump:PATH "
                        "(default impl)")  # fmt: skip
    p.add_argument("--mode", default=None, choices=("isolated", "chained", "both"),
                   help="default: both, or what the candidate supports (chained for dumps)")  # fmt: skip
    p.add_argument("--policy", type=Path,
                   help="tolerance policy (TOML, or a pyproject.toml with [tool.conformance]); default: "
                        "./conformance-policy.toml, else ./pyproject.toml's table, else built-in")  # fmt: skip
    p.add_argument("--precision", choices=tuple(PRECISIONS),
                   help="the precision the candidate runs at: calibrated thresholds scale the official model's own "
                        "noise at that precision (its twin, recorded with `record --precisions/--weights-quant`); "
                        "default: the policy's `precision`, else float32 (docs/precision.md)")  # fmt: skip
    p.add_argument("--cases", nargs="+", metavar="CASE", help="check only these cases")
    p.add_argument("--modules", nargs="+", metavar="GLOB", help="check only modules whose key matches a glob")
    p.add_argument("--reference64", type=Path,
                   help="float64 golden for chained-noise calibration of a float32 golden (default: from the "
                        "manifest.json beside the golden)")  # fmt: skip
    p.add_argument("--checkpoint", type=Path, help="checkpoint folder to load weights from (default: provenance)")
    p.add_argument("--map", type=Path,
                   help="name map (TOML): a dump's tensor names and layouts, or a Python candidate's moved modules "
                        "([modules]) and renamed keywords ([[kwargs]]); see docs/porting-guide.md")  # fmt: skip
    p.add_argument("--reports", type=Path, default=Path("reports"), help="output folder (default reports/)")
    p.add_argument("--no-html", action="store_true", help="skip the HTML report")
    p.add_argument("--allow-partial", action="store_true",
                   help="modules the candidate lacks (or cannot call with the golden's arguments: interface "
                        "mismatch) do not fail the run (verdict partial, exit 0)")  # fmt: skip
    p.add_argument("--black-box", action="store_true",
                   help="judge only the case's final outputs a dump gives (outputs/codes, outputs/waveform, "
                        "outputs/sample_rate), ignoring its module tensors; automatic when a dump gives nothing else")  # fmt: skip
    p.add_argument("--reference-from-candidate", action="store_true",
                   help="also re-run the official model on the candidate's own outputs (for a generation case: its "
                        "generated tokens forced into the official model, and the official decode of them), so each "
                        "component of a black-box port is judged on its own inputs; needs the record side (torch)")  # fmt: skip
    p.add_argument("--repeat", type=int, default=1, metavar="N",
                   help="run each case N times end to end (N >= 2, needs the chained mode) and compare runs 2..N bit "
                        "for bit with run 1: every tensor that differs between runs fails (mode 'repeat') and the "
                        "first nondeterministic module is blamed (exit 1); run 1 is judged against the goldens as "
                        "usual (default 1: run once)")  # fmt: skip
    p.add_argument("-j", "--jobs", type=int, default=1,
                   help="check cases in this many worker processes (same verdicts as one; default 1)")  # fmt: skip
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or table")
    p.set_defaults(func=cmd_check)

    r = sub.add_parser("report", help="render the HTML divergence report from a summary.json",
                       description="Render the self-contained HTML report (and the markdown summary) from the "
                                   "summary.json of a previous check.")  # fmt: skip
    r.add_argument("--summary", type=Path, default=Path("reports/summary.json"))
    r.add_argument("-o", "--output", type=Path, default=Path("reports/index.html"))
    r.set_defaults(func=cmd_report)


def cmd_check(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from rich.console import Console

    console = Console(stderr=True, quiet=args.quiet)
    policy = load_policy(find_policy(args.policy))
    modes = None if args.mode is None else (MODES if args.mode == "both" else (args.mode,))
    factory = CandidateSpec(args.candidate, checkpoint=args.checkpoint, mapping=args.map, black_box=args.black_box)
    with _progress(console, args.quiet or args.jobs > 1) as progress:
        run = check_goldens(args.goldens, factory, policy, modes=modes, cases=args.cases, modules=args.modules,
                            reference64=args.reference64, allow_partial=args.allow_partial, repeat=args.repeat,
                            jobs=args.jobs, command=command_line(argv), on_progress=progress,
                            reference_from_candidate=args.reference_from_candidate,
                            checkpoint=args.checkpoint, precision=args.precision)  # fmt: skip
    add_replay_bundles(run)
    summary = write_reports(run, args.reports, html=not args.no_html)
    console.print(f"reports in {args.reports}/: summary.json junit.xml summary.md history.jsonl"
                  + ("" if args.no_html else " index.html"))  # fmt: skip
    _print_table(console, summary)
    _print_blames(summary)
    for case in summary["cases"]:  # the one line a flaky candidate's author acts on, even with --quiet
        repeated = case["blame"].get("repeat")
        if repeated:
            print(f"{case['case']}: {repeated['reason']}", file=sys.stderr)
    _print_notes(summary)
    if run.error_line:
        print(f"conformance: error: {run.error_line}", file=sys.stderr)
    return run.exit_code


def _print_notes(summary: dict[str, Any]) -> None:
    """Run-wide notes (a calibration fallback: thresholds looser than a calibrated reference gives), in yellow.
    Printed even with --quiet: they change what the verdict means."""
    from rich.console import Console
    from rich.markup import escape

    console = Console(stderr=True, soft_wrap=True)
    for note in summary.get("notes", []):
        if "per-dtype defaults" in note:  # nothing calibrated: a correct port may fail at full size
            console.print(f"[bold red]warning: {escape(note)}; record with the oracle (record --oracle-sample, "
                          "the default at full size) or the float64 twin to calibrate them[/bold red]")  # fmt: skip
        else:
            console.print(f"[yellow]note: {escape(note)}[/yellow]")


def _print_blames(summary: dict[str, Any]) -> None:
    """Each case's blame in each mode, with the full module path and its replay bundle, and each crash: printed
    whole even with --quiet and in a narrow CI log (never through a table that would cut them)."""
    for case in summary["cases"]:
        if case.get("error"):
            error = case["error"]
            print(f"error {case['case']}: {error.get('line') or error.get('message')}")
        for mode, blame in case["blame"].items():
            if blame:
                bundle = blame.get("replay_bundle")
                inside_any = bool(bundle) and bundle.startswith(f"{case['case']}/replay/")  # no export folder known
                where = "" if not bundle else f" — replay bundle: {bundle}" + (
                    " (in the folder `conformance export` writes)" if inside_any else "")  # fmt: skip
                print(f"blame {case['case']} ({mode}): {blame['key']}#{blame['call']}{where}")


def cmd_report(args: argparse.Namespace, argv: Sequence[str]) -> int:
    written = render_from_summary(args.summary, args.output)
    print(f"wrote {written}")
    return 0


class _progress:
    """A rich progress bar fed by the engine's (label, done, total) callbacks."""

    def __init__(self, console: Any, quiet: bool) -> None:
        self.console = console
        self.quiet = quiet

    def __enter__(self) -> Any:
        if self.quiet:
            return None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), console=self.console, transient=True)  # fmt: skip
        self.bar.__enter__()
        self.task = self.bar.add_task("checking", total=None)

        def update(label: str, done: int, total: int) -> None:
            self.bar.update(self.task, description=label, completed=done, total=total)

        return update

    def __exit__(self, *exc: Any) -> None:
        if not self.quiet:
            self.bar.__exit__(*exc)


def _print_table(console: Any, summary: dict[str, Any]) -> None:
    from rich.measure import Measurement
    from rich.table import Table
    from rich.text import Text

    candidate = Text(f"candidate: {summary['candidate']}")
    table = Table(title=f"conformance verdict: {summary['verdict']}", title_justify="left")
    for column in ("case", "mode", "pass", "fail", "error", "xfail", "not covered", "interface"):
        table.add_column(column, overflow="fold")
    # a module path is what the reader greps for: folded on a terminal, never cut (see below for logs)
    table.add_column("first divergence", overflow="fold")
    for case in summary["cases"]:
        for mode in case["modes"]:
            counts = {s: 0 for s in STATUSES}
            for tensor in case["tensors"]:
                if tensor["mode"] == mode and tensor["role"].startswith("outputs"):
                    counts[tensor["status"]] += 1
            blame = case["blame"].get(mode)
            where = f"{blame['key']}#{blame['call']}" if blame else ""
            if not where and case.get("error") and case["error"].get("stage") in (mode, "load", "prepare"):
                where = f"crashed: {case['error'].get('type')}"
            failing = counts["fail"] or counts["error"] or case.get("error")
            unjudged = counts["not_covered"] or counts["interface_mismatch"]
            style = "red" if failing else ("yellow" if unjudged else "green")
            table.add_row(case["case"], mode, str(counts["pass"] + counts["xpass"]), str(counts["fail"]),
                          str(counts["error"]), str(counts["xfail"]),
                          str(counts["not_covered"]), str(counts["interface_mismatch"]), where, style=style)  # fmt: skip
    if not console.is_terminal:  # a CI log: as wide as the table and the lines below need, nothing folded or cut
        needed = Measurement.get(console, console.options.update_width(4000), table).maximum
        console.width = max(console.width, needed, len(candidate))
    console.print(candidate)
    console.print(table)
    c = summary["counts"]
    console.print(Text(f"{summary['verdict']}: {c['pass']} pass, {c['fail']} fail, {c['error']} error, {c['xfail']} "
                       f"xfail, {c['not_covered']} not covered, {c.get('interface_mismatch', 0)} interface mismatch, "
                       f"{c['skipped']} skipped — exit {summary['exit_code']}"))  # fmt: skip
    provenance = summary.get("candidate_provenance") or {}
    package = provenance.get("package") or {}
    if package.get("location"):
        console.print(Text(f"candidate {package.get('import')} from {package['location']}"))
    for difference in summary.get("provenance_differences") or []:
        console.print(Text(f"provenance differs from the golden: {difference_line(difference)}", style="yellow"))
