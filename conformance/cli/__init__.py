"""`conformance`: record official goldens, inspect them, check candidates against them, export them for ports.

Exit codes: 0 all conform, 1 a divergence beyond policy, 2 bad input or usage (the message names the file and
tensor). The modules of this package only parse arguments and call the library (conformance.capture, .store,
.compare, .ports, .report and the subject registry, conformance.subjects), which never imports them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .. import __version__
from ..errors import ConformanceError
from . import check, checkpoint, export, inspect, record
from .common import Parser

# -- entry point ---------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="conformance",
        description="Differential conformance checking of model ports against the official model of each subject "
        "(`conformance list-cases` lists them). Exit codes: 0 conform, 1 divergence beyond policy, 2 bad input or usage.",
    )
    parser.add_argument("--version", action="version", version=f"conformance {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    record.add_commands(sub)
    inspect.add_commands(sub)
    record.add_list_cases(sub)
    check.add_commands(sub)
    export.add_commands(sub)
    checkpoint.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args, argv))
    except ConformanceError as exc:
        print(f"conformance: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("conformance: interrupted", file=sys.stderr)
        return 130
