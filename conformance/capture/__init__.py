"""Recording the official model: torch forward hooks and method wrappers into a golden store (`Recorder`), into a
checker's sink (`TorchTap`) or a port dump (`dump_case`); the isolated float64 oracle; the recording session a
subject supplies its half of (`session.record`, `Recording`); a case's inputs and outputs (`CaseIO`).

Everything here but `CaseIO`/`RecordedIO` needs torch; names are imported on first use, so a subject's case list
(numpy only) can use `conformance.capture.io` where torch is not installed.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "CaseIO": "io",
    "RecordedIO": "io",
    "ChecksumTap": "recorder",
    "FunctionSpec": "recorder",
    "MethodSpec": "recorder",
    "Recorder": "recorder",
    "TorchTap": "recorder",
    "versioned_tensors": "recorder",
    "IsolatedOracle": "oracle",
    "Recording": "session",
    "record": "session",
    "reference64_path": "session",
    "dump_case": "dump",
    "write_dump": "dump",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
