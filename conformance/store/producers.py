"""Where each golden input came from: the recorded calls whose outputs hold the same stored data.

A tensor passed from one module to the next is stored once (the recorder writes a reference instead of a
second copy), so an input leaf that is another call's output shares its (dataset, row). Its producers are
the output leaves of calls that returned before the consuming call started and share that storage. An
input with no producer entered from outside the recorded modules: a case input, or a tensor computed by
code that no hook sees. Both blame for dumps (ports) and blame through unhooked inputs (compare) use this.
"""

from __future__ import annotations

from collections import defaultdict

from .reader import Case
from .schema import CallRecord, LeafRecord


def producers(case: Case) -> dict[tuple[str, int, str], list[LeafRecord]]:
    """(key, call, input role) -> the output leaves holding the same golden data, produced before the call."""
    outputs: dict[tuple[str, int], list[tuple[LeafRecord, CallRecord]]] = defaultdict(list)  # (location, row)
    calls = case.calls()
    for call in calls:
        for leaf in case.leaves(call.key, call.call):
            if leaf.is_tensor and leaf.location and leaf.role.startswith("outputs"):
                outputs[(leaf.location, leaf.row)].append((leaf, call))
    graph: dict[tuple[str, int, str], list[LeafRecord]] = {}
    for call in calls:
        for leaf in case.leaves(call.key, call.call):
            if not leaf.is_tensor or not leaf.location or leaf.role.startswith("outputs"):
                continue
            found = [out for out, producer in outputs.get((leaf.location, leaf.row), [])
                     if producer.seq_end < call.seq_start]  # fmt: skip
            if found:
                graph[(call.key, call.call, leaf.role)] = found
    return graph
