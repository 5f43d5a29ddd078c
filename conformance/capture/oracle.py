"""The isolated float64 oracle: measure each module's own rounding noise while recording.

Comparing a float32 run with a separate float64 run mixes two things: each module's own rounding error
and everything inherited from upstream, including discrete decisions (a generated token) that flip
between the two runs and then make every later tensor differ wholesale. To measure what a module itself
contributes, the oracle re-runs each hooked call on a float64 twin of the model with the *same inputs*
the float32 module received (upcast exactly), and compares the float32 outputs with the twin's. The
noise record (max abs, rel L2, ...) per output tensor is what calibrated tolerance policies scale.

A call whose re-run produces different integers (codes chosen by an argmax inside it) is marked
`discrete_mismatch`: its float noise is not comparable and policies fall back to their defaults.

Precision twins (`OracleTwin`: the official module in bfloat16, float16, or with quantized weights) are the
same mechanism at another precision: each hooked call is also re-run on every twin with the recorded inputs cast
to the twin's compute dtype, and the twin's outputs are compared with the float64 twin's, giving that
precision's own noise for the tensor (oracle-table mode `isolated:<precision>`, conformance/precisions.py).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..metrics import noise_metrics
from ..precisions import noise_mode
from ..store.schema import bfloat16_to_float32
from .recorder import flatten, tensor_to_numpy

STATUS_OK = "ok"
STATUS_DISCRETE = "discrete_mismatch"
STATUS_STRUCTURE = "structure_mismatch"


def upcast(value: Any, dtype: torch.dtype) -> Any:
    """A deep copy of call inputs with every floating tensor cast to `dtype` (float arrays: to float64 when
    `dtype` is float64, else kept as they are: numpy inputs are what the official code converts itself)."""
    if isinstance(value, torch.Tensor):
        out = value.detach().clone()
        return out.to(dtype) if out.is_floating_point() else out
    if isinstance(value, np.ndarray):
        widen = value.dtype.kind == "f" and dtype == torch.float64
        return value.astype(np.float64) if widen else value.copy()
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


@dataclass
class OracleTwin:
    """A twin of the recorded model at another precision: its roots (same prefixes as the recorder's), the dtype
    its inputs are cast to, a context it computes in, and its versions of recorded free functions."""

    precision: str  # a conformance.precisions name: the oracle-table mode is `isolated:<precision>`
    roots: Mapping[str, torch.nn.Module]
    dtype: torch.dtype
    context: Callable[[], AbstractContextManager[Any]] = contextlib.nullcontext
    functions: Mapping[str, Callable[..., Any]] = field(default_factory=dict)

    @property
    def mode(self) -> str:
        return noise_mode("isolated", self.precision)


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
    twins: precision twins re-run on the same inputs, each compared with the float64 twin's outputs.
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
        twins: list[OracleTwin] | None = None,
    ) -> None:
        self.sample = sample
        self.twin_roots = dict(twin_roots)
        self.twins = list(twins or [])
        self.precision = precision
        self.functions = dict(functions or {})
        self.skip = skip or (lambda key: False)
        self.dtype = dtype
        self.failures: dict[str, str] = {}

    def wants(self, key: str, call: int = 0) -> bool:
        if self.sample and not sampled(call):
            return False
        if self.skip(key):  # a composite of discrete decisions: only the twins re-run it, for its decisions
            return any(self._target(key, twin) is not None for twin in self.twins)
        return self._target(key) is not None

    def snapshot(self, key: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Copies of the inputs for the float64 twin and each precision twin, taken before the call runs (a call
        may update its inputs in place, a KV cache), with the random generator's state at the call: a call that
        samples inside (a generation step) draws the same numbers in every twin, and the twins' draws never shift
        the recorded run's."""
        twins = {twin.precision: (upcast(args, twin.dtype), upcast(dict(kwargs), twin.dtype)) for twin in self.twins}
        return upcast(args, self.dtype), upcast(dict(kwargs), self.dtype), twins, torch.random.get_rng_state()

    def _target(self, key: str, twin: OracleTwin | None = None) -> Callable[..., Any] | None:
        functions = self.functions if twin is None else twin.functions
        if key in functions:
            return functions[key]
        path, _, method = key.partition(":")
        module = self._resolve(path, self.twin_roots if twin is None else twin.roots)
        if module is None:
            return None
        return getattr(module, method, None) if method else module

    def _resolve(self, path: str, roots: Mapping[str, torch.nn.Module]) -> Any:
        if path == "(root)":
            path = ""
        for prefix, root in roots.items():
            if path == prefix:
                return root
            if prefix == "" or path.startswith(prefix + "."):
                rest = path[len(prefix) + 1 :] if prefix else path
                try:
                    return root.get_submodule(rest)
                except AttributeError:
                    continue
        return None

    def measure(self, key: str, snapshot: Any, outputs: Any) -> list[tuple[str, str, dict[str, float], str]]:
        """(role, status, metrics, mode) rows: the recorded outputs' noise (mode `isolated`), then each precision
        twin's (`isolated:<precision>`), all against the float64 twin's outputs on the same inputs."""
        args, kwargs, twin_inputs, rng_state = snapshot
        if self.skip(key):
            return self._decisions(key, twin_inputs, outputs, rng_state)
        target = self._target(key)
        try:
            with torch.no_grad(), self.precision(), torch.random.fork_rng(devices=[]):
                torch.random.set_rng_state(rng_state)
                twin_outputs = target(*args, **kwargs)  # type: ignore[misc]
        except Exception as exc:  # the oracle must never break a recording; say why it is missing
            self.failures[key] = f"{type(exc).__name__}: {exc}"
            return []
        reference = flatten(twin_outputs, "outputs", top=True)
        rows = [(*row, "isolated") for row in self._compare(flatten(outputs, "outputs", top=True), reference)]
        for twin, produced in self._twin_runs(key, twin_inputs, rng_state):
            rows.extend((*row, twin.mode) for row in self._compare(produced, reference))
        return rows

    def _twin_runs(
        self, key: str, twin_inputs: dict[str, Any], rng_state: torch.Tensor
    ) -> Iterator[tuple[OracleTwin, Any]]:
        """(twin, its flattened outputs) for each precision twin that can run the call, on its cast inputs and the
        call's random state; a twin that cannot run it leaves that call without its noise, and says why."""
        for twin in self.twins:
            target = self._target(key, twin)
            if target is None:
                continue
            twin_args, twin_kwargs = twin_inputs[twin.precision]
            try:
                with torch.no_grad(), twin.context(), torch.random.fork_rng(devices=[]):
                    torch.random.set_rng_state(rng_state)
                    produced = target(*twin_args, **twin_kwargs)
            except Exception as exc:
                self.failures[f"{key} ({twin.precision})"] = f"{type(exc).__name__}: {exc}"
                continue
            yield twin, flatten(produced, "outputs", top=True)

    def _decisions(
        self, key: str, twin_inputs: dict[str, Any], outputs: Any, rng_state: torch.Tensor
    ) -> list[tuple[str, str, dict[str, float], str]]:
        """A composite of discrete decisions (a generation loop) re-run on each twin from the recorded inputs: when
        the twin decides otherwise than the recording (another token), every tensor output of the call is marked
        `discrete_mismatch` for that twin (no reference exists for it at that precision); when it decides alike,
        nothing is recorded and its float outputs are judged on the twin's whole-case noise."""
        recorded = flatten(outputs, "outputs", top=True)
        rows: list[tuple[str, str, dict[str, float], str]] = []
        for twin, produced in self._twin_runs(key, twin_inputs, rng_state):
            differs = False
            for role, value in recorded.items():
                other = produced.get(role)
                if not isinstance(value, (torch.Tensor, np.ndarray)) or not isinstance(
                    other, (torch.Tensor, np.ndarray)
                ):
                    continue
                raw, logical = tensor_to_numpy(value)
                other_raw, other_logical = tensor_to_numpy(other)
                if logical is None and other_logical is None and raw.dtype.kind not in "fc":
                    differs = differs or raw.shape != other_raw.shape or not np.array_equal(raw, other_raw)
            if differs:
                rows.extend((role, STATUS_DISCRETE, {}, twin.mode) for role, value in recorded.items()
                            if isinstance(value, (torch.Tensor, np.ndarray)))  # fmt: skip
        return rows

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
            other_raw, other_logical = tensor_to_numpy(other)
            if other_logical is not None:
                other_raw = _widen(other_raw, other_logical)
            if raw.dtype.kind not in "fc" and logical is None:
                if raw.shape != other_raw.shape or not np.array_equal(raw, other_raw):
                    discrete = True  # another decision (codes, tokens): said on the integers themselves too
                    rows.append((role, STATUS_DISCRETE, {}))
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
