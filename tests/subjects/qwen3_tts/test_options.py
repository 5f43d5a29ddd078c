"""The option inventory (conformance/subjects/qwen3_tts/options.py, docs/options.md) is complete and true.

- Complete: every parameter of the official signatures it lists (read with inspect from qwen-tts) is inventoried,
  and every inventoried option names an existing case (or says why none observes it).
- True: for each option, the official model re-run on the tiny checkpoint with its case's recorded inputs, the option
  changed (an input replaced, or the official code patched), changes at least one golden output of the case: its
  outputs (codes, waveform, embedding) or the recorded outputs of the module implementing the option (the processed
  scores). Also, the same re-run without the change reproduces the golden (so a difference is the option's).

Needs the committed goldens recorded with the option cases (python -m conformance.project goldens).
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conformance.subjects.qwen3_tts import cases as qcases
from conformance.subjects.qwen3_tts.options import APIS, OPTIONS, Option

pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[3]
GOLDEN = ROOT / "goldens" / "qwen3_tts-tiny-float32.h5"
CHECKPOINT = ROOT / "goldens" / "checkpoints" / "qwen3_tts-tiny"
OBSERVED = [option for option in OPTIONS if option.case is not None]


def _official() -> Any:
    from conformance.subjects.qwen3_tts.checkpoints import official

    return official()


def test_every_official_argument_is_inventoried() -> None:
    inventoried = {(api, option.name) for option in OPTIONS for api in option.apis}
    missing = []
    for label, path in APIS.items():
        target: Any = _official()
        for part in path:
            target = getattr(target, part)
        for name, parameter in inspect.signature(target).parameters.items():
            if name == "self" or parameter.kind in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL):
                continue
            if (label, name) not in inventoried:
                missing.append(f"{label}({name})")
    assert not missing, f"official arguments missing from the option inventory: {missing}"


def inventory_problems(cases: dict[str, Any]) -> list[str]:
    """What is wrong with the inventory against these cases (name -> case)."""
    problems = []
    for option in OPTIONS:
        if not all(api in APIS for api in option.apis):
            problems.append(f"{option.name}: an API that APIS does not list")
        if option.case is None:
            if not option.why:
                problems.append(f"{option.name}: no case and no reason")
        elif option.case not in cases:
            problems.append(f"{option.name}: case {option.case!r} does not exist")
        elif not (option.how and (option.changes or option.patch)):
            problems.append(f"{option.name}: no change makes it observable")
    return problems


def test_every_option_names_a_case_or_a_reason() -> None:
    assert not inventory_problems(qcases.CASES_BY_NAME)


def test_removing_an_option_case_fails_the_inventory() -> None:
    for removed in {option.case for option in OPTIONS if option.case}:
        cases = {name: case for name, case in qcases.CASES_BY_NAME.items() if name != removed}
        assert any(f"case {removed!r} does not exist" in problem for problem in inventory_problems(cases)), removed


# -- re-running the official model with an option changed ----------------------------------------------------


@pytest.fixture(scope="module")
def golden() -> Any:
    from conformance.store.reader import GoldenStore

    if not GOLDEN.exists():
        pytest.skip("goldens not present")
    return GoldenStore(GOLDEN)


@pytest.fixture(scope="module")
def models() -> Iterator[Any]:
    import torch

    from conformance.subjects.qwen3_tts.record import CheckpointSource, OfficialModels

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the goldens were recorded: the thread count changes float32 bits
    yield OfficialModels(CheckpointSource.from_path(CHECKPOINT), "float32", "eager")
    torch.set_num_threads(threads)


def _value(spec: Any) -> Any:
    if isinstance(spec, tuple) and spec and spec[0] in ("speech_like", "edge_audio"):
        from conformance.subjects.qwen3_tts import signals

        return getattr(signals, spec[0])(*spec[1:])
    return spec


@contextlib.contextmanager
def _patched(name: str | None) -> Iterator[None]:
    """A named change of the official code, for options no input carries."""
    if name is None:
        yield
        return
    from transformers.generation import logits_process as lp

    o = _official()
    saved: list[tuple[Any, str, Any]] = []

    def patch(owner: Any, attribute: str, value: Any) -> None:
        saved.append((owner, attribute, getattr(owner, attribute)))
        setattr(owner, attribute, value)

    def identity(self: Any, input_ids: Any, scores: Any) -> Any:
        return scores

    if name == "no_min_new_tokens":  # min_new_tokens also sets min_length: both mask the end token
        patch(lp.MinNewTokensLengthLogitsProcessor, "__call__", identity)
        patch(lp.MinLengthLogitsProcessor, "__call__", identity)
    elif name == "no_suppress_tokens":
        patch(lp.SuppressTokensLogitsProcessor, "__call__", identity)
    elif name == "chunked_decode_defaults":
        function = o.codec_modeling.Qwen3TTSTokenizerV2Decoder.chunked_decode
        patch(function, "__defaults__", (300, 10))
    elif name == "no_log_clamp":
        import torch

        patch(o.tts_modeling, "dynamic_range_compression_torch", lambda x, C=1, clip_val=1e-5: torch.log(x * C))
    else:
        raise AssertionError(f"unknown patch {name!r}")
    try:
        yield
    finally:
        for owner, attribute, value in reversed(saved):
            setattr(owner, attribute, value)


class _ChangedIO:
    """RecordedIO with some inputs replaced."""

    def __new__(cls, case: Any, size: str, changes: dict[str, Any]) -> Any:
        from conformance.capture.io import RecordedIO

        class Changed(RecordedIO):
            def input(self, name: str, value: Any) -> Any:
                value = super().input(name, value)
                if name in changes:
                    value = self.inputs[name] = _value(changes[name])
                return value

        return Changed(case, size)


def _run(models: Any, golden_case: Any, changes: dict[str, Any], patch: str | None,
         watched: tuple[str, ...]) -> dict[str, Any]:  # fmt: skip
    """The case's outputs and the outputs of the watched modules' calls (in call order)."""
    import torch

    spec = qcases.CASES_BY_NAME[golden_case.name]
    io = _ChangedIO(golden_case, "tiny", changes)
    seen: dict[str, list[np.ndarray]] = {key: [] for key in watched}
    handles = []
    wrapper = models.tts(spec.model) if spec.model != "codec" else None
    for key in watched:
        module = wrapper.model.get_submodule(key)
        handles.append(module.register_forward_hook(
            lambda _m, _a, out, key=key: seen[key].append(out.detach().float().numpy().copy())))  # fmt: skip
    try:
        with _patched(patch), torch.no_grad():
            spec.run(models, io)
    finally:
        for handle in handles:
            handle.remove()
    out = {f"output {name}": np.asarray(value) for name, value in io.outputs.items()}
    for key, values in seen.items():
        for call, value in enumerate(values):
            out[f"{key}#{call}"] = value
    return out


def _golden_outputs(golden_case: Any, watched: tuple[str, ...]) -> dict[str, Any]:
    out = {f"output {name}": np.asarray(golden_case.output(name)) for name in golden_case.output_names()}
    for key in watched:
        call = 0
        while golden_case.has_call(key, call):
            out[f"{key}#{call}"] = np.asarray(golden_case.tensor(key, call, "outputs/0"), dtype=np.float32)
            call += 1
    return out


def _differs(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    names = sorted(set(a) | set(b))
    return [n for n in names if n not in a or n not in b or a[n].shape != b[n].shape
            or not np.array_equal(a[n], b[n], equal_nan=True)]  # fmt: skip


@pytest.mark.parametrize("option", OBSERVED, ids=[o.name for o in OBSERVED])
def test_changing_the_option_changes_a_golden_output(option: Option, golden: Any, models: Any) -> None:
    if option.case not in golden.cases:
        pytest.fail(f"the committed goldens have no case {option.case!r}: regenerate them")
    case = golden.case(option.case)
    watched = tuple(k for k in option.outputs if case.has_call(k, 0))
    recorded = _golden_outputs(case, watched)
    baseline = _run(models, case, {}, None, watched)
    assert not _differs(baseline, recorded), f"{option.case}: the unchanged re-run does not reproduce the golden"
    for changes in option.changes or ({},):
        try:
            changed = _run(models, case, changes, option.patch, watched)
        except Exception as exc:  # the official code cannot run with the option changed: that decides too
            # (without min_new_tokens the end token wins at step 0 and generate stacks no frame; without the
            # suppression a codec id >= 2048 reaches a codebook of 2048 entries)
            changed = {"raised": np.asarray(f"{type(exc).__name__}: {exc}")}
        assert _differs(changed, recorded), (
            f"{option.name}: {changes or option.patch} changes no output of {option.case}"
        )


def test_the_options_page_lists_every_option_with_its_case() -> None:
    page = (ROOT / "docs" / "options.md").read_text()
    for option in OPTIONS:
        row = next((line for line in page.splitlines() if line.startswith(f"| `{option.name}` |")), None)
        assert row is not None, f"docs/options.md has no row for {option.name}"
        assert option.case is None or f"`{option.case}`" in row, f"docs/options.md: {option.name} without its case"


# -- the shaping each case's description promises, on the committed goldens ----------------------------------


def test_the_penalty_case_penalises_scores_of_both_signs(golden: Any) -> None:
    """Among the tokens the repetition penalty acts on, raw scores of both signs (divided when positive,
    multiplied when negative: a sign bug shows), and the processed scores differ from the raw ones there."""
    case = golden.case("tts_repetition_penalty")
    signs: set[bool] = set()
    call = 0
    while case.has_call("talker.logits_processor", call):
        ids = np.asarray(case.tensor("talker.logits_processor", call, "args/0"))
        raw = np.asarray(case.tensor("talker.logits_processor", call, "args/1"))
        if ids.size:
            penalised = raw[0, np.unique(ids[0])]
            signs |= set((penalised > 0).tolist())
        call += 1
    assert signs == {True, False}


def test_the_end_token_wins_before_and_after_min_new_tokens(golden: Any) -> None:
    """tts_min_new_tokens: its end token is the raw argmax at step 0, masked there and at step 1, and chosen at
    step 2, so the codes hold exactly two frames."""
    case = golden.case("tts_min_new_tokens")
    eos = int(np.asarray(case.input("eos_token_id")))
    raw0 = np.asarray(case.tensor("talker.logits_processor", 0, "args/1"))
    processed = [np.asarray(case.tensor("talker.logits_processor", c, "outputs/0")) for c in range(3)]
    assert int(raw0.argmax()) == eos
    assert np.isneginf(processed[0][0, eos]) and np.isneginf(processed[1][0, eos])
    assert int(processed[2].argmax()) == eos
    assert np.asarray(case.output("codes")).shape[0] == 2
