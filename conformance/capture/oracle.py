"""The isolated float64 oracle: measure each module's own rounding noise while recording.

Comparing a float32 run with a separate float64 run mixes two things: each module's own rounding error
and everything inherited from upstream, including discrete decisions (a generated token) that flip
between the two runs and then make every later tensor differ wholesale. To measure what a module itself
contributes, the oracle re-runs each hooked call on a float64 twin of the model with the *same inputs*
the float32 module received (upcast exactly), and compares the float32 outputs with the twin's. The
noise record (max abs, rel L2, ...) per output tensor is what calibrated tolerance policies scale.

A call whose re-run produces different integers (codes chosen by an argmax inside it) is marked
`discrete_mismatch`: its float noise is not comparable and policies fall back to their defaults.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from typing import Any

import numpy as np
import torch

from ..metrics import noise_metrics
from ..store.schema import bfloat16_to_float32
from .recorder import flatten, tensor_to_numpy

STATUS_OK = "ok"
STATUS_DISCRETE = "discrete_mismatch"
STATUS_STRUCTURE = "structure_mismatch"


def upcast(value: Any, dtype: torch.dtype) -> Any:
    """A deep copy of call inputs with every floating tensor (and float array) cast to `dtype`."""
    if isinstance(value, torch.Tensor):
        out = value.detach().clone()
        return out.to(dtype) if out.is_floating_point() else out
    if isinstance(value, np.ndarray):
        return value.astype(np.float64) if value.dtype.kind == "f" else value.copy()
    if isinstance(value, tuple):
        return tuple(upcast(v, dtype) for v in value)
    if isinstance(value, list):
        return [upcast(v, dtype) for v in value]
    if isinstance(value, dict):
        return type(value)((k, upcast(v, dtype)) for k, v in value.items())
    try:
        from transformers.cache_utils import Cache
    except ImportError:  # pragma: no cover
        Cache = ()  # type: ignore[assignment,misc]
    if isinstance(value, Cache):
        cache = copy.deepcopy(value)
        for layer in getattr(cache, "layers", []):
            for name in ("keys", "values"):
                tensor = getattr(layer, name, None)
                if isinstance(tensor, torch.Tensor) and tensor.is_floating_point():
                    setattr(layer, name, tensor.to(dtype))
            if getattr(layer, "dtype", None) is not None:
                layer.dtype = dtype
        return cache
    return value


def sampled(call: int) -> bool:
    """Whether a sampled oracle re-runs call `call` of a module: the first calls, then every power of two."""
    return call < 3 or (call & (call - 1)) == 0


class IsolatedOracle:
    """Re-runs recorded calls on a float64 twin model with the recorded inputs, upcast.

    twin_roots: {path prefix: twin module}, the same prefixes the recorder uses.
    precision: a context manager factory that makes the twin compute in true float64.
    functions: {key: callable} for recorded free functions (`:name`), called with the upcast inputs.
    skip: predicate over keys whose calls are not re-run (composite generation methods whose outputs
        are discrete decisions, not float tensors).
    sample: re-run only calls 0, 1, 2, 4, 8, ... of each module (`sampled`): the noise of a module's other calls
        is its largest sampled one (what a check uses, compare/engine.py). A generation of N frames re-runs about
        log2(N) + 1 calls of each per-frame module instead of N: the oracle's cost at full size.
    """

    def __init__(
        self,
        twin_roots: Mapping[str, torch.nn.Module],
        *,
        precision: Callable[[], AbstractContextManager[Any]],
        functions: Mapping[str, Callable[..., Any]] | None = None,
        skip: Callable[[str], bool] | None = None,
        dtype: torch.dtype = torch.float64,
        sample: bool = False,
    ) -> None:
        self.sample = sample
        self.twin_roots = dict(twin_roots)
        self.precision = precision
        self.functions = dict(functions or {})
        self.skip = skip or (lambda key: False)
        self.dtype = dtype
        self.failures: dict[str, str] = {}

    def wants(self, key: str, call: int = 0) -> bool:
        if self.sample and not sampled(call):
            return False
        return not self.skip(key) and self._target(key) is not None

    def snapshot(self, key: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        # with the random generator's state at the call: a call that samples inside (a generation step) draws the
        # same numbers in the twin, and the twin's draws never shift the recorded run's
        return upcast(args, self.dtype), upcast(dict(kwargs), self.dtype), torch.random.get_rng_state()

    def _target(self, key: str) -> Callable[..., Any] | None:
        if key in self.functions:
            return self.functions[key]
        path, _, method = key.partition(":")
        module = self._resolve(path)
        if module is None:
            return None
        return getattr(module, method) if method else module

    def _resolve(self, path: str) -> Any:
        if path == "(root)":
            path = ""
        for prefix, root in self.twin_roots.items():
            if path == prefix:
                return root
            if prefix == "" or path.startswith(prefix + "."):
                rest = path[len(prefix) + 1 :] if prefix else path
                try:
                    return root.get_submodule(rest)
                except AttributeError:
                    continue
        return None

    def measure(self, key: str, snapshot: Any, outputs: Any) -> list[tuple[str, str, dict[str, float]]]:
        target = self._target(key)
        args, kwargs, rng_state = snapshot
        try:
            with torch.no_grad(), self.precision(), torch.random.fork_rng(devices=[]):
                torch.random.set_rng_state(rng_state)
                twin_outputs = target(*args, **kwargs)  # type: ignore[misc]
        except Exception as exc:  # the oracle must never break a recording; say why it is missing
            self.failures[key] = f"{type(exc).__name__}: {exc}"
            return []
        return list(self._compare(flatten(outputs, "outputs", top=True), flatten(twin_outputs, "outputs", top=True)))

    def _compare(self, recorded: dict[str, Any], twin: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, float]]]:
        discrete = False
        rows: list[tuple[str, str, dict[str, float]]] = []
        for role, value in recorded.items():
            if not isinstance(value, (torch.Tensor, np.ndarray)):
                continue
            other = twin.get(role)
            raw, logical = tensor_to_numpy(value)
            dtype = logical or raw.dtype.name
            if not isinstance(other, (torch.Tensor, np.ndarray)):
                rows.append((role, STATUS_STRUCTURE, {}))
                continue
            other_raw, _ = tensor_to_numpy(other)
            if raw.dtype.kind not in "fc":
                if raw.shape != other_raw.shape or not np.array_equal(raw, other_raw):
                    discrete = True
                continue
            if raw.shape != other_raw.shape:
                rows.append((role, STATUS_STRUCTURE, {}))
                discrete = True
                continue
            values = raw if logical is None else _widen(raw, logical)
            rows.append((role, STATUS_OK, noise_metrics(other_raw.astype(np.float64), values, dtype)))
        for role, status, metrics in rows:
            yield role, (STATUS_DISCRETE if discrete and status == STATUS_OK else status), metrics


def _widen(raw: np.ndarray, logical: str) -> np.ndarray:
    return bfloat16_to_float32(raw) if logical == "bfloat16" else raw
