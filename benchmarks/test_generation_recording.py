"""Recording a full-size 0.6B generation: 50 frames of greedy custom-voice generation (talker, code
predictor and prompt construction, every module recorded), random weights, one torch thread.

Reported: time against the bare generation, number of HDF5 objects, file size, and the time to read
back every call of one module. The stores are also checked (isolated and chained) against themselves
replayed as a dump, which measures the engine's own throughput with no candidate compute.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import h5py
import pytest

torch = pytest.importorskip("torch")

FRAMES = 50
STATE: dict[str, Any] = {}


@pytest.fixture(scope="module")
def tts() -> Any:
    try:
        from conformance.subjects.qwen3_tts import checkpoints
        from conformance.subjects.qwen3_tts.record import DEFAULT_SEED, ensure_checkpoints
    except ImportError as exc:
        pytest.skip(f"official stack not importable: {exc}")
    torch.set_num_threads(1)
    source = ensure_checkpoints("full", DEFAULT_SEED, models=("custom_voice", "codec"))
    return checkpoints.load_tts(source.tts_dirs["custom_voice"], torch.float32)


def _inputs(wrapper: Any) -> dict[str, Any]:
    input_ids = wrapper._tokenize_texts([wrapper._build_assistant_text("Hello, this is a full size benchmark.")])
    return {"input_ids": input_ids, "languages": ["English"], "speakers": ["Ryan"], "non_streaming_mode": True,
            "max_new_tokens": FRAMES + 1, "do_sample": False, "subtalker_dosample": False}  # fmt: skip


def _generate(wrapper: Any) -> Any:
    with torch.no_grad():
        return wrapper.model.generate(**_inputs(wrapper))


def _record(wrapper: Any, path: Path) -> None:
    from conformance.capture.recorder import Recorder, versioned_tensors
    from conformance.store.writer import AsyncCaseWriter, GoldenWriter
    from conformance.subjects.qwen3_tts.record import method_specs

    roots = {"": wrapper.model}
    with GoldenWriter(path, command="benchmark", software={}) as writer, writer.case("generate", {"dtype": "float32"}) as case:
        background = AsyncCaseWriter(case)
        try:
            with torch.no_grad(), versioned_tensors(), Recorder(background, roots, methods=method_specs(roots)):
                wrapper.model.generate(**_inputs(wrapper))
        finally:
            background.close()


@pytest.mark.benchmark(group="generation-recording")
@pytest.mark.parametrize("variant", ["bare", "conformance_record"])
def test_generation_recording(benchmark: Any, tts: Any, variant: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    folder = tmp_path_factory.mktemp("generation")
    path = folder / "generate.h5"

    def once() -> None:
        if variant == "bare":
            _generate(tts)
        else:
            _record(tts, path)

    benchmark.pedantic(once, rounds=1, iterations=1, warmup_rounds=0)
    STATE[variant] = benchmark.stats.stats.min
    if variant == "conformance_record":
        STATE["store"] = path
        if "bare" in STATE:
            benchmark.extra_info["ratio_to_bare_generation"] = round(STATE[variant] / STATE["bare"], 2)
        objects = {"n": 0}
        with h5py.File(path) as raw:
            raw.visit(lambda name: objects.__setitem__("n", objects["n"] + 1))
        benchmark.extra_info["hdf5_objects"] = objects["n"]
        benchmark.extra_info["file_MB"] = round(path.stat().st_size / 1e6, 1)


def test_read_back_every_call_of_one_module() -> None:
    from conformance.store import GoldenStore

    path = STATE.get("store")
    if path is None:
        pytest.skip("run with test_generation_recording")
    with GoldenStore(path) as store:
        case = store.case("generate")
        calls = case.call_records("talker.model.layers.0.self_attn")
        started = time.perf_counter()
        nbytes = 0
        for call in calls:
            for leaf in case.leaves(call.key, call.call):
                if leaf.is_tensor and leaf.tier == "full":
                    nbytes += case.tensor(leaf).nbytes
        seconds = time.perf_counter() - started
        summary = {"module": "talker.model.layers.0.self_attn", "calls": len(calls), "bytes": nbytes,
                   "seconds": round(seconds, 3), "total_calls": len(case.calls())}  # fmt: skip
    print("\n" + json.dumps(summary))
    assert summary["calls"] == FRAMES + 1
