"""Recording cost on the full-size codec: one decode of 4 s of audio (50 frames, random weights), as a
bare forward, recorded by `conformance record`'s machinery, by a naive hook -> h5py recorder, and by
transformers' model_addition_debugger_context (default repr mode, and use_repr=False: full tensors).
Compare the entries of the "codec-recording" group (pytest-benchmark prints the ratios). All variants
run on one torch thread, like `conformance record`'s default.

Also: store write throughput against raw h5py writes of the same arrays ("store-write"), and the peak
memory of a recording measured in a subprocess against model size + largest activation.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
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
    with GoldenWriter(path, command="benchmark", software={}) as writer, writer.case("decode", {"dtype": "float32"}) as case:
        background = AsyncCaseWriter(case)
        try:
            with torch.no_grad(), versioned_tensors(), Recorder(background, roots, methods=method_specs(roots)):
                decoder(codes)
        finally:
            background.close()


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


VARIANTS = {
    "bare": lambda d, c, p: d(c),
    "conformance_record": _record,
    "naive_hooks_h5py": _naive,
    "hf_debugger_repr": lambda d, c, p: _hf_debugger(d, c, p, True),
    "hf_debugger_full_tensors": lambda d, c, p: _hf_debugger(d, c, p, False),
}


@pytest.mark.benchmark(group="codec-recording")
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_codec_decode_recording(benchmark: Any, decoder: Any, codes: Any, variant: str, tmp_path: Path) -> None:
    counter = {"n": 0}

    def once() -> None:
        counter["n"] += 1
        target = tmp_path / f"{variant}-{counter['n']}"
        with torch.no_grad():
            VARIANTS[variant](decoder, codes, target if variant.startswith("hf") else target.with_suffix(".h5"))
        for leftover in tmp_path.iterdir():  # keep the disk from filling: only timing matters here
            shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()

    benchmark.pedantic(once, rounds=3, iterations=1, warmup_rounds=1)
    RESULTS[variant] = benchmark.stats.stats.min
    if "bare" in RESULTS and variant != "bare":
        ratio = RESULTS[variant] / RESULTS["bare"]
        benchmark.extra_info["ratio_to_bare_forward"] = round(ratio, 2)
        print(f"\n{variant}: {ratio:.2f}x a bare forward")


def test_recorded_store_of_the_decode(decoder: Any, codes: Any, tmp_path: Path) -> None:
    """Size and object count of the recording (reported, and sanity-checked)."""
    from conformance.store import GoldenStore

    path = tmp_path / "decode.h5"
    _record(decoder, codes, path)
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
loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
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
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
params = sum(p.numel() * p.element_size() for p in decoder.parameters())
print(json.dumps({{"params": params, "largest_activation": largest["bytes"], "after_load": loaded, "peak": peak}}))
"""


def test_peak_memory_while_recording(decoder: Any, tmp_path: Path) -> None:
    """Peak RSS of a process that loads the codec and records one decode, against one that only decodes
    (each in its own process), reported with the model size and the largest activation."""
    from conformance.subjects.qwen3_tts.record import DEFAULT_SEED, ensure_checkpoints

    folder = str(ensure_checkpoints("full", DEFAULT_SEED, models=("codec",)).codec_dir)
    root = str(Path(__file__).resolve().parent.parent)
    results = {}
    for mode in ("bare", "record"):
        script = PEAK.format(root=root, folder=folder, frames=FRAMES, out=str(tmp_path / "peak.h5"))
        out = subprocess.run([sys.executable, "-c", script, mode], capture_output=True, text=True, check=True,
                             env={**os.environ, "HF_HUB_OFFLINE": "1"}).stdout  # fmt: skip
        results[mode] = json.loads(out.strip().splitlines()[-1])
    bare, record = results["bare"], results["record"]
    largest = bare["largest_activation"]
    summary = {"params_MB": bare["params"] / 1e6, "largest_activation_MB": largest / 1e6,
               "after_load_MB": bare["after_load"] / 1e6, "bare_peak_MB": bare["peak"] / 1e6,
               "record_peak_MB": record["peak"] / 1e6,
               "recording_extra_MB": (record["peak"] - bare["peak"]) / 1e6,
               "recording_extra_in_largest_activations": (record["peak"] - bare["peak"]) / largest}  # fmt: skip
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
