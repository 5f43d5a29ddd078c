"""Checking many cases at once: one process per worker, cases dealt out, verdicts merged in case order.

Each worker opens the stores and builds its own candidate from the same spec, so a parallel run gives
exactly the verdicts of a serial one (a test checks it); only timings differ.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .results import RunResult


@dataclass(frozen=True)
class Job:
    """Everything a worker needs to check some cases, as plain picklable values."""

    goldens: str
    reference: str | None
    candidate: str
    checkpoint: str | None
    mapping: str | None
    policy: str | None
    modes: tuple[str, ...]
    modules: tuple[str, ...] | None
    allow_partial: bool
    command: str
    reference_note: str = ""


def _work(job: Job, cases: list[str]) -> tuple[list[Any], dict[str, Any]]:
    from ..store import GoldenStore
    from ..subjects.qwen3_tts.subject import SUBJECT, TOKEN_LOGITS
    from . import engine
    from .cli import make_candidate, with_token_logits
    from .policy import load_policy

    policy = with_token_logits(load_policy(job.policy), TOKEN_LOGITS)
    candidate = make_candidate(job.candidate, Path(job.checkpoint) if job.checkpoint else None,
                               Path(job.mapping) if job.mapping else None)  # fmt: skip
    with GoldenStore(job.goldens) as store:
        reference = GoldenStore(job.reference) if job.reference else None
        try:
            options = engine.CheckOptions(modes=job.modes, cases=cases, modules=list(job.modules) if job.modules else None,
                                          reference=reference, reference_note=job.reference_note,
                                          allow_partial=job.allow_partial, command=job.command, subject=SUBJECT)  # fmt: skip
            run = engine.check(store, candidate, policy, options)
        finally:
            if reference is not None:
                reference.close()
    return run.cases, run.artifacts


def check_parallel(job: Job, cases: list[str], jobs: int, template: RunResult) -> RunResult:
    """Check `cases` with `jobs` worker processes; returns `template` filled with the merged results."""
    import time

    started = time.time()
    batches = [cases[i::jobs] for i in range(jobs) if cases[i::jobs]]
    context = multiprocessing.get_context("spawn")  # workers must not inherit the parent's threads or torch state
    with ProcessPoolExecutor(max_workers=len(batches), mp_context=context) as pool:
        futures = [pool.submit(_work, job, batch) for batch in batches]
        results = [future.result() for future in futures]
    by_name: dict[str, Any] = {}
    for case_results, artifacts in results:
        for case in case_results:
            by_name[case.case] = case
        template.artifacts.update(artifacts)
    template.cases = [by_name[name] for name in cases]
    from .engine import calibration_notes

    template.notes.extend(calibration_notes(template.cases))
    template.seconds = time.time() - started
    return template
