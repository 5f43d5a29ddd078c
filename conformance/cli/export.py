"""`conformance export`: argument handling around conformance.ports.export (no torch)."""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..compare import find_policy, find_reference, load_policy
from ..errors import ConformanceError
from ..ports import ExportOptions, export, validate_export
from ..ports.export import DEFAULT_WEIGHT_LIMIT
from ..store import GoldenStore


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "export",
        help="export a golden store's inputs, goldens, manifest and per-module replay bundles for a port",
        description=(
            "Write, per case, what a port in another language needs to check itself: the inputs it must feed "
            "(inputs.safetensors), every golden tensor named key#call/role (goldens.safetensors), the case "
            "outputs, a JSON manifest (names, shapes, dtypes, layout hints, call indices, producers, the official "
            "config, the tolerances `conformance check` will apply) and one replay bundle per module call "
            "(golden inputs, the module's weight slice, expected outputs) to unit-test one layer. The port then "
            "dumps its tensors and `conformance check --candidate dump:PATH --map MAP.toml` checks them. "
            "Exit 0 written, 2 bad input or usage."
        ),
    )
    p.add_argument("--goldens", required=True, type=Path, help="golden store (.h5)")
    p.add_argument("--cases", nargs="+", metavar="CASE", help="cases to export (default: all)")
    p.add_argument("--format", default="safetensors", choices=("safetensors", "npz"), help="tensor file format")
    p.add_argument("-o", "--output", required=True, type=Path, help="output folder")
    p.add_argument("--policy", type=Path, help="tolerance policy (default: as `conformance check` finds it)")
    p.add_argument("--modules", nargs="+", metavar="GLOB", help="goldens and bundles of matching module keys only")
    p.add_argument("--no-bundles", action="store_true", help="skip the per-module replay bundles")
    p.add_argument("--bundle-weight-limit", type=int, default=None, metavar="BYTES",
                   help="weight slices larger than this are referenced (checkpoint file + names), not copied, in "
                        "bundles (default 1 MiB)")  # fmt: skip
    p.add_argument("--checkpoint", type=Path, help="checkpoint folder (default: the provenance path)")
    p.add_argument("--reference64", type=Path,
                   help="float64 golden for chained tolerances of a float32 golden (default: from manifest.json)")  # fmt: skip
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace, argv: Sequence[str]) -> int:
    policy = load_policy(find_policy(args.policy))
    if args.output.exists() and not args.output.is_dir():
        raise ConformanceError("the output exists and is not a folder", path=args.output)

    def on_case(name: str, entry: dict[str, Any]) -> None:
        if not args.quiet:
            print(f"exported {name}: {entry['calls']} calls, {entry['bundles']} replay bundles -> {args.output / name}")

    with GoldenStore(args.goldens) as store:
        reference_path = args.reference64 or find_reference(args.goldens)
        reference = GoldenStore(reference_path) if reference_path else None
        try:
            options = ExportOptions(fmt=args.format, cases=args.cases, modules=args.modules, bundles=not args.no_bundles,
                                    weight_limit=args.bundle_weight_limit if args.bundle_weight_limit is not None
                                    else DEFAULT_WEIGHT_LIMIT, checkpoint=args.checkpoint, reference=reference,
                                    command=shlex.join(["conformance", *argv]), on_case=on_case)  # fmt: skip
            export(store, args.output, policy, options)
        finally:
            if reference is not None:
                reference.close()
    problems = validate_export(args.output)
    if problems:  # our own output failed its schema: a bug of this tool, reported as such
        raise RuntimeError(f"the export does not validate: {problems[0]} ({len(problems)} problem(s))")
    if not args.quiet:
        print(f"manifest: {args.output / 'manifest.json'} (validated)")
    return 0
