"""The recorder on small torch models: what is recorded, under which names, and that nothing changes."""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from conformance.capture.oracle import IsolatedOracle  # noqa: E402
from conformance.capture.recorder import FunctionSpec, MethodSpec, Recorder  # noqa: E402
from conformance.store import GoldenStore, GoldenWriter  # noqa: E402


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)
        self.skip = nn.Identity()

    def forward(self, x: Any, scale: float = 1.0, mask: Any = None) -> tuple[Any, dict[str, Any]]:
        h = self.proj(x) * scale
        y = self.norm(h)
        same = self.skip(y)
        return same, {"pre_norm": h, "mask": mask}


class Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([Block(), Block()])
        self.head = nn.Linear(4, 2)

    def forward(self, x: Any) -> Any:
        for block in self.blocks:
            x, _ = block(x, scale=0.5, mask=None)
        return self.head(x)

    def decode(self, codes: Any) -> Any:
        out = self.head(self.blocks[0].proj.weight[codes])
        out += 1.0  # mutated in place after `head` returned it
        return out


def helper_function(x: Any) -> Any:
    return x * 2


def record(tmp_path: Path, model: Toy, run: Any, **kwargs: Any) -> GoldenStore:
    path = tmp_path / "g.h5"
    with GoldenWriter(path, command="t", software={}) as writer, writer.case("c", {}) as case:
        with Recorder(case, {"": model}, **kwargs):
            run()
    return GoldenStore(path)


@pytest.fixture
def model() -> Toy:
    torch.manual_seed(0)
    return Toy().eval()


def test_every_call_is_recorded_with_args_kwargs_and_outputs(tmp_path: Path, model: Toy) -> None:
    x = torch.randn(3, 4)
    store = record(tmp_path, model, lambda: model(x))
    case = store.case("c")
    assert case.keys()[:3] == ["(root)", "blocks.0", "blocks.0.proj"]
    assert [c.key for c in case.calls_by_completion()][:3] == ["blocks.0.proj", "blocks.0.norm", "blocks.0.skip"]
    _args, kwargs, outputs = case.call_io("blocks.1", 0)
    assert kwargs["scale"] == 0.5 and kwargs["mask"] is None
    assert isinstance(outputs, tuple) and set(outputs[1]) == {"pre_norm", "mask"}
    with torch.no_grad():
        expected = model.blocks[0](x, scale=0.5)[0]
    assert np.array_equal(case.tensor("blocks.0", 0, "outputs/0"), expected.numpy())
    assert np.array_equal(case.tensor("(root)", 0, "args/0"), x.numpy())
    roles = {leaf.role for leaf in case.leaves("blocks.0", 0)}
    assert roles == {"args/0", "kwargs/scale", "kwargs/mask", "outputs/0", "outputs/1/pre_norm", "outputs/1/mask"}


def test_a_tensor_passed_on_is_stored_once(tmp_path: Path, model: Toy) -> None:
    store = record(tmp_path, model, lambda: model(torch.randn(3, 4)))
    case = store.case("c")
    produced = case.leaf("blocks.0.proj", 0, "outputs/0")
    norm_out = case.leaf("blocks.0.norm", 0, "outputs/0")
    # Identity returns its input object: both its args and outputs reference the norm's output.
    for role in ("args/0", "outputs/0"):
        leaf = case.leaf("blocks.0.skip", 0, role)
        assert (leaf.location, leaf.row) == (norm_out.location, norm_out.row)
    assert (case.leaf("blocks.1", 0, "args/0").location, case.leaf("blocks.1", 0, "args/0").row) == (
        norm_out.location,
        norm_out.row,
    )
    assert produced.location != norm_out.location


def test_in_place_changes_after_return_are_not_hidden_by_deduplication(tmp_path: Path, model: Toy) -> None:
    codes = torch.tensor([0, 2, 1])
    spec = MethodSpec("", "decode")
    store = record(tmp_path, model, lambda: model.decode(codes), methods=[spec])
    case = store.case("c")
    head_out = case.tensor("head", 0, "outputs/0")
    decoded = case.tensor(":decode", 0, "outputs/0")
    assert np.allclose(decoded, head_out + 1.0) and not np.array_equal(decoded, head_out)


def test_methods_and_functions_are_recorded_under_their_keys_and_restored(tmp_path: Path, model: Toy) -> None:
    namespace = types.SimpleNamespace(helper=helper_function)
    store = record(tmp_path, model, lambda: namespace.helper(model.decode(torch.tensor([1]))),
                   methods=[MethodSpec("", "decode")], functions=[FunctionSpec(namespace, "helper")])  # fmt: skip
    keys = store.case("c").keys()
    assert keys[:2] == [":decode", "head"] and ":helper" in keys
    assert namespace.helper is helper_function and "decode" not in vars(model)


def test_recording_does_not_change_outputs(tmp_path: Path, model: Toy) -> None:
    x = torch.randn(5, 4)
    with torch.no_grad():
        bare = model(x).clone()
    with torch.no_grad():
        store = record(tmp_path, model, lambda: model(x))
    recorded = store.case("c").tensor("(root)", 0, "outputs/0")
    assert bare.numpy().tobytes() == recorded.tobytes()
    assert not model._forward_hooks and not model._forward_pre_hooks and not model.blocks[0]._forward_hooks


def test_globs_select_modules(tmp_path: Path, model: Toy) -> None:
    store = record(tmp_path, model, lambda: model(torch.randn(2, 4)), include=["blocks.*.norm", "head"])
    assert store.case("c").keys() == ["blocks.0.norm", "blocks.1.norm", "head"]


def test_kv_caches_are_recorded_by_content(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    cache = transformers.cache_utils.DynamicCache()
    keys, values = torch.randn(1, 2, 3, 4), torch.randn(1, 2, 3, 4)
    cache.update(keys, values, 0)

    class UsesCache(nn.Module):
        def forward(self, x: Any, past_key_values: Any = None) -> Any:
            return x + 1

    module = UsesCache()
    path = tmp_path / "g.h5"
    with GoldenWriter(path, command="t", software={}) as writer, writer.case("c", {}) as case:
        with Recorder(case, {"m": module}):
            module(torch.zeros(2), past_key_values=cache)
    _, kwargs, _ = GoldenStore(path).case("c").call_io("m", 0)
    layer = kwargs["past_key_values"]["layers"][0]
    assert np.array_equal(layer["keys"], keys.numpy()) and np.array_equal(layer["values"], values.numpy())


def test_the_isolated_oracle_measures_each_module_against_its_float64_twin(tmp_path: Path, model: Toy) -> None:
    twin = Toy().eval()
    twin.load_state_dict(model.state_dict())
    twin = twin.double()
    import contextlib

    oracle = IsolatedOracle({"": twin}, precision=contextlib.nullcontext)
    store = record(tmp_path, model, lambda: model(torch.randn(8, 4)), oracle=oracle)
    case = store.case("c")
    noise = case.oracle("blocks.1.norm", 0, "outputs/0")
    assert noise is not None and noise.status == "ok"
    assert 0 < noise.metrics["rel_l2"] < 1e-5
    assert case.oracle("(root)", 0, "outputs/0") is not None
