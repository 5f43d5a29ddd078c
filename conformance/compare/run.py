"""Check a candidate against a golden store file: what `conformance check` does between parsing its arguments and
writing its reports (numpy only).

    from conformance.compare import check_goldens, find_policy, load_policy
    from conformance.ports import CandidateSpec

    run = check_goldens(Path("golden.h5"), CandidateSpec("impl"), load_policy(find_policy(None)))

The candidate is given as a factory, `factory(subject) -> Candidate`, called with the subject of the checked
cases (found through the registry from the golden: every case records its subject; None when the cases come from
several subjects or name none): a spec such as `impl` means the implementation of that subject. With `jobs` > 1
each worker process builds its own candidate from the same factory (so it must pickle: a module-level function,
a functools.partial of one, or conformance.ports.CandidateSpec), and the verdicts are those of a serial run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import subjects
from ..errors import UsageError
from ..store import GoldenStore
from . import engine
from .candidate import Candidate
from .parallel import Job, check_parallel, run_subject
from .policy import Policy
from .results import RunResult

CandidateFactory = Callable[[Any], Candidate]
MODES = ("isolated", "chained")


def check_goldens(
    goldens: Path,
    candidate: CandidateFactory | Candidate,
    policy: Policy,
    *,
    modes: tuple[str, ...] | None = None,
    cases: list[str] | None = None,
    modules: list[str] | None = None,
    reference64: Path | None = None,
    allow_partial: bool = False,
    repeat: int = 1,
    jobs: int = 1,
    command: str = "",
    on_progress: Callable[[str, int, int], None] | None = None,
    reference_from_candidate: bool = False,
    checkpoint: Path | None = None,
    precision: str | None = None,
) -> RunResult:
    """Check `candidate` (a Candidate, or a factory of one) against the golden store `goldens` under `policy`.

    modes: default what the candidate supports (`default_modes`: both, chained for dumps). reference64: the float64
    golden that calibrates chained thresholds (default: the twin the store names, else the manifest's pairing).
    repeat: run each case that many times end to end and judge runs 2..N bit for bit against run 1. precision: the
    candidate's precision (over the policy's): thresholds scale that precision twin's noise (docs/precision.md)."""
    policy = policy.at_precision(precision)
    if repeat < 1:
        raise UsageError(f"--repeat must be at least 1 (runs per case), not {repeat}")
    with GoldenStore(goldens) as store:
        names = list(cases or store.cases)
        missing = [name for name in names if name not in store.cases]
        if missing:
            raise UsageError(f"no case {missing[0]!r} in the golden store (cases: {', '.join(store.cases)})",
                             path=store.path)  # fmt: skip
        engine.require_twins(store, names, policy)  # before a candidate loads anything
        factory = candidate if not isinstance(candidate, Candidate) else None
        built = candidate if isinstance(candidate, Candidate) else candidate(run_subject(store, names))
        if modes is None:
            modes = tuple(getattr(built, "default_modes", MODES))
        if repeat > 1 and "chained" not in modes:
            raise UsageError("--repeat needs the chained mode (the candidate runs whole cases): drop --mode isolated")
        lookup = engine.ReferenceLookup(reference64) if reference64 else engine.locate_reference(Path(goldens))
        reference = GoldenStore(lookup.path) if lookup.path else None
        try:
            options = engine.CheckOptions(modes=modes, cases=names, modules=modules, reference=reference,
                                          reference_note=lookup.note, allow_partial=allow_partial, command=command,
                                          repeat=repeat, on_progress=on_progress,
                                          reference_from_candidate=reference_from_candidate,
                                          checkpoint=checkpoint)  # fmt: skip
            if jobs > 1 and len(names) > 1:
                if factory is None:
                    raise UsageError("checking in several processes needs a candidate factory, not a candidate")
                job = Job(str(goldens), str(lookup.path) if lookup.path else None, factory, policy, tuple(modes),
                          tuple(modules) if modules else None, allow_partial, command, lookup.note, repeat,
                          tuple(subjects.registered()))  # fmt: skip
                template = RunResult(built.description, str(store.path), policy.describe(), command,
                                     time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), 0.0,
                                     engine.provenance_summary(store, store.case(names[0])),
                                     modes=engine.run_modes(options), allow_partial=allow_partial)  # fmt: skip
                return check_parallel(job, names, jobs, template)
            return engine.check(store, built, policy, options)
        finally:
            if reference is not None:
                reference.close()
