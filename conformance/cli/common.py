"""What every command of the command line shares."""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence

EXIT_OK, EXIT_DIVERGED, EXIT_BAD_INPUT = 0, 1, 2


class Parser(argparse.ArgumentParser):
    """argparse that reports usage errors with exit code 2 on one line (argparse's own convention)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT)


def command_line(argv: Sequence[str]) -> str:
    """The command as it was typed, for the provenance of what it writes."""
    return shlex.join(["conformance", *argv])
