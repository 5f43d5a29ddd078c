"""The project's own jobs on its committed goldens, for every subject the manifest lists (goldens/manifest.json):

    python -m conformance.project [check] [--subject NAME] [--candidate SPEC] [--policy FILE] [--reports DIR]
    python -m conformance.project goldens [--subject NAME [--size SIZE]] [--goldens DIR]

`check` (what `nox -s conformance` runs) checks each subject's candidate (its default, `impl`, unless --candidate
says otherwise) against each of its stores with the project policy, writes the reports of each run to
`<reports>/<subject>/` (the float32 golden, calibrated on its noise records and float64 reference) and
`<reports>/<subject>/<dtype>/` (the others), an index of every run in `<reports>/index.html` and `summary.md`, and
exits with the worst exit code. A float64 store is not checked
against an `official` candidate: the official model against its own float64 golden is the oracle itself.

`goldens` (what `nox -s goldens` runs) regenerates the committed goldens of each subject (or of --subject) and
rewrites that subject's entry of the manifest, leaving the others' as they are. Only when a recorder or the cases
change: each regeneration adds its full size to the repository's history.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import subjects
from .cli import main as cli_main
from .errors import ConformanceError, UsageError
from .report import write_index
from .store import manifest

GOLDENS = Path("goldens")


def check(goldens: Path, policy: Path, reports: Path, candidate: str | None = None, only: str | None = None,
          quiet: bool = False) -> int:  # fmt: skip
    """Check every store of every subject (or of `only`) the manifest lists; the worst exit code."""
    worst = 0
    entries = [entry for entry in manifest.stores(goldens) if only is None or entry.subject == only]
    if not entries:
        raise ConformanceError(f"the manifest lists no golden store{f' of subject {only}' if only else ''}",
                               path=goldens / manifest.NAME)  # fmt: skip
    primary: dict[str, manifest.StoreEntry] = {}  # per subject: its store with a float64 reference, else its first
    for entry in entries:
        if entry.subject not in primary or (entry.float64_reference and not primary[entry.subject].float64_reference):
            primary[entry.subject] = entry
    written = []
    for entry in entries:
        spec = candidate or subjects.get(entry.subject).default_candidate
        if spec.startswith("official") and entry.dtype == "float64":
            continue  # the official model against its own float64 golden is the oracle itself
        folder = reports / entry.subject
        if primary[entry.subject] is not entry:
            folder = folder / entry.dtype
        command = ["check", "--goldens", str(entry.path), "--candidate", spec, "--mode", "both", "--policy",
                   str(policy), "--reports", str(folder)] + (["-q"] if quiet else [])  # fmt: skip
        worst = max(worst, cli_main(command))
        if (folder / "summary.json").exists():
            written.append(folder)
    if written:
        write_index(reports, written)
    return worst


def goldens(folder: Path, only: str | None = None, size: str | None = None) -> int:
    """Regenerate the committed goldens of every subject (or of `only`), one manifest entry each; `size` (with
    `only`): goldens of another size of that subject, into another folder."""
    if size is not None and only is None:
        raise UsageError("--size is one subject's: name it with --subject")
    chosen = [subjects.get(only)] if only else subjects.all()
    for subject in chosen:
        entry = subject.make_goldens(folder, **({"size": size} if size is not None else {}))
        manifest.update_subject(folder, subject.name, entry)
        total = sum(store["bytes"] for store in entry["stores"])
        print(f"{subject.name}: {len(entry['stores'])} stores, {total / 1e6:.1f} MB, manifest updated")
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())
    print(f"goldens in {folder}: {size / 1e6:.1f} MB in total")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m conformance.project",
                                     description="The project's jobs on its committed goldens, for every subject.")  # fmt: skip
    parser.add_argument("job", nargs="?", default="check", choices=("check", "goldens"))
    parser.add_argument("--subject", help="only this subject (default: every subject of the manifest)")
    parser.add_argument("--goldens", type=Path, default=GOLDENS, help="the goldens folder (default goldens/)")
    parser.add_argument("--policy", type=Path, default=Path("conformance-policy.toml"))
    parser.add_argument("--reports", type=Path, default=Path("reports"))
    parser.add_argument("--candidate", help="candidate spec (default: each subject's own, impl)")
    parser.add_argument("--size", help="goldens: another size of --subject's seeded checkpoints (e.g. port), written "
                        "into --goldens with its own manifest")  # fmt: skip
    parser.add_argument("-q", "--quiet", action="store_true")
    args = parser.parse_args(argv)
    try:
        if args.job == "goldens":
            return goldens(args.goldens, args.subject, args.size)
        return check(args.goldens, args.policy, args.reports, args.candidate, args.subject, args.quiet)
    except ConformanceError as exc:
        print(f"conformance: error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
