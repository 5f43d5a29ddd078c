"""`conformance checkpoint`: write a subject's seeded checkpoints as a self-contained folder a port's converter reads
(the subject builds them, found through the registry)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from .. import subjects
from ..errors import UsageError
from .common import EXIT_OK


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "checkpoint",
        help="write the seeded checkpoints the goldens were recorded from, as a folder a port's converter reads",
        description=(
            "Build the subject's seeded random checkpoints (the same weights as its goldens for the same size and "
            "seed) and write them into a new folder in the layout of the published checkpoints: every key of the "
            "published configs, the tokenizer files, weights in the chosen dtype. Point a port's converter at it, "
            "run the port on the exported cases, check its dump. Nothing is written unless the whole folder was "
            "built."
        ),
    )
    p.add_argument("-o", "--output", required=True, type=Path, help="folder to create (must not exist, or be empty)")
    p.add_argument("--subject", required=True, help="the subject whose checkpoints to write (see list-cases)")
    p.add_argument("--size", default="tiny", help="seeded model size (default tiny; the subject lists its sizes)")
    p.add_argument("--seed", type=int, default=None, help="seed of the random weights (default: the goldens' seed)")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default=None,
                   help="precision of the saved weights (same values either way: they are rounded to bfloat16 as "
                        "published; default: the subject's for the size)")  # fmt: skip
    p.add_argument("--variant", default=None,
                   help="write one model of the subject's family as a folder of plain files (an unknown name "
                        "lists the subject's variants); default: the whole set")  # fmt: skip
    p.set_defaults(func=cmd_checkpoint)


def cmd_checkpoint(args: argparse.Namespace, argv: Sequence[str]) -> int:
    out: Path = args.output
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError("the output exists and is not an empty folder: nothing was written", path=out)
    if not out.parent.is_dir():
        raise UsageError("the output's parent folder does not exist", path=out.parent)
    subject = subjects.get(args.subject)
    try:
        folders = subject.write_checkpoint(out, size=args.size, seed=args.seed, dtype=args.dtype,
                                           variant=args.variant)  # fmt: skip
    except ImportError as exc:
        raise UsageError(f"building checkpoints needs the official stack: {exc}") from None
    for folder in folders:
        print(f"wrote {folder}")
    return EXIT_OK
