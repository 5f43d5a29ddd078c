"""The mapping file: routing, templates (groups, index arithmetic, tables), transforms."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conformance.errors import MappingError
from conformance.ports.mapping import ShapeError, Transform, layout_permutation, parse_mapping


def test_routing_order_names_then_ignore_then_rename_then_golden_names() -> None:
    mapping = parse_mapping({
        "names": {"debug.kept": "a#0/outputs/0"},
        "ignore": [{"match": r"debug\..*", "reason": "scratch"}],
        "rename": [{"match": r"x\.(\d+)", "to": "first.{1}#0/outputs/0"},
                   {"match": r"x\.(\d+)", "to": "second.{1}#0/outputs/0"}],
    })  # fmt: skip
    assert mapping.route("debug.kept").targets == ["a#0/outputs/0"]  # explicit names win over an ignore regex
    assert mapping.route("debug.tmp").kind == "ignored" and mapping.route("debug.tmp").reason == "scratch"
    assert mapping.route("x.3").targets == ["first.3#0/outputs/0"]  # the first matching rule wins
    assert mapping.route("already.golden#2/outputs/0").kind == "identity"
    assert mapping.route("other").kind == "unmatched"
    assert mapping.route("x.3y").kind == "unmatched"  # regexes match the whole name


@pytest.mark.parametrize(
    ("pattern", "template", "name", "expected"),
    [
        (r"dec\.blocks\.(\d+)", "decoder.decoder.{1+1}", "dec.blocks.0", "decoder.decoder.1"),
        (r"b(\d+)\.r(\d+)", "d.{1+1}.block.{2+2}", "b3.r0", "d.4.block.2"),
        (r"l(\d+)", "layers.{1*2+1}", "l5", "layers.11"),
        (r"l(\d+)", "layers.{1//2}.{1%2}", "l5", "layers.2.1"),
        (r"l(\d+)", "layers.{1-(1)}", "l5", "layers.4"),
        (r"(?P<stage>\d+)\.(?P<unit>\w+)", "s{stage+10}.{unit:units}", "2.a", "s12.act1"),
        (r"w(|\.k)", "conv{1:inner}", "w.k", "conv.conv"),
        (r"w(|\.k)", "conv{1:inner}", "w", "conv"),
        (r"anything", "{0}", "anything", "anything"),
    ],
)
def test_templates(pattern: str, template: str, name: str, expected: str) -> None:
    mapping = parse_mapping({"tables": {"units": {"a": "act1"}, "inner": {"": "", ".k": ".conv"}},
                             "rename": [{"match": pattern, "to": f"{template}#0/outputs/0"}]})  # fmt: skip
    assert mapping.route(name).targets == [f"{expected}#0/outputs/0"]


def test_a_table_without_the_value_is_an_error_naming_it() -> None:
    mapping = parse_mapping({"tables": {"t": {"a": "x"}}, "rename": [{"match": r"(\w)", "to": "{1:t}#0/outputs/0"}]})
    with pytest.raises(MappingError, match=r"'b' \(from 'b'\) is not in \[tables.t\]"):
        mapping.route_all(["b"])


def test_explicit_tables_with_transforms_and_optional_rules() -> None:
    mapping = parse_mapping({"rename": [
        {"names": {"wave": "w#0/outputs/0", "spec": "s#0/outputs/0"}, "reshape": [1, 1, -1], "optional": True},
        {"match": "never", "to": "n#0/outputs/0", "optional": True},
    ]})  # fmt: skip
    routes = mapping.route_all(["wave"])
    assert routes[0].targets == ["w#0/outputs/0"] and routes[0].transform.reshape == (1, 1, -1)
    strict = parse_mapping({"rename": [{"names": {"wave": "w#0/outputs/0", "spec": "s#0/outputs/0"}}]})
    with pytest.raises(MappingError, match="names 'spec', which is not in the dump"):
        strict.route_all(["wave"])


def test_a_name_listed_twice_is_ambiguous() -> None:
    with pytest.raises(MappingError, match="'wave' is listed by both"):
        parse_mapping({"names": {"wave": "w#0/outputs/0"}, "rename": [{"names": {"wave": "v#0/outputs/0"}}]})


def test_layout_permutation() -> None:
    assert layout_permutation("NLC->NCL") == (0, 2, 1)
    assert layout_permutation("NHWC -> NCHW") == (0, 3, 1, 2)
    x = np.arange(24).reshape(2, 3, 4)  # N, L, C
    assert np.array_equal(np.transpose(x, layout_permutation("NLC->NCL")), np.swapaxes(x, 1, 2))
    with pytest.raises(ValueError):
        layout_permutation("NLC")


def test_transforms_apply_in_order_permute_split_reshape_dtype() -> None:
    fused = np.arange(2 * 5 * 12, dtype=np.float64).reshape(2, 5, 12)  # (N, L, 3*C) channels-last, fused
    t = Transform(permute=(0, 2, 1), split_axis=1, parts=3, reshape=(2, 4, 5), dtype="float32")
    parts = [t.apply(fused, i) for i in range(3)]
    for i, part in enumerate(parts):
        assert part.dtype == np.float32 and part.shape == t.shape_of(fused.shape, i) == (2, 4, 5)
        np.testing.assert_array_equal(part, np.swapaxes(fused, 1, 2)[:, 4 * i : 4 * (i + 1)])
    uneven = Transform(split_axis=-1, split_sizes=(8, 2, 2), parts=3)
    assert [uneven.shape_of((1, 3, 12), i) for i in range(3)] == [(1, 3, 8), (1, 3, 2), (1, 3, 2)]
    with pytest.raises(ShapeError, match="add up to 12"):
        uneven.shape_of((1, 3, 13), 0)
    with pytest.raises(ShapeError, match="needs rank 3"):
        Transform(permute=(0, 2, 1)).shape_of((4, 4), 0)
    with pytest.raises(ShapeError, match="cannot reshape"):
        Transform(reshape=(5, -1)).shape_of((2, 3), 0)


@given(st.lists(st.integers(1, 4), min_size=1, max_size=4), st.data())
def test_split_parts_concatenate_back(shape: list[int], data: st.DataObject) -> None:
    axis = data.draw(st.integers(0, len(shape) - 1))
    parts = data.draw(st.integers(2, 4))
    shape[axis] *= parts
    x = np.arange(int(np.prod(shape))).reshape(shape)
    t = Transform(split_axis=axis - len(shape), parts=parts)
    pieces = [t.apply(x, i) for i in range(parts)]
    assert all(p.shape == t.shape_of(tuple(shape), i) for i, p in enumerate(pieces))
    np.testing.assert_array_equal(np.concatenate(pieces, axis=axis), x)


@given(st.permutations(range(4)))
def test_permute_shape_matches_data(order: list[int]) -> None:
    x = np.zeros((2, 3, 4, 5))
    t = Transform(permute=tuple(order))
    assert t.apply(x).shape == t.shape_of(x.shape)
