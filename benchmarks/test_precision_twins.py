"""Recording with precision twins (docs/precision.md): the cost of each twin relative to a plain recording.

One tiny case of each kind the twins treat differently (the codec decode: convolutions and a transformer; a
custom-voice generation: the talker, the code predictor and their KV caches), recorded by the session as `record`
does (float32 with the float64 oracle and the float64 twin, determinism check off), then again with one twin
(bfloat16, float16, Q8_0 weights), then with all three. Group "precision-twins": pytest-benchmark prints the ratios;
the extra_info of each entry holds the store's size and its twin noise rows.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")

CASES = ("codec_decode_short", "tts_custom_voice")
VARIANTS = {"plain": ((), ()), "bfloat16": (("bfloat16",), ()), "float16": (("float16",), ()),
            "q8_0": ((), ("q8_0",)), "all three": (("bfloat16", "float16"), ("q8_0",))}  # fmt: skip


@pytest.fixture(scope="module")
def checkpoint() -> Path:
    try:
        from conformance.subjects.qwen3_tts.record import DEFAULT_SEED, ensure_checkpoints
    except ImportError as exc:
        pytest.skip(f"official stack not importable: {exc}")
    folder = Path(ensure_checkpoints("tiny", DEFAULT_SEED).codec_dir).parent
    from conformance.subjects.qwen3_tts import cases, record

    with tempfile.TemporaryDirectory() as scratch:  # warm-up, untimed: imports, tokenizer, first kernel calls
        record.record(Path(scratch) / "warm.h5", cases.select(list(CASES)), checkpoint=folder, determinism=False)
    return folder


@pytest.mark.parametrize("variant", VARIANTS)
def test_recording_with_twins(benchmark: Any, tmp_path: Path, checkpoint: Path, variant: str) -> None:
    from conformance import precisions
    from conformance.store import GoldenStore
    from conformance.subjects.qwen3_tts import cases, record

    compute, weights = VARIANTS[variant]
    twins = precisions.twins(compute, weights)
    benchmark.group = "precision-twins"
    out = tmp_path / "golden.h5"

    def run() -> None:
        record.record(out, cases.select(list(CASES)), checkpoint=checkpoint, determinism=False, twins=twins)

    benchmark.pedantic(run, rounds=1, iterations=1, warmup_rounds=0)
    with GoldenStore(out) as store:
        rows = sum(len([r for r in store.case(name).oracle_records() if ":" in r.mode]) for name in CASES)
    benchmark.extra_info.update({"twins": [t.name for t in twins], "bytes": out.stat().st_size, "twin_rows": rows})
    assert rows > 0 if twins else rows == 0
