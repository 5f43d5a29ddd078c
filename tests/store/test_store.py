"""The golden store: round trips, layout, integrity, atomic writes. numpy + h5py only."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from conformance.errors import IntegrityError, StoreError
from conformance.store import GoldenStore, GoldenWriter, StoragePolicy
from conformance.store.schema import bfloat16_to_float32, float32_to_bfloat16_bits

from ..conftest import require_tool


def write_sample(path: Path, policy: StoragePolicy | None = None) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {
        "small": rng.standard_normal((2, 3)).astype(np.float32),
        "big": rng.standard_normal((300, 1000)).astype(np.float32),
        "f64": rng.standard_normal((4, 5)),
        "f16": rng.standard_normal(7).astype(np.float16),
        "ints": rng.integers(0, 2048, (3, 4)),
        "bools": rng.random(6) > 0.5,
        "empty": np.zeros((0, 4), np.float32),
        "scalar": np.array(3.5, np.float32),
    }
    with GoldenWriter(path, command="test", software={"numpy": np.__version__}, policy=policy) as writer:
        with writer.case("case_a", {"dtype": "float32", "family": "test"}) as case:
            case.add_input("codes", arrays["ints"])
            case.add_input("language", "english")
            for i in range(3):
                call = case.next_call_index("m.layer")
                start = case.next_seq()
                record = case.add_tensor("m.layer", call, "args/0", arrays["small"] * i)
                case.add_value("m.layer", call, "kwargs/use_cache", "bool", True)
                case.add_value("m.layer", call, "kwargs/cache", "object", {"type": "DynamicCache"})
                case.add_reference("m.layer", call, "outputs/0", record)
                spec = {"args": {"tuple": [{"leaf": "args/0"}]},
                        "kwargs": {"dict": {"use_cache": {"leaf": "kwargs/use_cache"}, "cache": {"leaf": "kwargs/cache"}}},
                        "outputs": {"leaf": "outputs/0"}}  # fmt: skip
                case.add_call("m.layer", "m.layer", "forward", "Layer", call, start, case.next_seq(), spec)
            start = case.next_seq()
            for name in ("big", "f64", "f16", "ints", "bools", "empty", "scalar"):
                case.add_tensor("m.head", 0, f"outputs/{name}", arrays[name])
            bf16 = float32_to_bfloat16_bits(arrays["small"])
            case.add_tensor("m.head", 0, "outputs/bf16", bf16, logical_dtype="bfloat16")
            spec = {"outputs": {"dict": {n: {"leaf": f"outputs/{n}"} for n in
                                         ("big", "f64", "f16", "ints", "bools", "empty", "scalar", "bf16")}}}  # fmt: skip
            case.add_call("m.head", "m.head", "forward", "Head", 0, start, case.next_seq(), spec)
            case.add_oracle("m.head", 0, "outputs/big", "isolated", "ok", {"rel_l2": 1e-7, "max_abs": 2e-6})
            case.add_output("waveform", arrays["small"].ravel())
    arrays["bf16"] = bfloat16_to_float32(float32_to_bfloat16_bits(arrays["small"]))
    return arrays


def test_round_trip_every_dtype_and_structure(tmp_path: Path) -> None:
    path = tmp_path / "g.h5"
    arrays = write_sample(path)
    with GoldenStore(path) as store:
        assert store.cases == ["case_a"]
        case = store.case("case_a")
        assert case.keys() == ["m.layer", "m.head"]
        assert [c.name for c in case.calls()] == ["m.layer#0", "m.layer#1", "m.layer#2", "m.head#0"]
        for name in ("big", "f64", "f16", "ints", "bools", "empty", "scalar", "bf16"):
            got = case.tensor("m.head", 0, f"outputs/{name}")
            assert got.dtype == arrays[name].dtype and np.array_equal(got, arrays[name]), name
        assert case.leaf("m.head", 0, "outputs/bf16").dtype == "bfloat16"
        args, kwargs, outputs = case.call_io("m.layer", 2)
        assert np.array_equal(args[0], arrays["small"] * 2) and np.array_equal(outputs, args[0])
        assert kwargs["use_cache"] is True and kwargs["cache"].description == {"type": "DynamicCache"}
        assert np.array_equal(case.input("codes"), arrays["ints"]) and case.input("language") == "english"
        noise = case.oracle("m.head", 0, "outputs/big")
        assert (
            noise is not None
            and noise.metrics["rel_l2"] == pytest.approx(1e-7, rel=1e-6)
            and np.isnan(noise.metrics["cos_dist"])
        )


def test_repeated_calls_are_stacked_and_references_store_nothing(tmp_path: Path) -> None:
    path = tmp_path / "g.h5"
    write_sample(path)
    with GoldenStore(path) as store:
        case = store.case("case_a")
        first = case.leaf("m.layer", 0, "args/0")
        third = case.leaf("m.layer", 2, "args/0")
        assert first.location == third.location and (first.row, third.row) == (0, 2)
        output = case.leaf("m.layer", 1, "outputs/0")
        assert (output.location, output.row) == (case.leaf("m.layer", 1, "args/0").location, 1)
    with h5py.File(path) as raw:  # plain h5py sees a stack of three rows for the three calls
        assert raw["cases/case_a"][first.location].shape == (3, 2, 3)


def test_stacked_rows_read_from_the_cache_are_private_copies(tmp_path: Path) -> None:
    """The reader keeps whole stacks in memory: what it hands out must not alias them."""
    path = tmp_path / "g.h5"
    arrays = write_sample(path)
    with GoldenStore(path) as store:
        case = store.case("case_a")
        row = case.tensor("m.layer", 1, "args/0")
        np.testing.assert_array_equal(row, arrays["small"] * 1)
        row[...] = 123.0  # a candidate writing into its inputs
        np.testing.assert_array_equal(case.tensor("m.layer", 1, "args/0"), arrays["small"] * 1)
        scalar = case.tensor("m.head", 0, "outputs/scalar")
        assert isinstance(scalar, np.ndarray) and scalar.shape == () and scalar == np.float32(3.5)


def test_reading_leaves_no_dataset_open(tmp_path: Path) -> None:
    """Every open chunked dataset holds an HDF5 chunk cache (1 MB): a reader keeping its handles took
    1.6 GB on a generation case. Reading every tensor must leave none open."""
    path = tmp_path / "g.h5"
    write_sample(path)
    with GoldenStore(path) as store:
        case = store.case("case_a")
        for call in case.calls():
            case.call_io(call.key, call.call)
        assert h5py.h5f.get_obj_count(store.file.id, h5py.h5f.OBJ_DATASET) == 0


@given(hnp.arrays(np.float32, hnp.array_shapes(min_dims=0, max_dims=4, max_side=6),
                  elements=st.floats(width=32, allow_nan=True, allow_infinity=True)))  # fmt: skip
def test_any_float32_tensor_round_trips_bit_for_bit(
    tmp_path_factory: pytest.TempPathFactory, array: np.ndarray
) -> None:
    path = tmp_path_factory.mktemp("rt") / "g.h5"
    with GoldenWriter(path, command="t", software={}) as writer, writer.case("c", {}) as case:
        case.add_tensor("m", 0, "outputs/0", array)
        case.add_call("m", "m", "forward", "M", 0, 1, 2, {"outputs": {"leaf": "outputs/0"}})
    with GoldenStore(path) as store:
        got = store.case("c").tensor("m", 0, "outputs/0")
    assert got.shape == array.shape and got.tobytes() == array.tobytes()


def test_large_tensors_stream_in_chunks_and_verify(tmp_path: Path) -> None:
    path = tmp_path / "g.h5"
    arrays = write_sample(path, StoragePolicy(chunk_bytes=64 * 1024))
    with GoldenStore(path) as store:
        case = store.case("case_a")
        leaf = case.leaf("m.head", 0, "outputs/big")
        chunks = list(case.iter_tensor_chunks(leaf, max_elements=50_000))
        assert len(chunks) > 1
        assert np.array_equal(np.concatenate(chunks), arrays["big"].ravel())


@pytest.mark.parametrize("compression", ["gzip", "lzf"])
def test_compressed_datasets_are_chunked_and_round_trip(tmp_path: Path, compression: str) -> None:
    """Compression applies to the chunked (large) datasets: they are stored through the filter and read back
    identical (random activations barely compress: the option exists for real, smoother tensors)."""
    path = tmp_path / "g.h5"
    arrays = write_sample(path, StoragePolicy(compression=compression, stack_max_bytes=0))
    with GoldenStore(path) as store:
        case = store.case("case_a")
        for name in ("big", "f64", "ints", "bf16"):
            assert np.array_equal(case.tensor("m.head", 0, f"outputs/{name}"), arrays[name]), name
        dataset = case.group[case.leaf("m.head", 0, "outputs/big").location]
        assert dataset.compression == compression and dataset.chunks is not None


def test_statistics_and_hash_tiers_keep_their_summary(tmp_path: Path) -> None:
    path = tmp_path / "g.h5"
    arrays = write_sample(path, StoragePolicy(stats_above_bytes=100_000, hash_above_bytes=10**9))
    with GoldenStore(path) as store:
        case = store.case("case_a")
        leaf = case.leaf("m.head", 0, "outputs/big")
        assert leaf.tier == "stats"
        summary = case.summary(leaf)
        assert summary["numel"] == arrays["big"].size
        assert summary["mean"] == pytest.approx(float(arrays["big"].astype(np.float64).mean()))
        with pytest.raises(StoreError, match="stats tier"):
            case.tensor(leaf)
    path2 = tmp_path / "h.h5"
    write_sample(path2, StoragePolicy(hash_above_bytes=100_000))
    with GoldenStore(path2) as store:
        leaf = store.case("case_a").leaf("m.head", 0, "outputs/big")
        assert leaf.tier == "hash" and store.case("case_a").summary(leaf)["crc32"] == leaf.crc32


def _flip_byte(path: Path, case: str, location: str, row: int) -> None:
    with h5py.File(path, "r") as raw:
        dataset = raw["cases"][case][location]
        if dataset.chunks:
            offset = dataset.id.get_chunk_info(0).byte_offset
        else:
            offset = dataset.id.get_offset()
        offset += max(row, 0) * int(np.prod(dataset.shape[1:] or (1,))) * dataset.dtype.itemsize
    with open(path, "r+b") as handle:
        handle.seek(offset + 1)
        byte = handle.read(1)
        handle.seek(offset + 1)
        handle.write(bytes([byte[0] ^ 0x40]))


@pytest.mark.parametrize("name", ["m.layer#1/args/0", "m.head#0/outputs/big", "m.head#0/outputs/f64"])
def test_a_flipped_byte_is_caught_and_names_the_tensor(tmp_path: Path, name: str) -> None:
    path = tmp_path / "g.h5"
    write_sample(path)
    key, rest = name.split("#")
    call, role = rest.split("/", 1)
    with GoldenStore(path) as store:
        leaf = store.case("case_a").leaf(key, int(call), role)
    _flip_byte(path, "case_a", leaf.location, leaf.row)
    with GoldenStore(path) as store, pytest.raises(IntegrityError) as caught:
        store.case("case_a").tensor(key, int(call), role)
    message = str(caught.value)
    assert str(path) in message and name in message and "\n" not in message


def _inspect(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, list[str], list[str]]:
    from conformance.cli import main

    capsys.readouterr()
    code = main(["inspect", *[str(a) for a in args]])
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), [line for line in captured.err.splitlines() if line.strip()]


def test_inspect_verify_reads_every_tensor_of_the_committed_golden(golden_f32: Path, capsys) -> None:
    code, out, err = _inspect(capsys, golden_f32, "--verify")
    assert code == 0 and not err
    with GoldenStore(golden_f32) as store:
        cases = len(store.cases)
    assert len(out) == 1 and out[0].startswith(f"OK: {golden_f32}: ") and f"{cases} case(s)" in out[0]
    tensors = int(out[0].split(": ")[2].split()[0])
    with GoldenStore(golden_f32) as store:  # every stored tensor once, however many calls share it
        stored = {(c.name, leaf.location, leaf.row) for c in store for leaf in c.leaves() if leaf.is_tensor}
    assert tensors == len(stored)


@pytest.mark.parametrize("name", ["m.layer#1/args/0", "m.head#0/outputs/big", "m.head#0/outputs/f64"])
def test_inspect_verify_exits_2_naming_the_first_corrupted_tensor(tmp_path: Path, capsys, name: str,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    import conformance.cli.inspect

    path = tmp_path / "g.h5"
    write_sample(path)
    code, out, _ = _inspect(capsys, path, "--verify")
    assert code == 0 and out[0].startswith(f"OK: {path}")
    key, rest = name.split("#")
    call, role = rest.split("/", 1)
    with GoldenStore(path) as store:
        leaf = store.case("case_a").leaf(key, int(call), role)
    _flip_byte(path, "case_a", leaf.location, leaf.row)
    monkeypatch.setattr(conformance.cli.inspect, "VERIFY_PROGRESS_BYTES", 0)  # the progress bar of a big store, too
    code, out, err = _inspect(capsys, path, "--verify")
    assert code == 2 and not out and len(err) == 1, err
    assert err[0].startswith(f"conformance: error: {path}: case_a:{name}: checksum mismatch"), err[0]
    code, _, _ = _inspect(capsys, path)  # without --verify: the summary, read from the metadata alone
    assert code == 0


def test_non_hdf5_and_truncated_files_give_one_line_errors(tmp_path: Path) -> None:
    good = tmp_path / "g.h5"
    write_sample(good)
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5")
    truncated = tmp_path / "cut.h5"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    for path in (text, truncated, tmp_path / "missing.h5"):
        with pytest.raises(StoreError) as caught:
            GoldenStore(path)
        assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_a_file_without_the_complete_mark_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "g.h5"
    write_sample(path)
    with h5py.File(path, "r+") as raw:
        raw.attrs["complete"] = False
    with pytest.raises(StoreError, match="incomplete"):
        GoldenStore(path)


def test_failed_recording_leaves_the_previous_file_untouched(tmp_path: Path) -> None:
    path = tmp_path / "g.h5"
    write_sample(path)
    before = path.read_bytes()
    with (
        pytest.raises(RuntimeError),
        GoldenWriter(path, command="t", software={}) as writer,
        writer.case("c", {}) as case,
    ):
        case.add_tensor("m", 0, "outputs/0", np.ones(3, np.float32))
        raise RuntimeError("model crashed")
    assert path.read_bytes() == before
    assert not list(tmp_path.glob("*.partial-*"))


KILLED_WRITER = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from conformance.store import GoldenWriter
    with GoldenWriter(sys.argv[1], command="t", software={}) as writer:
        with writer.case("first", {}) as case:
            case.add_tensor("m", 0, "outputs/0", np.ones((1000, 1000), np.float32))
        print("first case written", flush=True)
        with writer.case("second", {}) as case:
            time.sleep(60)
    """
)


def test_sigkill_mid_recording_keeps_the_previous_file_and_leaves_nothing_valid(tmp_path: Path) -> None:
    path = tmp_path / "g.h5"
    write_sample(path)
    before = path.read_bytes()
    process = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "first case written"
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    assert path.read_bytes() == before
    partials = list(tmp_path.glob("g.h5.partial-*"))
    assert len(partials) == 1
    with pytest.raises(StoreError):
        GoldenStore(partials[0])
    write_sample(path)  # the next recording removes the dead process's partial file
    assert not list(tmp_path.glob("g.h5.partial-*"))


def test_files_open_in_standard_hdf5_tools(tmp_path: Path) -> None:
    h5ls = require_tool("h5ls")
    path = tmp_path / "g.h5"
    write_sample(path)
    listing = subprocess.run([h5ls, "-r", str(path)], capture_output=True, text=True, check=True).stdout
    assert "/cases/case_a/leaves" in listing and "/cases/case_a/tensors/m.head" in listing


def test_provenance_is_json_with_stats(tmp_path: Path) -> None:
    path = tmp_path / "g.h5"
    write_sample(path)
    with h5py.File(path) as raw:
        provenance = json.loads(raw["cases/case_a/provenance"][()])
        assert raw.attrs["format"] == "conformance-golden-store" and raw.attrs["complete"]
    assert provenance["dtype"] == "float32" and provenance["stats"]["tensors_written"] >= 8
    assert provenance["input_values"] == {"language": "english"}


def test_an_empty_case_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "empty.h5"
    with GoldenWriter(path, command="t", software={}) as writer, writer.case("c", {}):
        pass
    with GoldenStore(path) as store:
        assert store.case("c").calls() == [] and store.case("c").leaves() == []
