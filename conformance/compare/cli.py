"""`conformance check` and `conformance report`: thin argument handling around the engine and writers."""

from __future__ import annotations

import argparse
import importlib.util
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import ConformanceError, UsageError
from .candidate import UnloadableCandidate
from .results import STATUSES

DEFAULT_POLICY_FILES = ("conformance-policy.toml", "pyproject.toml")


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


def find_policy(explicit: Path | None) -> Path | None:
    if explicit is not None:
        return explicit
    for name in DEFAULT_POLICY_FILES:
        path = Path(name)
        if path.exists():
            if name == "pyproject.toml":
                import tomllib

                try:
                    if "conformance" not in tomllib.loads(path.read_text()).get("tool", {}):
                        continue
                except (OSError, tomllib.TOMLDecodeError):
                    continue
            return path
    return None


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # ValueError: a module set to None in sys.modules (import blocked)
        return False


def make_candidate(spec: str, checkpoint: Path | None = None, mapping: Path | None = None) -> Any:
    """The candidate a `--candidate` spec names. A map routes a dump's tensors; a Python candidate (impl,
    official) is seen through its [modules] and [[kwargs]] sections."""
    if spec.startswith("dump:"):
        try:
            from ..ports.dump import DumpCandidate
        except ImportError:
            raise UsageError("dump candidates are not available in this version") from None
        return DumpCandidate(Path(spec[len("dump:") :]), mapping)
    if mapping is None:
        return _python_candidate(spec, checkpoint)
    from ..ports.mapped import MappedCandidate, load_python_map

    names = load_python_map(mapping)  # a malformed map is bad input (exit 2) before anything loads
    return MappedCandidate(_python_candidate(spec, checkpoint), names)


def _python_candidate(spec: str, checkpoint: Path | None) -> Any:
    if spec == "impl" or spec.startswith("impl:"):
        dtype = spec.partition(":")[2] or None
        if dtype not in (None, "float32", "float64"):
            raise UsageError(f"impl dtype must be float32 or float64, not {dtype!r}")
        from ..subjects.qwen3_tts.impl_binding import ImplCandidate

        return ImplCandidate(dtype, checkpoint)
    if spec == "official" or spec.startswith("official:"):
        if not _importable("torch"):  # the checking side itself never imports torch
            raise UsageError("the official candidate needs torch and qwen-tts (pip install 'conformance[record]')")
        from ..subjects.qwen3_tts.official_binding import OfficialCandidate, parse_spec

        return OfficialCandidate(checkpoint=checkpoint, **parse_spec(spec))
    raise UsageError(f"unknown candidate {spec!r} (impl, official[:...], dump:PATH)")


def load_candidate(spec: str, checkpoint: Path | None = None, mapping: Path | None = None) -> Any:
    """The candidate of a spec; one whose construction raises (a fork that fails on import) stands as an
    UnloadableCandidate, so every case gets its error verdict and the reports are still written. Bad input
    (a malformed dump or map, an unknown spec) stays bad input."""
    try:
        return make_candidate(spec, checkpoint, mapping)
    except ConformanceError:
        raise
    except Exception as exc:
        return UnloadableCandidate(spec, exc)


def run_and_report(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from rich.console import Console

    from ..store import GoldenStore
    from . import engine
    from .policy import load_policy

    console = Console(stderr=True, quiet=args.quiet)
    policy = load_policy(find_policy(args.policy))
    candidate = load_candidate(args.candidate, args.checkpoint, args.map)
    if args.mode is None:
        modes = tuple(getattr(candidate, "default_modes", ("isolated", "chained")))
    else:
        modes = ("isolated", "chained") if args.mode == "both" else (args.mode,)
    if args.repeat < 1:
        raise UsageError(f"--repeat must be at least 1 (runs per case), not {args.repeat}")
    if args.repeat > 1 and "chained" not in modes:
        raise UsageError("--repeat needs the chained mode (the candidate runs whole cases): drop --mode isolated")
    with GoldenStore(args.goldens) as store:
        lookup = engine.ReferenceLookup(args.reference64) if args.reference64 else engine.locate_reference(args.goldens)
        reference_path = lookup.path
        reference = GoldenStore(reference_path) if reference_path else None
        from ..subjects.qwen3_tts.subject import SUBJECT, TOKEN_LOGITS

        policy = with_token_logits(policy, TOKEN_LOGITS)
        options = engine.CheckOptions(modes=modes, cases=args.cases, modules=args.modules, reference=reference,
                                      reference_note=lookup.note, allow_partial=args.allow_partial,
                                      command=shlex.join(["conformance", *argv]), subject=SUBJECT,
                                      repeat=args.repeat)  # fmt: skip
        cases = args.cases or store.cases
        try:
            if args.jobs > 1 and len(cases) > 1:
                run = _check_in_parallel(args, store, candidate, policy, options, modes, reference_path, cases)
            else:
                with _progress(console, args.quiet) as progress:
                    options.on_progress = progress
                    run = engine.check(store, candidate, policy, options)
        finally:
            if reference is not None:
                reference.close()
    add_replay_bundles(run)
    summary = write_reports(run, args.reports, html=not args.no_html, console=console)
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
        console.print(f"[yellow]note: {escape(note)}[/yellow]")


def add_replay_bundles(run: Any) -> None:
    """Every blamed module call gets the replay bundle `conformance export` writes for it, whatever the
    candidate (a dump's already names it, under its map's export_dir): one module's golden inputs, weights
    and outputs, to unit-test it alone. Under $CONFORMANCE_EXPORT_DIR when set, else relative to any export."""
    import os

    from ..ports.export import replay_bundle_path

    env = os.environ.get("CONFORMANCE_EXPORT_DIR")
    for case in run.cases:
        for blame in case.blame.values():
            if blame is not None and not blame.replay_bundle:
                blame.replay_bundle = replay_bundle_path(case.case, blame.key, blame.call, Path(env) if env else None)


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


def with_token_logits(policy: Any, logits: Sequence[str]) -> Any:
    """The subject's logits modules unless the policy names its own."""
    if policy.tokens.logits:
        return policy
    from dataclasses import replace

    return replace(policy, tokens=replace(policy.tokens, logits=tuple(logits)))


def _check_in_parallel(args: argparse.Namespace, store: Any, candidate: Any, policy: Any, options: Any,
                       modes: tuple[str, ...], reference: Path | None, cases: list[str]) -> Any:  # fmt: skip
    import time

    from . import engine
    from .parallel import Job, check_parallel
    from .results import RunResult

    missing = [name for name in cases if name not in store.cases]
    if missing:
        raise UsageError(
            f"no case {missing[0]!r} in the golden store (cases: {', '.join(store.cases)})", path=store.path
        )
    job = Job(str(args.goldens), str(reference) if reference else None, args.candidate,
              str(args.checkpoint) if args.checkpoint else None, str(args.map) if args.map else None,
              str(policy.path) if policy.path else None, tuple(modes), tuple(args.modules) if args.modules else None,
              args.allow_partial, options.command, options.reference_note, options.repeat)  # fmt: skip
    template = RunResult(candidate.description, str(store.path), policy.describe(), options.command,
                         time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), 0.0,
                         engine._provenance_summary(store, store.case(cases[0])), modes=engine.run_modes(options),
                         allow_partial=args.allow_partial)  # fmt: skip
    return check_parallel(job, list(cases), args.jobs, template)


def write_reports(run: Any, folder: Path, html: bool = True, console: Any = None) -> dict[str, Any]:
    from ..report import writers

    folder.mkdir(parents=True, exist_ok=True)
    summary = writers.write_summary(run, folder / "summary.json")
    writers.write_junit(summary, folder / "junit.xml")
    writers.append_history(summary, folder / "history.jsonl")
    html_name = None
    try:
        from ..report.artifacts import save_artifacts
    except ImportError:
        save_artifacts = None  # type: ignore[assignment]
    if save_artifacts is not None:  # the candidate arrays the page draws on, so `conformance report` can redraw it
        save_artifacts(run.artifacts, folder / "artifacts.npz", summary)
    if html:
        try:
            from ..report.html import render_report
        except ImportError:
            render_report = None  # type: ignore[assignment]
        if render_report is not None:
            render_report(summary, folder / "index.html", history=writers.read_history(folder / "history.jsonl"),
                          artifacts=run.artifacts)  # fmt: skip
            html_name = "index.html"
    writers.write_markdown(summary, folder / "summary.md", html_name)
    if console is not None:
        console.print(f"reports in {folder}/: summary.json junit.xml summary.md history.jsonl"
                      + (" index.html" if html_name else ""))  # fmt: skip
    return summary


def cmd_check(args: argparse.Namespace, argv: Sequence[str]) -> int:
    return run_and_report(args, argv)


def cmd_report(args: argparse.Namespace, argv: Sequence[str]) -> int:
    import json

    from ..errors import ConformanceError
    from ..report import writers

    try:
        summary = json.loads(args.summary.read_text())
    except FileNotFoundError:
        raise ConformanceError("summary not found (run `conformance check` first)", path=args.summary) from None
    except ValueError as exc:
        raise ConformanceError(f"not a summary.json ({exc})", path=args.summary) from None
    if summary.get("schema") != "conformance-summary/1":
        raise ConformanceError("not a conformance summary (schema field)", path=args.summary)
    try:
        from ..report.html import render_report
    except ImportError:
        raise UsageError("the HTML report is not available in this version") from None
    from ..report.artifacts import load_artifacts

    folder = args.output.parent
    history = writers.read_history(args.summary.parent / "history.jsonl")
    artifacts = load_artifacts(args.summary.parent / "artifacts.npz", summary)
    render_report(summary, args.output, history=history, artifacts=artifacts)
    writers.write_markdown(summary, folder / "summary.md", args.output.name)
    print(f"wrote {args.output}")
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

    from .provenance import difference_line

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
