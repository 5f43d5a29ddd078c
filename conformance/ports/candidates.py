"""Candidates from their `--candidate` specs (numpy only): a port's dump (`dump:PATH`, any subject), or a subject's
Python candidate (`impl[:...]`, `official[:...]`, built by the subject of the checked cases), either seen through a
map (`--map`: a dump's names and layouts, or a Python candidate's moved modules and renamed keywords).

`CandidateSpec` is the picklable factory conformance.compare.check_goldens takes (worker processes build their own
candidate from it); `load_candidate` turns a candidate whose construction raises (a fork that fails on import) into
one that gives every case an error verdict, so the reports are still written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..compare.candidate import Candidate, UnloadableCandidate
from ..errors import ConformanceError, UsageError
from .dump import DumpCandidate
from .mapped import MappedCandidate, load_python_map

DUMP_PREFIX = "dump:"


def make_candidate(spec: str, subject: Any = None, *, checkpoint: Path | None = None,
                   mapping: Path | None = None, black_box: bool = False) -> Candidate:  # fmt: skip
    """The candidate a spec names. `subject` (conformance.subjects.Subject) builds Python candidates; a map routes
    a dump's tensors, or is the [modules] and [[kwargs]] a Python candidate is seen through."""
    if spec.startswith(DUMP_PREFIX):
        return DumpCandidate(Path(spec[len(DUMP_PREFIX) :]), mapping, black_box=black_box)
    if black_box:
        raise UsageError("--black-box judges a dump's final outputs (outputs/<name>): it needs --candidate dump:PATH")
    names = load_python_map(mapping) if mapping is not None else None  # a malformed map is bad input before loading
    if subject is None:
        raise UsageError(f"a {spec!r} candidate is built by the subject of the checked cases, and these name no one "
                         "installed subject (they come from several, name none, or name one not installed here: "
                         "see list-cases): select cases of one subject (--cases), or check a dump (dump:PATH)")  # fmt: skip
    built = subject.candidate(spec, checkpoint=checkpoint)
    return MappedCandidate(built, names) if names is not None else built


def load_candidate(spec: str, subject: Any = None, *, checkpoint: Path | None = None,
                   mapping: Path | None = None, black_box: bool = False) -> Candidate:  # fmt: skip
    """`make_candidate`, with a candidate whose construction raises standing as an UnloadableCandidate: every case
    gets its error verdict and the reports are still written. Bad input (a malformed dump or map, an unknown spec)
    stays bad input."""
    try:
        return make_candidate(spec, subject, checkpoint=checkpoint, mapping=mapping, black_box=black_box)
    except ConformanceError:
        raise
    except Exception as exc:
        return UnloadableCandidate(spec, exc)


@dataclass(frozen=True)
class CandidateSpec:
    """A `--candidate` spec with its options, as a picklable factory: `spec(subject) -> Candidate`."""

    spec: str
    checkpoint: Path | None = None
    mapping: Path | None = None
    black_box: bool = False

    def __call__(self, subject: Any) -> Candidate:
        return load_candidate(
            self.spec, subject, checkpoint=self.checkpoint, mapping=self.mapping, black_box=self.black_box
        )
