"""Check throughput: comparing a 256 MB golden tensor with a 256 MB candidate tensor, both read from
HDF5, in one streamed pass (checksum verification included). Throughput counts both tensors' bytes."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from conformance.compare.engine import Judge
from conformance.compare.policy import Policy
from conformance.store import GoldenStore, GoldenWriter

ELEMENTS = 64 * 1024 * 1024  # 256 MB of float32 per tensor


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("throughput")
    rng = np.random.default_rng(0)
    golden = rng.standard_normal(ELEMENTS, dtype=np.float32).reshape(4096, -1)
    candidate = (golden + np.float32(3e-7) * rng.standard_normal(golden.shape, dtype=np.float32)).astype(np.float32)
    golden_path = folder / "golden.h5"
    with (
        GoldenWriter(golden_path, command="benchmark", software={}) as writer,
        writer.case("big", {"dtype": "float32"}) as case,
    ):
        case.add_tensor("decoder", 0, "outputs/0", golden)
        case.add_call("decoder", "decoder", "forward", "Decoder", 0, 1, 2, {"outputs": {"leaf": "outputs/0"}})
        case.add_oracle("decoder", 0, "outputs/0", "isolated", "ok", {"rel_l2": 5e-8, "max_abs": 4e-7})
    candidate_path = folder / "candidate.h5"
    with h5py.File(candidate_path, "w") as handle:
        handle.create_dataset("decoder/outputs/0", data=candidate)
    return golden_path, candidate_path


def test_check_throughput_of_a_256mb_pair_read_from_hdf5(benchmark, pair: tuple[Path, Path]) -> None:
    golden_path, candidate_path = pair

    def check_once() -> float:
        with GoldenStore(golden_path) as store, h5py.File(candidate_path) as dump:
            case = store.case("big")
            leaf = case.leaf("decoder", 0, "outputs/0")
            candidate = dump["decoder/outputs/0"]
            # the candidate is read lazily, chunk by chunk, in the reader thread
            flat = candidate.shape[1]

            def read(offset: int, n: int) -> np.ndarray:
                rows = slice(offset // flat, (offset + n) // flat)
                out = np.empty((rows.stop - rows.start, flat), np.float32)
                candidate.read_direct(out, np.s_[rows])
                return out.reshape(-1)

            judge = Judge(Policy(), case, None, "isolated")
            result = judge.judge_stream(leaf, read)
            assert result.status == "pass", result.message
            return float(result.metrics["rel_l2"])

    rel = benchmark.pedantic(check_once, rounds=3, iterations=1, warmup_rounds=1)
    seconds = benchmark.stats.stats.min
    gbps = 2 * ELEMENTS * 4 / seconds / 1e9
    benchmark.extra_info["throughput_GBps_both_tensors"] = round(gbps, 2)
    benchmark.extra_info["rel_l2"] = rel
    print(f"\ncheck throughput: {gbps:.2f} GB/s (golden + candidate bytes / best time)")
