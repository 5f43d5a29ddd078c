"""The NumPy codec against the committed goldens, every codec call of every codec case (and the codec
part of end_to_end), float32 and float64, isolated and chained. No torch needed.

* isolated: each recorded call is replayed alone on the impl component at the same official path with
  the recorded args/kwargs;
* chained: the case runs through the impl's mirror of the official API with a tap, and each call the
  impl makes (key, call index by start order) is compared with the golden call of the same key and
  index. The impl must make exactly the golden's codec calls, no more, no fewer.

Thresholds. float64: rel_l2 < 1e-12. float32: rel_l2 within 100x the official model's own float32
noise for that tensor, floor 1e-7; integer outputs (codes) identical. The noise of an isolated replay is
the recorded isolated oracle (official float32 vs float64 on the same inputs). A chained tensor also
carries every upstream module's rounding, amplified downstream (the decoder's isolated noise is ~1e-7
per module but ~4e-5 end to end), so its noise is the official model's own chained error: the float32
golden against the float64 golden of the same case (same inputs), or the isolated noise if larger.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from conformance.compare.metrics import compare_arrays
from conformance.store import GoldenStore
from conformance.store.reader import Case
from conformance.store.tree import flatten
from impl.qwen3_tts import codec, nn

from .helpers import ROOT, tiny_codec

GOLDENS = ROOT / "goldens"
CASES = ["codec_decode_short", "codec_decode_long", "codec_chunked_decode", "codec_encode", "end_to_end"]
DTYPES = ["float32", "float64"]
PREFIX = codec.ROOT_PATH
FLOOR32, FACTOR32, LIMIT64 = 1e-7, 100.0, 1e-12


def _store(dtype: str) -> GoldenStore:
    path = GOLDENS / f"qwen3_tts-tiny-{dtype}.h5"
    if not path.exists():
        pytest.skip(f"{path} is absent")
    return GoldenStore(path)


@pytest.fixture(scope="module")
def stores() -> dict[str, GoldenStore]:
    return {dtype: _store(dtype) for dtype in DTYPES}


def codec_calls(case: Case) -> list[Any]:
    return [c for c in case.calls() if c.key.split(":")[0].split(".")[0] == PREFIX]


def resolve(root: codec.Qwen3TTSTokenizerV2Model, key: str) -> Callable[..., Any]:
    path, _, method = key.partition(":")
    module = root.get(path[len(PREFIX) + 1 :] if path != PREFIX else "")
    return getattr(module, method) if method else module


def run_chained(root: codec.Qwen3TTSTokenizerV2Model, case: Case) -> dict[tuple[str, int], dict[str, Any]]:
    """Run the case's codec part through the impl, collecting every call's flattened outputs."""
    started: dict[str, int] = defaultdict(int)
    open_calls: dict[str, list[int]] = defaultdict(list)
    outputs: dict[tuple[str, int], dict[str, Any]] = {}

    def tap(key: str, phase: str, args: tuple, kwargs: dict, result: Any) -> None:
        if phase == "call":
            open_calls[key].append(started[key])
            started[key] += 1
        else:
            outputs[(key, open_calls[key].pop())] = flatten(result, "outputs", top=True)

    family = case.provenance["family"]
    with nn.tapping(tap):
        if family == "codec_encode":
            codec.encode_waveform(root, case.input("waveform"), 24000)
        elif "chunk_size" in case.input_names():
            root.decoder.chunked_decode(np.swapaxes(case.input("codes"), 1, 2), chunk_size=int(case.input("chunk_size")),
                                        left_context_size=int(case.input("left_context_size")))  # fmt: skip
        elif family == "codec_decode":
            codec.decode_codes(root, case.input("codes")[0])
        else:  # end_to_end: the talker's codes, as the official wrapper handed them to the codec
            args, _, _ = case.call_io(f"{PREFIX}:decode", 0)
            codec.decode_codes(root, args[0][0])
    return outputs


def compare_call(case: Case, call: Any, candidate: dict[str, Any], dtype: str,
                 chained_reference: Case | None = None) -> list[tuple[float, str]]:  # fmt: skip
    """Assert one call's outputs conform; return (score, description) per float tensor, score =
    rel_l2 / allowed (<= 1 passes)."""
    _, _, golden = case.call_io(call.key, call.call)
    reference = flatten(golden, "outputs", top=True)
    where = f"{case.name} {call.key}#{call.call}"
    assert set(candidate) == set(reference), f"{where}: output structure {sorted(candidate)} != {sorted(reference)}"
    other = flatten(chained_reference.call_io(call.key, call.call)[2], "outputs", top=True) if chained_reference else {}
    scores = []
    for role, ref in reference.items():
        got = candidate[role]
        if not isinstance(ref, np.ndarray):
            assert got == ref, f"{where} {role}: {got!r} != {ref!r}"
            continue
        assert isinstance(got, np.ndarray) and got.shape == ref.shape, (
            f"{where} {role}: shape {np.shape(got)} != {ref.shape}"
        )
        if ref.dtype.kind in "iub":
            assert np.array_equal(got, ref), f"{where} {role}: codes differ"
            continue
        assert got.dtype == ref.dtype, f"{where} {role}: dtype {got.dtype} != {ref.dtype}"
        error = compare_arrays(ref, got).rel_l2
        if dtype == "float64":
            allowed, noise = LIMIT64, 0.0
        else:
            record = case.oracle(call.key, call.call, role)
            assert record is not None and record.status == "ok", f"{where} {role}: no oracle noise recorded"
            noise = record.metrics["rel_l2"]
            if role in other:  # the official float32 chain's own error against the float64 chain
                noise = max(noise, compare_arrays(other[role], ref.astype(np.float64)).rel_l2)
            allowed = max(FACTOR32 * noise, FLOOR32)
        score = error / allowed
        assert score <= 1.0, f"{where} {role}: rel_l2 {error:.3g} > allowed {allowed:.3g} (noise {noise:.3g})"
        scores.append((score, f"{call.key}#{call.call} {role} rel_l2={error:.3g} noise={noise:.3g}"))
    return scores


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", CASES)
def test_isolated(stores: dict[str, GoldenStore], name: str, dtype: str, record_property: Any) -> None:
    case = stores[dtype].case(name)
    root = tiny_codec(dtype)
    calls = codec_calls(case)
    assert calls, f"{name} records no codec call"
    scores = []
    for call in calls:
        args, kwargs, _ = case.call_io(call.key, call.call)
        result = resolve(root, call.key)(*args, **kwargs)
        scores += compare_call(case, call, flatten(result, "outputs", top=True), dtype)
    worst = max(scores)
    record_property("worst", f"{worst[0]:.3g} of allowed at {worst[1]}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", CASES)
def test_chained(stores: dict[str, GoldenStore], name: str, dtype: str, record_property: Any) -> None:
    case = stores[dtype].case(name)
    root = tiny_codec(dtype)
    outputs = run_chained(root, case)
    calls = codec_calls(case)
    golden_keys = {(c.key, c.call) for c in calls}
    assert set(outputs) == golden_keys, (
        f"impl calls not in the golden: {sorted(set(outputs) - golden_keys)[:5]}; "
        f"golden calls the impl did not make: {sorted(golden_keys - set(outputs))[:5]}"
    )
    chained_reference = None
    if dtype == "float32":
        chained_reference = stores["float64"].case(name)
        ours, theirs = codec_calls(case)[0], codec_calls(chained_reference)[0]
        same = [
            np.array_equal(a, b)
            for a, b in zip(case.call_io(ours.key, 0)[0], chained_reference.call_io(theirs.key, 0)[0])
        ]
        assert ours.key == theirs.key and all(same), (
            "the float32 and float64 goldens start the codec from different inputs"
        )
    scores = []
    for call in calls:
        scores += compare_call(case, call, outputs[(call.key, call.call)], dtype, chained_reference)
    worst = max(scores)
    record_property("worst", f"{worst[0]:.3g} of allowed at {worst[1]}")


def test_every_codec_module_is_exercised(stores: dict[str, GoldenStore]) -> None:
    """Every impl component below the codec root appears in some golden codec call (nothing implemented
    goes unchecked here), except projections the official encode/decode never call: the decoder RVQs'
    input_proj (encode side) and the Mimi RVQs' output_proj (decode side; the property tests cover it)."""
    recorded = {c.key.split(":")[0] for name in CASES for c in codec_calls(stores["float32"].case(name))}
    root = tiny_codec("float32")
    from impl.common.nn import ModuleList

    unexercised = {path for path, module in root.named_modules() if not isinstance(module, ModuleList)} - recorded
    expected = {f"{PREFIX}.decoder.quantizer.{rvq}.input_proj" for rvq in ("rvq_first", "rvq_rest")}
    expected |= {
        f"{PREFIX}.encoder.quantizer.{rvq}_residual_vector_quantizer.output_proj" for rvq in ("semantic", "acoustic")
    }
    assert unexercised == expected, sorted(unexercised - expected)
