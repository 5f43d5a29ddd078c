"""Recording a full-size 0.6B generation: 50 frames of greedy custom-voice generation (talker, code
predictor and prompt construction, every module recorded), random weights, one torch thread.

Reported: time against the bare generation, number of HDF5 objects, file size, and the time to read
back every call of one module. The store is then checked (isolated and chained) against a candidate
that answers with the golden itself: the engine's own cost per call, with no model compute.
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
    with (
        GoldenWriter(path, command="benchmark", software={}) as writer,
        writer.case("generate", {"dtype": "float32"}) as case,
    ):
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


@pytest.mark.benchmark(group="generation-read-back")
def test_read_back_every_call_of_one_module(benchmark: Any) -> None:
    """Open the store, then rebuild (args, kwargs, outputs) of every call of one attention module, KV-cache
    tensors aliased to earlier calls included. Opening indexes the metadata tables once (all calls)."""
    from conformance.store import GoldenStore

    path = STATE.get("store")
    if path is None:
        pytest.skip("run with test_generation_recording")
    module = "talker.model.layers.0.self_attn"
    started = time.perf_counter()
    with GoldenStore(path) as store:
        case = store.case("generate")
        calls = case.call_records(module)
        case.leaves(module, 0)  # builds the leaf index of the whole case
        indexed = time.perf_counter()
        nbytes = 0

        def count(value: Any) -> None:
            nonlocal nbytes
            if hasattr(value, "nbytes") and hasattr(value, "dtype"):
                nbytes += int(value.nbytes)
            elif isinstance(value, dict):
                for item in value.values():
                    count(item)
            elif isinstance(value, (list, tuple)):
                for item in value:
                    count(item)

        def read_all() -> None:
            for call in calls:
                count(case.call_io(call.key, call.call))

        benchmark.pedantic(read_all, rounds=1, iterations=1, warmup_rounds=0)
        summary = {"module": module, "calls": len(calls), "MB": round(nbytes / 1e6, 1),
                   "index_seconds": round(indexed - started, 2), "read_seconds": round(benchmark.stats.stats.min, 2),
                   "total_calls": len(case.calls())}  # fmt: skip
    benchmark.extra_info.update(summary)
    print("\n" + json.dumps(summary))
    assert summary["calls"] == FRAMES + 1


class _Replay:
    """A candidate that answers with the golden itself: the engine's own throughput, no model compute."""

    name = "replay"
    dtype = "float32"
    description = "golden replay"
    default_modes = ("isolated", "chained")

    def prepare(self, store: Any, case: Any) -> None:
        self.case = case

    def covers(self, call: Any) -> bool:
        return True

    def run_isolated(self, case: Any, call: Any, args: Any, kwargs: Any) -> Any:
        return case.call_io(call.key, call.call)[2]

    def can_chain(self, case: Any) -> bool:
        return True

    def run_chained(self, case: Any, sink: Any) -> None:
        events = sorted([(c.seq_start, 0, c) for c in case.calls()] + [(c.seq_end, 1, c) for c in case.calls()],
                        key=lambda e: e[0])  # fmt: skip
        for _, phase, call in events:
            if phase == 0:
                args, kwargs, _ = case.call_io(call.key, call.call, outputs=False)
                sink(call.key, "call", tuple(args), kwargs, None)
            else:
                sink(call.key, "return", (), {}, case.call_io(call.key, call.call)[2])

    def review(self, *args: Any) -> None:
        pass

    def release(self) -> None:
        pass


@pytest.mark.benchmark(group="check-generation-store")
@pytest.mark.parametrize("mode", ["isolated", "chained"])
def test_check_throughput_on_the_generation_store(benchmark: Any, mode: str) -> None:
    from conformance.compare import engine
    from conformance.compare.policy import Policy
    from conformance.store import GoldenStore

    path = STATE.get("store")
    if path is None:
        pytest.skip("run with test_generation_recording")
    with GoldenStore(path) as store:
        case = store.case("generate")
        golden_bytes = sum(leaf.nbytes for leaf in case.leaves() if leaf.is_tensor and leaf.role.startswith("outputs"))

        def once() -> Any:
            return engine.check(store, _Replay(), Policy(), engine.CheckOptions(modes=(mode,)))  # type: ignore[arg-type]

        run = benchmark.pedantic(once, rounds=1, iterations=1, warmup_rounds=0)
    assert run.verdict == "pass", run.counts()
    seconds = benchmark.stats.stats.min
    benchmark.extra_info["golden_output_MB"] = round(golden_bytes / 1e6, 1)
    benchmark.extra_info["MBps_golden_outputs"] = round(golden_bytes / seconds / 1e6, 1)
    print(f"\ncheck {mode}: {golden_bytes / 1e6:.0f} MB of golden outputs in {seconds:.1f} s")
