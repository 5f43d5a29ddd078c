"""Blame for dumps: the first module whose outputs fail while the producers of its golden inputs pass.

A port's dump usually holds outputs only, so a module's inputs cannot be judged directly. The golden
store knows where each input came from: a tensor passed from one module to the next is stored once, so
an input leaf that is another call's output refers to the same (dataset, row). The producers of an input
are the output leaves, of calls that returned before this call started, that share its storage
(`store.producers`); their verdicts stand in for the input's. Calls are visited in completion order
(children before the modules that contain them), so the first one found is the innermost module where
the error appears.
"""

from __future__ import annotations

from ..compare.results import ERROR, FAIL, NOT_COVERED, SKIPPED, Blame, CaseResult, TensorResult
from ..store.producers import producers  # re-exported: ports users import it from here
from ..store.reader import Case

__all__ = ["dump_blame", "producers"]

FAILING = (FAIL, ERROR)


def dump_blame(case: Case, result: CaseResult, mode: str = "chained") -> Blame | None:
    """The first call (completion order) with a failing output none of whose inputs is known to fail: an
    input fails when the dump holds it and it fails, or when one of its golden producers fails."""
    verdicts: dict[tuple[str, int, str], TensorResult] = {
        (t.key, t.call, t.role): t for t in result.tensors if t.mode == mode
    }
    graph = producers(case)
    for call in case.calls_by_completion():
        leaves = [leaf for leaf in case.leaves(call.key, call.call) if leaf.is_tensor]
        failing = [verdicts[(call.key, call.call, leaf.role)] for leaf in leaves
                   if leaf.role.startswith("outputs") and (call.key, call.call, leaf.role) in verdicts
                   and verdicts[(call.key, call.call, leaf.role)].status in FAILING]  # fmt: skip
        if not failing:
            continue
        bad = False
        checked: list[str] = []
        unknown: list[str] = []
        for leaf in leaves:
            if leaf.role.startswith("outputs"):
                continue
            direct = verdicts.get((call.key, call.call, leaf.role))
            if direct is not None and direct.status not in (NOT_COVERED, SKIPPED):
                if direct.status in FAILING:
                    bad = True
                    break
                checked.append(direct.name)
                continue
            evidence = [verdicts[(p.key, p.call, p.role)] for p in graph.get((call.key, call.call, leaf.role), [])
                        if (p.key, p.call, p.role) in verdicts]  # fmt: skip
            evidence = [e for e in evidence if e.status not in (NOT_COVERED, SKIPPED)]
            if any(e.status in FAILING for e in evidence):
                bad = True
                break
            if evidence:
                checked.append(evidence[0].name)
            else:
                unknown.append(leaf.role)
        if bad:
            continue
        reason = "; ".join(f"{t.role}: {t.message}" for t in failing[:3])
        if checked:
            reason += f" — its inputs conform (through {len(checked)} producer or dumped tensor(s))"
        if unknown:
            reason += f" — inputs not checked (no dumped producer): {', '.join(unknown[:5])}"
        return Blame(mode, call.key, call.call, call.seq_end, reason, [t.name for t in failing], checked)
    return None
