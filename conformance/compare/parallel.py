"""Checking many cases at once: one process per worker, cases dealt out, verdicts merged in case order.

Each worker opens the stores and builds its own candidate from the same factory, so a parallel run gives
exactly the verdicts of a serial one (a test checks it); only timings differ.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

from .. import subjects
from ..errors import ConformanceError
from ..store import GoldenStore
from . import engine
from .policy import Policy
from .results import RunResult


@dataclass(frozen=True)
class Job:
    """Everything a worker needs to check some cases, picklable: paths, the policy, the candidate's factory
    (called with the cases' subject, in the worker) and the subjects registered at run time in the parent (a
    worker process starts with the built-in and installed ones only)."""

    goldens: str
    reference: str | None
    candidate: Callable[[Any], Any]
    policy: Policy
    modes: tuple[str, ...]
    modules: tuple[str, ...] | None
    allow_partial: bool
    command: str
    reference_note: str = ""
    repeat: int = 1
    registered: tuple[Any, ...] = ()


def _work(job: Job, cases: list[str]) -> tuple[list[Any], dict[str, Any], str, dict[str, Any]]:
    for subject in job.registered:
        subjects.register(subject, replace=True)
    with GoldenStore(job.goldens) as store:
        candidate = job.candidate(run_subject(store, cases))
        reference = GoldenStore(job.reference) if job.reference else None
        try:
            options = engine.CheckOptions(modes=job.modes, cases=cases, modules=list(job.modules) if job.modules else None,
                                          reference=reference, reference_note=job.reference_note,
                                          allow_partial=job.allow_partial, command=job.command, repeat=job.repeat)  # fmt: skip
            run = engine.check(store, candidate, job.policy, options)
        finally:
            if reference is not None:
                reference.close()
    return run.cases, run.artifacts, run.candidate, run.candidate_provenance


def run_subject(store: GoldenStore, cases: list[str]) -> Any:
    """The one subject of these cases, or None when they come from several, name none or name one that is not
    installed here (a candidate that needs a subject then says so; a dump needs none)."""
    found = {store.case(name).provenance.get("subject") for name in cases}
    if len(found) != 1 or None in found:
        return None
    try:
        return subjects.get(str(next(iter(found))))
    except ConformanceError:
        return None


def merge_provenance(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The workers' provenance of one candidate: the first one's, with every file any worker read (a dump's
    files differ from worker to worker: each reads its own cases')."""
    merged = dict(parts[0]) if parts else {}
    files = {info["path"]: info for part in parts for info in part.get("files", []) if isinstance(info, dict)}
    if files:
        merged["files"] = [files[path] for path in sorted(files)]
    for part in parts[1:]:
        for name, value in (part.get("metadata") or {}).items():
            merged.setdefault("metadata", {}).setdefault(name, value)
        for name, value in (part.get("compared_with_golden") or {}).items():
            merged.setdefault("compared_with_golden", {}).setdefault(name, value)
    return merged


def check_parallel(job: Job, cases: list[str], jobs: int, template: RunResult) -> RunResult:
    """Check `cases` with `jobs` worker processes; returns `template` filled with the merged results."""
    started = time.time()
    batches = [cases[i::jobs] for i in range(jobs) if cases[i::jobs]]
    context = multiprocessing.get_context("spawn")  # workers must not inherit the parent's threads or torch state
    with ProcessPoolExecutor(max_workers=len(batches), mp_context=context) as pool:
        futures = [pool.submit(_work, job, batch) for batch in batches]
        results = [future.result() for future in futures]
    by_name: dict[str, Any] = {}
    for case_results, artifacts, _, _ in results:
        for case in case_results:
            by_name[case.case] = case
        template.artifacts.update(artifacts)
    template.cases = [by_name[name] for name in cases]
    # what the candidate is, as the workers found it once loaded (the parent never loads it)
    template.candidate = results[0][2]
    template.candidate_provenance = merge_provenance([provenance for *_, provenance in results])
    template.notes.extend(engine.calibration_notes(template.cases))
    template.seconds = time.time() - started
    return template
