"""`conformance inspect`: what a golden store holds, or `--verify`: every tensor against its checksum."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..store import GoldenStore
from ..store.inspect import print_inspect, verify_store
from .common import EXIT_OK


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("inspect", help="list the cases, modules, calls, shapes and provenance of a golden store",
                       description="Summarise a golden store: its cases, and with --case the modules of one case "
                                   "in execution order with their call counts, shapes and dtypes. With --verify, "
                                   "read every tensor back and check its checksum instead: exit 0 with one OK "
                                   "line, or 2 naming the first corrupted tensor.")  # fmt: skip
    p.add_argument("store", type=Path, help="golden store (.h5)")
    p.add_argument("--case", help="also list the modules of this case and its provenance")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.add_argument("--verify", action="store_true",
                   help="check every stored tensor against its recorded checksum (exit 2 on the first mismatch)")  # fmt: skip
    p.set_defaults(func=cmd_inspect)


VERIFY_PROGRESS_BYTES = 64 << 20  # stores larger than this show a progress bar while verifying


def cmd_inspect(args: argparse.Namespace, argv: Sequence[str]) -> int:
    with GoldenStore(args.store) as store:
        if args.verify:
            return _verify(store)
        print_inspect(store, args.case, args.json)
    return EXIT_OK


def _verify(store: Any) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    big = store.path.stat().st_size > VERIFY_PROGRESS_BYTES
    console = Console(stderr=True)
    if big:
        with Progress(TextColumn("[bold]verifying"), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                      console=console, transient=True) as progress:  # fmt: skip
            task = progress.add_task("verify", total=None)
            found = verify_store(store, lambda done, total: progress.update(task, completed=done, total=total))
    else:
        found = verify_store(store)
    summaries = f"; {found.summaries} kept as statistics or hash only" if found.summaries else ""
    print(f"OK: {store.path}: {found.tensors} tensors of {found.cases} case(s), {found.nbytes / 1e6:.1f} MB, "
          f"match their checksums{summaries}")  # fmt: skip
    return EXIT_OK
