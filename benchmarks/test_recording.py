"""Recording cost on the full-size codec: one decode of 4 s of audio (50 frames, random weights), as a
bare forward, recorded by `conformance record`'s machinery, by a naive hook -> h5py recorder, and by
transformers' model_addition_debugger_context (default repr mode, and use_repr=False: full tensors).
Compare the entries of the "codec-recording" group (pytest-benchmark prints the ratios). All variants
run on one torch thread, like `conformance record`'s default. Beside them: the same recording written to
tmpfs (/dev/shm), and the time this disk takes to write the recorded bytes with plain file writes, which
bound the recording from below.

Also: store write throughput against raw h5py writes of the same arrays ("store-write"), and the peak
memory of a recording measured in a subprocess against model size + largest activation.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

torch = pytest.importorskip("torch")

FRAMES = 50
RESULTS: dict[str, float] = {}


@pytest.fixture(scope="module")
def decoder() -> Any:
    try:
        from conformance.subjects.qwen3_tts import checkpoints
        from conformance.subjects.qwen3_tts.record import DEFAULT_SEED, ensure_checkpoints
    except ImportError as exc:
        pytest.skip(f"official stack not importable: {exc}")
    torch.set_num_threads(1)
    folder = ensure_checkpoints("full", DEFAULT_SEED, models=("codec",)).codec_dir
    codec = checkpoints.load_codec(folder, torch.float32)
    return codec.model.decoder


@pytest.fixture(scope="module")
def codes(decoder: Any) -> Any:
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 2048, (1, decoder.config.num_quantizers, FRAMES), generator=generator)


def _record(decoder: Any, codes: Any, path: Path) -> None:
    from conformance.capture.recorder import Recorder, versioned_tensors
    from conformance.store.writer import AsyncCaseWriter, GoldenWriter
    from conformance.subjects.qwen3_tts.record import method_specs

    roots = {"speech_tokenizer.decoder": decoder}
    with (
        GoldenWriter(path, command="benchmark", software={}) as writer,
        writer.case("decode", {"dtype": "float32"}) as case,
    ):
        background = AsyncCaseWriter(case)
        try:
            with torch.no_grad(), versioned_tensors(), Recorder(background, roots, methods=method_specs(roots)):
                decoder(codes)
        finally:
            background.close()


def _record_without_large_writes(decoder: Any, codes: Any, path: Path) -> None:
    """The recording with the HDF5 writes of large tensors left out (copies and checksums kept): what the
    capture machinery costs by itself, apart from moving the bytes to the file."""
    from conformance.store.schema import LeafRecord
    from conformance.store.writer import CaseWriter

    def skip_write(self: Any, key: str, call: int, role: str, array: Any, dtype: str, shape: Any, crc: Any) -> Any:
        crc = crc if isinstance(crc, int) else crc.result()
        return LeafRecord(key, call, role, "tensor", dtype, shape, "", -1, crc, "", "full", "")

    original = CaseWriter._single
    CaseWriter._single = skip_write  # type: ignore[method-assign]
    try:
        _record(decoder, codes, path)
    finally:
        CaseWriter._single = original  # type: ignore[method-assign]


def _naive(decoder: Any, codes: Any, path: Path) -> None:
    """What a first hook -> h5py recorder does: every input and output tensor, one dataset each."""
    handles = []
    counter = {"n": 0}
    with h5py.File(path, "w") as handle:

        def save(prefix: str, value: Any) -> None:
            if isinstance(value, torch.Tensor):
                handle.create_dataset(f"{prefix}_{counter['n']}", data=value.detach().numpy())
                counter["n"] += 1
            elif isinstance(value, (tuple, list)):
                for item in value:
                    save(prefix, item)

        def hook(name: str) -> Any:
            def save_call(module: Any, args: Any, out: Any) -> None:  # must return None: a value replaces the output
                save(f"{name}/in", args)
                save(f"{name}/out", out)

            return save_call

        for name, module in decoder.named_modules():
            handles.append(module.register_forward_hook(hook(name)))
        try:
            with torch.no_grad():
                decoder(codes)
        finally:
            for h in handles:
                h.remove()


def _hf_debugger(decoder: Any, codes: Any, path: Path, use_repr: bool) -> None:
    from transformers.model_debugging_utils import model_addition_debugger_context

    path.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), model_addition_debugger_context(decoder, debug_path=str(path), use_repr=use_repr):
        decoder(codes)


def _write_bytes(path: Path, nbytes: int) -> None:
    """The disk's own floor: write `nbytes` (what a recording of the decode stores) with plain file writes."""
    block = np.random.default_rng(0).standard_normal(16 << 20, dtype=np.float32).tobytes()  # 64 MB
    with open(path, "wb") as handle:
        for start in range(0, nbytes, len(block)):
            handle.write(block[: min(len(block), nbytes - start)])


RAM = Path("/dev/shm")  # tmpfs: the same recording with the disk taken out of the picture

VARIANTS = {
    "bare": lambda d, c, p: d(c),
    "conformance_record": _record,
    "conformance_record_to_ram": _record,
    "conformance_record_without_large_writes": _record_without_large_writes,
    "disk_write_of_the_recorded_bytes": None,  # not a decode: the time to write what the recording stores
    "naive_hooks_h5py": _naive,
    "hf_debugger_repr": lambda d, c, p: _hf_debugger(d, c, p, True),
    "hf_debugger_full_tensors": lambda d, c, p: _hf_debugger(d, c, p, False),
}


@pytest.fixture(scope="module")
def recorded_bytes(decoder: Any, codes: Any, tmp_path_factory: pytest.TempPathFactory) -> int:
    path = tmp_path_factory.mktemp("size") / "decode.h5"
    _record(decoder, codes, path)
    size = path.stat().st_size
    path.unlink()
    return size


@pytest.mark.benchmark(group="codec-recording")
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_codec_decode_recording(
    benchmark: Any, decoder: Any, codes: Any, recorded_bytes: int, variant: str, tmp_path: Path
) -> None:
    counter = {"n": 0}
    folder = tmp_path
    if variant.endswith("to_ram"):
        if not RAM.is_dir() or shutil.disk_usage(RAM).free < 3 * recorded_bytes:
            pytest.skip(f"no tmpfs with room for {recorded_bytes / 1e9:.1f} GB at {RAM}")
        folder = Path(tempfile.mkdtemp(dir=RAM))

    def once() -> None:
        counter["n"] += 1
        target = folder / f"{variant}-{counter['n']}"
        if variant.startswith("disk_write"):
            _write_bytes(target, recorded_bytes)
        else:
            with torch.no_grad():
                VARIANTS[variant](decoder, codes, target if variant.startswith("hf") else target.with_suffix(".h5"))
        for leftover in folder.iterdir():  # keep the disk from filling: only timing matters here
            shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()

    try:
        benchmark.pedantic(once, rounds=5, iterations=1, warmup_rounds=1)  # this VM varies by 20% run to run
    finally:
        if folder != tmp_path:
            shutil.rmtree(folder, ignore_errors=True)
    RESULTS[variant] = benchmark.stats.stats.min
    if variant.startswith("disk_write"):
        benchmark.extra_info["GB"] = round(recorded_bytes / 1e9, 2)
        benchmark.extra_info["GBps"] = round(recorded_bytes / RESULTS[variant] / 1e9, 2)
    if "bare" in RESULTS and variant != "bare":
        ratio = RESULTS[variant] / RESULTS["bare"]
        benchmark.extra_info["ratio_to_bare_forward"] = round(ratio, 2)
        print(f"\n{variant}: {ratio:.2f}x a bare forward")


@pytest.mark.benchmark(group="codec-store")
def test_recorded_store_of_the_decode(benchmark: Any, decoder: Any, codes: Any, tmp_path: Path) -> None:
    """Size and object count of the recording (reported, and sanity-checked)."""
    from conformance.store import GoldenStore

    path = tmp_path / "decode.h5"
    benchmark.pedantic(_record, args=(decoder, codes, path), rounds=1, iterations=1, warmup_rounds=0)
    with GoldenStore(path) as store, h5py.File(path) as raw:
        case = store.case("decode")
        objects = {"n": 0}
        raw.visit(lambda name: objects.__setitem__("n", objects["n"] + 1))
        leaves = [leaf for leaf in case.leaves() if leaf.is_tensor]
        stored = {(leaf.location, leaf.row): leaf.nbytes for leaf in leaves}
        total = sum(leaf.nbytes for leaf in leaves)
        calls = len(case.calls())
    summary = {"calls": calls, "tensor_leaves": len(leaves), "leaf_bytes": total,
               "stored_bytes": sum(stored.values()), "file_bytes": path.stat().st_size, "hdf5_objects": objects["n"]}  # fmt: skip
    benchmark.extra_info.update(summary)
    print("\n" + json.dumps(summary))
    assert summary["stored_bytes"] < summary["leaf_bytes"]  # passed-on tensors are stored once


PEAK = """
import json, resource, sys, torch
from pathlib import Path
sys.path.insert(0, {root!r})
from benchmarks.test_recording import _record
from conformance.subjects.qwen3_tts import checkpoints
torch.set_num_threads(1)
codec = checkpoints.load_codec({folder!r}, torch.float32)
decoder = codec.model.decoder
codes = torch.randint(0, 2048, (1, decoder.config.num_quantizers, {frames}), generator=torch.Generator().manual_seed(0))
def high_water_mark():
    # VmHWM: the process's peak resident set since start, or since the last reset through clear_refs
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
load_peak = high_water_mark()
import gc; gc.collect()
try:  # loading peaks far above what a decode needs: measure from here on
    Path("/proc/self/clear_refs").write_text("5")
except OSError:
    pass
loaded = high_water_mark()
mode = sys.argv[1]
largest = {{"bytes": 0}}
if mode == "record":
    _record(decoder, codes, Path({out!r}))
else:
    def watch(module, args, out):
        if isinstance(out, torch.Tensor):
            largest["bytes"] = max(largest["bytes"], out.numel() * out.element_size())
    hooks = [m.register_forward_hook(watch) for m in decoder.modules()]
    with torch.no_grad():
        decoder(codes)
peak = high_water_mark()
params = sum(p.numel() * p.element_size() for p in decoder.parameters())
print(json.dumps({{"params": params, "largest_activation": largest["bytes"], "load_peak": load_peak,
                   "after_load": loaded, "peak": peak}}))
"""


# A fixed mmap threshold: glibc otherwise raises it after large frees and keeps freed activations in its
# heap, so peak RSS would measure the allocator's retention (it varied by 300 MB from run to run).
LIVE_MEMORY = {"MALLOC_MMAP_THRESHOLD_": str(128 << 10)}


@pytest.mark.benchmark(group="peak-memory")
def test_peak_memory_while_recording(benchmark: Any, decoder: Any, tmp_path: Path) -> None:
    """Peak RSS of a process that loads the codec and records one decode, against one that only decodes
    (each in its own process), reported with the model size and the largest activation."""
    from conformance.subjects.qwen3_tts.record import DEFAULT_SEED, ensure_checkpoints

    folder = str(ensure_checkpoints("full", DEFAULT_SEED, models=("codec",)).codec_dir)
    root = str(Path(__file__).resolve().parent.parent)
    results = {}

    def measure() -> None:  # the timing is of the two processes; the figures are in extra_info
        for mode in ("bare", "record"):
            script = PEAK.format(root=root, folder=folder, frames=FRAMES, out=str(tmp_path / "peak.h5"))
            out = subprocess.run([sys.executable, "-c", script, mode], capture_output=True, text=True, check=True,
                                 env={**os.environ, "HF_HUB_OFFLINE": "1", **LIVE_MEMORY}).stdout  # fmt: skip
            results[mode] = json.loads(out.strip().splitlines()[-1])

    benchmark.pedantic(measure, rounds=1, iterations=1, warmup_rounds=0)
    bare, record = results["bare"], results["record"]
    largest = bare["largest_activation"]
    summary = {"params_MB": bare["params"] / 1e6, "largest_activation_MB": largest / 1e6,
               "load_peak_MB": bare["load_peak"] / 1e6, "after_load_MB": bare["after_load"] / 1e6,
               "bare_peak_MB": bare["peak"] / 1e6,
               "record_peak_MB": record["peak"] / 1e6,
               "bare_over_loaded_MB": (bare["peak"] - bare["after_load"]) / 1e6,
               "record_over_loaded_MB": (record["peak"] - record["after_load"]) / 1e6,
               "recording_extra_MB": (record["peak"] - bare["peak"]) / 1e6,
               "recording_extra_in_largest_activations": (record["peak"] - bare["peak"]) / largest}  # fmt: skip
    benchmark.extra_info.update({name: round(value, 2) for name, value in summary.items()})
    print("\n" + json.dumps(summary))
    RESULTS["peak_memory"] = summary  # type: ignore[assignment]
    # the writer holds at most two activations' worth of copies (plus allocator slack)
    assert record["peak"] - bare["peak"] < 3 * largest + (64 << 20)


@pytest.mark.benchmark(group="store-write")
@pytest.mark.parametrize("writer", ["raw_h5py", "golden_store"])
def test_store_write_throughput(benchmark: Any, writer: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal((256, 16384), dtype=np.float32) for _ in range(16)]  # 16 x 16 MB
    nbytes = sum(a.nbytes for a in arrays)
    counter = {"n": 0}

    def write() -> None:
        counter["n"] += 1
        path = tmp_path / f"{writer}-{counter['n']}.h5"
        if writer == "raw_h5py":
            with h5py.File(path, "w") as handle:
                for i, array in enumerate(arrays):
                    handle.create_dataset(f"t{i}", data=array)
        else:
            from conformance.store import GoldenWriter

            with GoldenWriter(path, command="benchmark", software={}) as golden, golden.case("c", {}) as case:
                for i, array in enumerate(arrays):
                    case.add_tensor(f"m{i}", 0, "outputs/0", array)
        path.unlink()

    benchmark.pedantic(write, rounds=5, iterations=1, warmup_rounds=1)
    RESULTS[f"write_{writer}"] = benchmark.stats.stats.min
    benchmark.extra_info["GBps"] = round(nbytes / benchmark.stats.stats.min / 1e9, 2)
    if writer == "golden_store" and "write_raw_h5py" in RESULTS:
        benchmark.extra_info["ratio_to_raw_h5py"] = round(RESULTS["write_raw_h5py"] / RESULTS[f"write_{writer}"], 2)
