"""Flattening nested call structures into named leaves (numpy only).

The recorder (torch side) and the checking side (impl taps, dumps) must name leaves identically, so
both use `build_spec`: args, kwargs and outputs become leaves named by their path (`args/0`,
`kwargs/position_embeddings/1`, `outputs/last_hidden_state`, `kwargs/past_key_values/layers/0/keys`),
and the returned spec rebuilds the structure (see `Case.call_io`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

Visit = Callable[[str, Any, str], None]


def _is_scalar_json(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def build_spec(
    value: Any,
    role: str,
    visit: Visit,
    top: bool = False,
    *,
    is_tensor: Callable[[Any], bool] = lambda v: isinstance(v, np.ndarray),
    expand: Callable[[Any], dict[str, Any] | None] = lambda v: None,
    alias: Callable[[Any, str], dict[str, Any] | None] | None = None,
) -> dict[str, Any]:
    """Visit the leaves of `value` as (role, leaf, kind) and return the structure that rebuilds it.

    kind is "tensor", "json" (a list of more than four plain scalars, kept as one leaf) or "value".
    A bare tensor at the top (an output that is one tensor) is named `<role>/0`. `expand` turns an
    object into a dict to recurse into (KV caches become their layers' tensors); its type is kept.
    `alias` may return a ready-made node for an item already recorded in another call (its leaves then
    carry `"from": [key, call]` and are not visited again).
    """

    def go(item: Any, path: str, at_top: bool) -> dict[str, Any]:
        if alias is not None:
            aliased = alias(item, path)
            if aliased is not None:
                return aliased
        expanded = expand(item)
        if expanded is not None:
            expanded_node = go(expanded, path, False)
            expanded_node["type"] = type(item).__qualname__
            return expanded_node
        if is_tensor(item):
            if at_top:
                path = f"{path}/0"
            visit(path, item, "tensor")
            # Record numpy arrays as such: the official code takes some inputs as numpy (audio), most as torch.
            return {"leaf": path, "numpy": True} if isinstance(item, np.ndarray) else {"leaf": path}
        if isinstance(item, Mapping):
            node: dict[str, Any] = {"dict": {}}
            if type(item) is not dict:
                node["type"] = type(item).__qualname__
            for name, sub in item.items():
                node["dict"][str(name)] = go(sub, f"{path}/{name}", False)
            return node
        if dataclasses.is_dataclass(item) and not isinstance(item, type):
            fields = {f.name: getattr(item, f.name) for f in dataclasses.fields(item)}
            node = go(fields, path, False)
            node["type"] = type(item).__qualname__
            return node
        if isinstance(item, (tuple, list)):
            if len(item) > 4 and all(_is_scalar_json(v) for v in item):
                visit(path, list(item), "json")
                return {"leaf": path}
            kind = "tuple" if isinstance(item, tuple) else "list"
            return {kind: [go(sub, f"{path}/{i}", False) for i, sub in enumerate(item)]}
        visit(path, item, "value")
        return {"leaf": path}

    return go(value, role, top)


def flatten(value: Any, role: str, top: bool = False, **kwargs: Any) -> dict[str, Any]:
    """{role: leaf} of a structure, named exactly as the recorder names them."""
    out: dict[str, Any] = {}
    build_spec(value, role, lambda r, v, k: out.__setitem__(r, v), top=top, **kwargs)
    return out


def numpy_roles(spec: dict[str, Any]) -> set[str]:
    """Roles of leaves that were numpy arrays (not torch tensors) when recorded."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("numpy") and "leaf" in node:
                found.add(node["leaf"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(spec)
    return found
