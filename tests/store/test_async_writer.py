"""The background writer used while recording: same store as the direct writer, bounded memory, errors
raised in the recording thread."""

from __future__ import annotations

import threading
import time
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conformance.store import GoldenStore, GoldenWriter
from conformance.store.writer import AsyncCaseWriter, CaseWriter

MB = 1 << 20


def _feed(case: Any, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A recording's worth of writes: stacked small tensors, large singles, references, values, calls."""
    written = {}
    for call in range(6):
        small = rng.standard_normal((4, 8)).astype(np.float32)
        big = rng.standard_normal((256, 1024 + 128 * (call % 2))).astype(np.float32)  # two shapes: recycling
        handle = case.add_tensor("m.layer", call, "outputs/0", small)
        case.add_tensor("m.proj", call, "outputs/0", big)
        case.add_reference("m.next", call, "args/0", handle)
        case.add_value("m.layer", call, "kwargs/use_cache", "bool", True)
        spec = {"outputs": {"leaf": "outputs/0"}}
        case.add_call("m.layer", "m.layer", "forward", "Layer", call, 2 * call, 2 * call + 1, spec)
        case.add_call("m.proj", "m.proj", "forward", "Proj", call, 2 * call, 2 * call + 1, spec)
        case.add_call("m.next", "m.next", "forward", "Next", call, 2 * call, 2 * call + 1,
                      {"args": {"tuple": [{"leaf": "args/0"}]}})  # fmt: skip
        written[f"m.layer#{call}"] = small
        written[f"m.proj#{call}"] = big
        written[f"m.next#{call}"] = small
        big[:] = 0  # the recorder's tensors may change once their module returns: the writer copied them
    return written


def _read(path: Path) -> dict[str, np.ndarray]:
    with GoldenStore(path) as store:
        case = store.case("c")
        out = {}
        for call in case.calls():
            args, kwargs, outputs = case.call_io(call.key, call.call)
            out[f"{call.key}#{call.call}"] = args[0] if call.key == "m.next" else outputs
            if call.key == "m.layer":
                assert kwargs == {} or kwargs.get("use_cache") is True
        return out


def test_the_background_writer_stores_what_the_direct_writer_stores(tmp_path: Path) -> None:
    stores = {}
    for mode in ("direct", "background"):
        path = tmp_path / f"{mode}.h5"
        with GoldenWriter(path, command="t", software={}) as writer, writer.case("c", {}) as case:
            if mode == "direct":
                expected = _feed(case, np.random.default_rng(0))
            else:
                background = AsyncCaseWriter(case)
                try:
                    expected_bg = _feed(background, np.random.default_rng(0))
                finally:
                    background.close()
        stores[mode] = _read(path)
    assert stores["direct"].keys() == stores["background"].keys() == expected.keys() == expected_bg.keys()
    for name in expected:
        np.testing.assert_array_equal(stores["background"][name], stores["direct"][name], err_msg=name)
    # the large tensors were zeroed after being handed over: both stores hold the values at hand-over time
    assert all(np.abs(stores["background"][f"m.proj#{c}"]).sum() > 0 for c in range(6))


def test_copies_held_by_the_writer_stay_within_twice_the_largest_tensor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    live = {"now": 0, "peak": 0}
    lock = threading.Lock()
    original_copy = AsyncCaseWriter._copy

    def counted_copy(self: AsyncCaseWriter, array: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        copy, buffer = original_copy(self, array)
        if buffer is not None and id(buffer) not in seen:
            seen.add(id(buffer))
            with lock:
                live["now"] += buffer.nbytes
                live["peak"] = max(live["peak"], live["now"])

            def release(nbytes: int = buffer.nbytes, ident: int = id(buffer)) -> None:
                with lock:
                    live["now"] -= nbytes
                    seen.discard(ident)

            weakref.finalize(buffer, release)
        return copy, buffer

    seen: set[int] = set()  # recycled buffers come back: count each allocation once
    original_add = CaseWriter.add_tensor

    def slow_add(self: CaseWriter, *args: Any, **kwargs: Any) -> Any:
        time.sleep(0.01)  # a disk slower than the recording
        return original_add(self, *args, **kwargs)

    monkeypatch.setattr(AsyncCaseWriter, "_copy", counted_copy)
    monkeypatch.setattr(CaseWriter, "add_tensor", slow_add)
    rng = np.random.default_rng(0)
    shapes = [(256, 1024), (512, 512), (128, 2048 + 64), (1024, 256)]  # 1 MB each, different shapes
    tensors = [rng.standard_normal(shape).astype(np.float32) for shape in shapes]
    largest = max(t.nbytes for t in tensors)
    with GoldenWriter(tmp_path / "g.h5", command="t", software={}) as writer, writer.case("c", {}) as case:
        background = AsyncCaseWriter(case, min_bytes=0)
        try:
            for call in range(24):
                background.add_tensor("m", call, "outputs/0", tensors[call % len(tensors)])
        finally:
            background.close()
    assert live["peak"] > 0
    assert live["peak"] <= 2 * largest, (live["peak"] / MB, largest / MB)
    with GoldenStore(tmp_path / "g.h5") as store:
        case_read = store.case("c")
        for call in range(24):
            np.testing.assert_array_equal(case_read.tensor("m", call, "outputs/0"), tensors[call % len(tensors)])


def test_an_error_in_the_writer_thread_is_raised_in_the_recording_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing_add(self: CaseWriter, *args: Any, **kwargs: Any) -> Any:
        raise OSError("No space left on device")

    monkeypatch.setattr(CaseWriter, "add_tensor", failing_add)
    path = tmp_path / "g.h5"
    with pytest.raises(OSError, match="No space left"):  # surfaces at a later call or at close
        with GoldenWriter(path, command="t", software={}) as writer, writer.case("c", {}) as case:
            background = AsyncCaseWriter(case)
            try:
                for call in range(50):
                    background.add_tensor("m", call, "outputs/0", np.ones((512, 1024), np.float32))
            finally:
                background.close()
    assert not path.exists()  # the failed recording left no file claiming to be complete
