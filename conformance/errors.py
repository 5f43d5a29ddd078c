"""Typed errors for bad input.

Every error the user can cause (an unreadable golden file, a malformed policy, a dump with the wrong
shape) is a `ConformanceError`: it renders as one line naming the file and, where there is one, the
tensor, and the CLI maps it to exit code 2. Anything else escaping the CLI is a bug in this tool.
"""

from __future__ import annotations

from pathlib import Path


class ConformanceError(Exception):
    """Bad input or usage. Rendered as a single line; exit code 2."""

    exit_code = 2

    def __init__(self, message: str, *, path: str | Path | None = None, tensor: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.path = str(path) if path is not None else None
        self.tensor = tensor

    def __str__(self) -> str:
        parts = [p for p in (self.path, self.tensor) if p]
        prefix = ": ".join(parts)
        text = f"{prefix}: {self.message}" if prefix else self.message
        return " ".join(text.split("\n"))


class UsageError(ConformanceError):
    """The command line asks for something that cannot be done (unknown case, bad option)."""


class StoreError(ConformanceError):
    """A golden store cannot be read: not HDF5, truncated, incomplete, wrong schema, missing tensor."""


class IntegrityError(StoreError):
    """A tensor's bytes do not match the checksum recorded when it was written."""


class PolicyError(ConformanceError):
    """A tolerance policy file is malformed (unknown key, bad glob, negative tolerance, ...)."""


class DumpError(ConformanceError):
    """A candidate's tensor dump is malformed (truncated file, wrong dtype, shape nothing explains)."""


class MappingError(ConformanceError):
    """A port's name/layout mapping file is malformed or ambiguous."""
