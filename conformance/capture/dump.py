"""Dump any torch implementation of a recorded model in the port contract (what `--candidate dump:PATH` reads).

A fork of the official package, a re-implementation in torch, the official package on another transformers
version: hook its modules with the recorder's own hooks, run a case, and every call's tensors are named the
way the golden names them (`key#call/role`, see docs/golden-store.md), so the dump needs no map:

    from conformance.capture.dump import dump_case

    dump_case({"": model}, lambda: model.generate(...), "dumps/greedy_decode.safetensors",
              case="greedy_decode")

`roots` maps a golden path prefix to a module ("" keeps the module's own `named_modules()` paths;
"vocoder" puts a second model under that prefix, as the golden has it). The written file is a
safetensors file whose `__metadata__` names the case, the tool and the library versions that ran; it is
written to a temporary name and renamed, so a crashed run never leaves a half dump.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import UsageError
from ..store import tree
from .recorder import FunctionSpec, MethodSpec, TorchTap

# numpy dtypes safetensors stores (bfloat16 reaches the dump already widened to float32 by the tap)
STORABLE = {"bool", "uint8", "int8", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float16", "float32",
            "float64"}  # fmt: skip


def _is_array(value: Any) -> bool:
    return isinstance(value, (np.ndarray, np.generic))


class TensorCollector:
    """A tap's sink that keeps every tensor under its golden name: `key#call/role`, calls of a key numbered
    in the order they start (as the recorder and the check engine number them)."""

    def __init__(self, inputs: bool = False) -> None:
        self.inputs = inputs
        self.tensors: dict[str, np.ndarray] = {}
        self.skipped: list[str] = []  # tensors of a dtype a dump cannot hold
        self._counts: dict[str, int] = defaultdict(int)
        self._open: dict[str, list[int]] = defaultdict(list)

    def __call__(self, key: str, phase: str, args: tuple[Any, ...], kwargs: dict[str, Any], outputs: Any) -> None:
        if phase == "call":
            index = self._counts[key]
            self._counts[key] += 1
            self._open[key].append(index)
            if self.inputs:
                self._keep(key, index, tree.flatten(tuple(args), "args", is_tensor=_is_array))
                self._keep(key, index, tree.flatten(dict(kwargs), "kwargs", is_tensor=_is_array))
            return
        index = self._open[key].pop()
        self._keep(key, index, tree.flatten(outputs, "outputs", True, is_tensor=_is_array))

    def _keep(self, key: str, call: int, leaves: Mapping[str, Any]) -> None:
        for role, value in leaves.items():
            if not _is_array(value):
                continue
            array = np.array(
                value, copy=True, order="C"
            )  # the tap's arrays share torch's memory (caches grow in place)
            name = f"{key}#{call}/{role}"
            if array.dtype.name not in STORABLE:
                self.skipped.append(f"{name} ({array.dtype.name})")
                continue
            self.tensors[name] = array


def library_versions() -> dict[str, str]:
    """The versions of the libraries a torch implementation ran with (for the dump's metadata)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"torch": torch.__version__, "numpy": np.__version__}
    with contextlib.suppress(PackageNotFoundError):
        out["transformers"] = version("transformers")
    return out


def write_dump(tensors: Mapping[str, np.ndarray], out: str | Path, *, case: str | None = None,
               metadata: Mapping[str, Any] | None = None) -> Path:  # fmt: skip
    """Write tensors (golden names -> arrays) as one safetensors file, atomically. `case` goes into the
    metadata (how a check tells which case a dump holds); other metadata values are JSON-encoded."""
    from safetensors.numpy import save_file

    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = {"producer": "conformance dump"}
    for name, value in (metadata or {}).items():
        header[name] = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    if case is not None:
        header["case"] = case
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        save_file({name: np.ascontiguousarray(array) for name, array in tensors.items()}, str(tmp), metadata=header)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def dump_case(
    roots: Mapping[str, torch.nn.Module],
    run: Callable[[], Any],
    out: str | Path,
    *,
    case: str | None = None,
    include: Sequence[str] | None = None,
    methods: Iterable[MethodSpec] = (),
    functions: Iterable[FunctionSpec] = (),
    inputs: bool = False,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Run `run()` with every module of `roots` hooked (and the listed methods and module-level functions
    wrapped), and write what they returned (and with `inputs`, what they were given) to the dump `out`.

    include: globs over golden module keys (default: every module). Returns the path written.
    """
    collector = TensorCollector(inputs)
    with torch.no_grad(), TorchTap(roots, collector, include=include, methods=methods, functions=functions):
        run()
    if not collector.tensors:
        raise UsageError("the run called no hooked module: nothing to dump (wrong roots or include globs?)", path=out)
    extra = {**library_versions(), **(metadata or {})}
    if collector.skipped:
        extra["skipped"] = collector.skipped
    return write_dump(collector.tensors, out, case=case, metadata=extra)
