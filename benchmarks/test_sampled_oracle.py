"""What calibrated thresholds cost at full size: recording `tts_custom_voice` (full size: 8 frames, 0.6B random
weights, one torch thread) without the oracle, with the sampled oracle (`--oracle-sample`, the default at full
size: calls 0, 1, 2, 4, 8... of each module re-run on the float64 twin) and with the full oracle (every call).
No float64 reference twin in any variant (`--no-reference64`): the oracle is what is measured.

Reported in extra_info: seconds, oracle records, and the sampled and full variants' time against the recording
without oracle (docs/performance.md, "Calibrated thresholds at full size")."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")

CASE = "tts_custom_voice"
STATE: dict[str, float] = {}


@pytest.mark.benchmark(group="oracle-at-full-size")
@pytest.mark.parametrize("variant", ["none", "sampled", "full"])
def test_oracle_cost_at_full_size(benchmark: Any, variant: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    from conformance.capture import session
    from conformance.store import GoldenStore
    from conformance.subjects import get

    subject = get("qwen3_tts")
    cases = [c for c in subject.cases() if c.name == CASE]
    folder = tmp_path_factory.mktemp(f"oracle-{variant}")
    oracle = {"none": False, "sampled": "sampled", "full": True}[variant]
    path = folder / "golden.h5"

    def once() -> None:
        started = time.time()
        session.record(path, [(subject.recording(size="full"), cases)], oracle=oracle, reference64=False,
                       determinism=False)  # fmt: skip
        STATE[variant] = time.time() - started

    benchmark.pedantic(once, rounds=1, iterations=1, warmup_rounds=0)
    with GoldenStore(path) as store:
        case = store.case(CASE)
        benchmark.extra_info.update({"seconds": round(STATE[variant], 2), "calls": len(case.calls()),
                                     "oracle_records": len(case.oracle_records()),
                                     "file_mb": round(Path(path).stat().st_size / 1e6, 1)})  # fmt: skip
    if variant != "none" and "none" in STATE:
        benchmark.extra_info["x_no_oracle"] = round(STATE[variant] / STATE["none"], 2)
