"""The candidate arrays a check run kept for the report, saved next to summary.json (numpy only).

`run.artifacts[case]` maps (module key, call) to {role: array}: the chained outputs the subject asks to
keep (generated codes, waveforms) and the candidate's values of the first failing output tensors (chained
under their role, isolated under "isolated:<role>"). They go to one .npz (no pickles) with a JSON index,
written to a temporary name and renamed, tagged with the run they belong to so a later
`conformance report` never pairs a summary with another run's arrays.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

Artifacts = dict[str, dict[tuple[str, int], dict[str, np.ndarray]]]
INDEX = "__index__"


def run_tag(summary: dict[str, Any]) -> dict[str, str]:
    """What identifies the run a set of artifacts came from."""
    return {"started_utc": str(summary.get("started_utc", "")), "candidate": str(summary.get("candidate", "")),
            "goldens": str(summary.get("goldens", ""))}  # fmt: skip


def save_artifacts(artifacts: Artifacts | None, path: Path, summary: dict[str, Any]) -> Path | None:
    """Write the kept arrays to `path` (an .npz); returns None (and removes a stale file) when there are none."""
    entries: list[dict[str, Any]] = []
    arrays: dict[str, np.ndarray] = {}
    for case, calls in (artifacts or {}).items():
        for (key, call), roles in calls.items():
            for role, value in roles.items():
                if not isinstance(value, np.ndarray) or value.dtype.kind not in "biuf":
                    continue
                name = f"a{len(entries)}"
                entries.append({"case": case, "key": key, "call": int(call), "role": role, "name": name})
                arrays[name] = np.ascontiguousarray(value)
    if not entries:
        if path.exists():
            path.unlink()
        return None
    index = json.dumps({"run": run_tag(summary), "entries": entries}).encode()
    arrays[INDEX] = np.frombuffer(index, dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as handle:
        np.savez_compressed(handle, **arrays)  # type: ignore[arg-type]
    os.replace(tmp, path)
    return path


def load_artifacts(path: Path, summary: dict[str, Any] | None = None) -> Artifacts | None:
    """Read arrays saved by `save_artifacts`; None when absent, unreadable, or from another run than `summary`."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            index = json.loads(bytes(data[INDEX]).decode())
            if summary is not None and index.get("run") != run_tag(summary):
                return None
            out: Artifacts = {}
            for entry in index["entries"]:
                slot = out.setdefault(entry["case"], {}).setdefault((entry["key"], int(entry["call"])), {})
                slot[entry["role"]] = data[entry["name"]]
            return out
    except (OSError, ValueError, KeyError, TypeError):
        return None
