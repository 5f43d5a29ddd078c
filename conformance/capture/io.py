"""A case's inputs and outputs while a runner runs it (numpy only: a subject's case list imports this without torch).

A subject's case runner declares every input it feeds the official model and every output it keeps through a
`CaseIO`; the recording session stores them under /cases/<case>/inputs|outputs. `RecordedIO` hands a runner the
inputs a golden recorded instead of the ones it would make (dumps and re-runs answer the golden's inputs).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..store.reader import Case


class CaseIO:
    """Collects a case's inputs and outputs while it runs (stored under /cases/<case>/inputs|outputs). `size` is
    the recording's size label: a runner may pick its input lengths by it."""

    def __init__(self, size: str) -> None:
        self.size = size
        self.inputs: dict[str, Any] = {}
        self.outputs: dict[str, Any] = {}
        # every setting the official run used beyond the inputs (JSON-able): stored in the case provenance as
        # "settings" and exported with the case, so a port reproduces the run from the export alone
        self.settings: dict[str, Any] = {}

    def input(self, name: str, value: Any) -> Any:
        self.inputs[name] = value
        return value

    def output(self, name: str, value: Any) -> Any:
        self.outputs[name] = value
        return value


class RecordedIO(CaseIO):
    """A case runner's inputs as a golden recorded them: the runner regenerates its seeded inputs, and every one
    the golden holds is replaced by the recorded value (so a re-run answers the golden's inputs, even when the
    runner's code has changed since)."""

    def __init__(self, case: Case, size: str) -> None:
        super().__init__(size)
        self.case = case
        self.recorded = set(case.input_names())

    def input(self, name: str, value: Any) -> Any:
        if name in self.recorded:
            value = self.case.input(name)
            if isinstance(value, np.ndarray):
                value = np.array(value)  # a private copy: the runner may hand it to code that writes into it
        return super().input(name, value)
