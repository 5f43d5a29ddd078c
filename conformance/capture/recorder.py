"""Forward hooks (and method wrappers) that stream every call of a model into a golden store.

For each call of a hooked module the recorder writes, under the module's official path and the call's
index, its positional args, keyword args and outputs, flattened to named leaves (`args/0`,
`kwargs/position_embeddings/1`, `outputs/last_hidden_state`). Tensors go to the store; every other leaf
(None, ints, strings, dtypes, cache objects) is described. Inputs are captured before the module runs
(modules may update caches or tensors in place), outputs when it returns.

A tensor already stored is not stored again: a module's input that is the very tensor some earlier
module returned (or received) becomes a reference to it, provided its bytes did not change since. Most
inputs of a sequential network are its previous module's outputs, so this halves what is written.

`forward` hooks do not see other methods. Methods that compute a component of the model (a
quantizer's `decode`, a decoder's `chunked_decode`, `generate`, an embedding extraction) are wrapped
explicitly and recorded under `<module path>:<method>`; free functions under `:<function>`.
"""

from __future__ import annotations

import contextlib
import fnmatch
import math
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..store import tree
from ..store.schema import LeafRecord, checksum
from ..store.writer import CaseWriter, TensorHandle

ROOT_KEY = "(root)"
Fingerprint = tuple[int, tuple[int, ...], str]  # CRC-32 of the stored bytes, shape, dtype name (as the store has them)


@dataclass(frozen=True)
class MethodSpec:
    """A method other than `forward` to record: `module_path:method` (path "" is the root)."""

    module_path: str
    method: str
    oracle: bool = True

    @property
    def key(self) -> str:
        return f"{self.module_path}:{self.method}"


@dataclass(frozen=True)
class FunctionSpec:
    """A free function to record, looked up as `getattr(namespace, name)` at call time."""

    namespace: Any
    name: str
    oracle: bool = True

    @property
    def key(self) -> str:
        return f":{self.name}"


def tensor_to_numpy(value: torch.Tensor | np.ndarray) -> tuple[np.ndarray, str | None]:
    """Raw storage of a tensor and, for dtypes numpy lacks, the logical dtype name."""
    if isinstance(value, np.ndarray):
        return value, None
    t = value.detach() if value.requires_grad else value
    if t.device.type != "cpu":
        t = t.cpu()
    if t.dtype == torch.bfloat16:
        return t.contiguous().view(torch.int16).numpy().view(np.uint16), "bfloat16"
    if t.is_complex() and t.is_conj():
        t = t.resolve_conj()
    return t.contiguous().numpy(), None


def _version(t: torch.Tensor) -> int | None:
    try:
        return int(t._version)
    except (RuntimeError, AttributeError):  # inference-mode tensors do not track versions
        return None


def describe_object(value: Any) -> dict[str, Any]:
    """A JSON description of a leaf that is neither a tensor nor a plain value (caches, configs...)."""
    cls = type(value)
    description: dict[str, Any] = {"type": f"{cls.__module__}.{cls.__qualname__}"}
    try:
        from transformers.cache_utils import Cache

        if isinstance(value, Cache):
            description["seq_length"] = int(value.get_seq_length())
            description["layers"] = len(getattr(value, "layers", []))
            return description
    except ImportError:  # pragma: no cover - transformers is installed wherever torch models are recorded
        pass
    text = repr(value)
    description["repr"] = text if len(text) <= 200 else text[:197] + "..."
    return description


_CACHE_CLASS: list[Any] = []
CACHE_ALIAS_BYTES = 1 << 20  # caches smaller than this are recorded in full in every call (tiny models)


def _mark_from(node: Any, key: str, call: int) -> Any:
    """A copy of a spec whose leaves say they belong to call `key#call`."""
    if isinstance(node, dict):
        if "leaf" in node:
            return {**node, "from": [key, call]}
        return {k: _mark_from(v, key, call) for k, v in node.items()}
    if isinstance(node, list):
        return [_mark_from(v, key, call) for v in node]
    return node


def _cache_class() -> Any:
    """transformers' Cache base class, imported once (this runs for every leaf of every call)."""
    if not _CACHE_CLASS:
        try:
            from transformers.cache_utils import Cache
        except ImportError:  # pragma: no cover - torch models here always come with transformers
            Cache = None  # type: ignore[assignment,misc]
        _CACHE_CLASS.append(Cache)
    return _CACHE_CLASS[0]


def cache_contents(value: Any) -> dict[str, Any] | None:
    """The tensors of a transformers KV cache, layer by layer, or None for anything that is not one.

    A module's isolated replay in a decoding step needs the keys and values cached by earlier steps,
    so caches are recorded by content (`.../layers/3/keys`), not only described. `DynamicLayer.update`
    concatenates into new tensors each step, and the recorder stores each tensor once, so this costs
    one copy of each layer's cache per step.
    """
    cache_class = _cache_class()
    if cache_class is None or not isinstance(value, cache_class) or not hasattr(value, "layers"):
        return None
    layers = []
    for layer in value.layers:
        entry: dict[str, Any] = {"type": type(layer).__name__}
        for name in ("keys", "values"):
            tensor = getattr(layer, name, None)
            entry[name] = tensor if isinstance(tensor, torch.Tensor) else None
        for name in ("sliding_window", "cumulative_length", "max_cache_len"):
            if isinstance(getattr(layer, name, None), int):
                entry[name] = getattr(layer, name)
        layers.append(entry)
    return {"layers": layers}


def _is_tensor(value: Any) -> bool:
    return isinstance(value, (torch.Tensor, np.ndarray))


def build_spec(value: Any, role: str, visit: Callable[[str, Any, str], None], top: bool = False) -> dict[str, Any]:
    """`store.tree.build_spec` for torch structures: tensors are torch or numpy, KV caches are
    flattened to their tensors (see `cache_contents`), other objects are described."""
    return tree.build_spec(value, role, visit, top, is_tensor=_is_tensor, expand=cache_contents)


def flatten(value: Any, role: str, top: bool = False) -> dict[str, Any]:
    """{role: leaf} of a structure, named exactly as the recorder names them."""
    return tree.flatten(value, role, top, is_tensor=_is_tensor, expand=cache_contents)


@dataclass
class _Frame:
    key: str
    module_path: str
    method: str
    class_name: str
    call: int
    seq_start: int
    spec: dict[str, Any]
    snapshot: Any = None


class Hooks(AbstractContextManager[Any]):
    """Forward pre/post hooks on every module of `roots` (matching `include`), and wrappers around the
    listed methods and functions, calling `_begin` before and `_end` after each call.

    roots: {path prefix: module}; a prefix "" keeps the module's own `named_modules()` paths.
    include: glob patterns over module keys; None hooks everything.
    exclude: glob patterns over module keys never hooked, even when included (one side of a root).
    """

    def __init__(
        self,
        roots: Mapping[str, torch.nn.Module],
        *,
        include: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        methods: Iterable[MethodSpec] = (),
        functions: Iterable[FunctionSpec] = (),
    ) -> None:
        self.roots = dict(roots)
        self.include = list(include) if include else None
        self.exclude = list(exclude) if exclude else []
        self.methods = list(methods)
        self.functions = list(functions)
        self._handles: list[Any] = []
        self._wrapped: list[tuple[Any, str, Any, bool]] = []
        self._keys: dict[int, tuple[str, str]] = {}
        self.suspended = False

    def _begin(self, token: int, key: str, path: str, method: str, class_name: str,
               args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:  # fmt: skip
        raise NotImplementedError

    def _end(self, token: int, output: Any) -> None:
        raise NotImplementedError

    # -- naming ----------------------------------------------------------------------------------------
    @staticmethod
    def _join(prefix: str, name: str) -> str:
        return ".".join(p for p in (prefix, name) if p)

    def wanted(self, key: str) -> bool:
        if any(fnmatch.fnmatchcase(key, pattern) for pattern in self.exclude):
            return False
        return self.include is None or any(fnmatch.fnmatchcase(key, pattern) for pattern in self.include)

    def module_keys(self) -> dict[str, torch.nn.Module]:
        out: dict[str, torch.nn.Module] = {}
        for prefix, root in self.roots.items():
            for name, module in root.named_modules():
                path = self._join(prefix, name)
                out.setdefault(path or ROOT_KEY, module)
        return out

    # -- install / remove ------------------------------------------------------------------------------
    def __enter__(self) -> Any:
        for key, module in self.module_keys().items():
            if id(module) in self._keys or not self.wanted(key):
                continue
            path = "" if key == ROOT_KEY else key
            self._keys[id(module)] = (key, path)
            self._handles.append(module.register_forward_pre_hook(self._pre_hook, with_kwargs=True))
            self._handles.append(module.register_forward_hook(self._post_hook, with_kwargs=True))
        for spec in self.methods:
            if not self.wanted(spec.key):
                continue
            owner = self._resolve(spec.module_path)
            if owner is None or not hasattr(owner, spec.method):
                continue
            original = getattr(owner, spec.method)
            had_instance_attr = spec.method in vars(owner)
            setattr(owner, spec.method, self._wrap(original, spec.key, spec.module_path, spec.method, owner))
            self._wrapped.append((owner, spec.method, original, had_instance_attr))
        for fspec in self.functions:
            if not self.wanted(fspec.key):
                continue
            original = getattr(fspec.namespace, fspec.name)
            setattr(fspec.namespace, fspec.name, self._wrap(original, fspec.key, "", fspec.name, None))
            self._wrapped.append((fspec.namespace, fspec.name, original, True))
        return self

    def __exit__(self, *exc: Any) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for owner, name, original, had_instance_attr in reversed(self._wrapped):
            if had_instance_attr:
                setattr(owner, name, original)
            else:
                delattr(owner, name)  # the class attribute shows through again
        self._wrapped.clear()

    def _resolve(self, module_path: str) -> Any:
        for prefix, root in self.roots.items():
            if module_path == prefix:
                return root
            if prefix == "" or module_path.startswith(prefix + "."):
                rest = module_path[len(prefix) + 1 :] if prefix else module_path
                try:
                    return root.get_submodule(rest) if rest else root
                except AttributeError:
                    continue
        return None

    # -- hooks ---------------------------------------------------------------------------------------------
    def _pre_hook(self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if self.suspended:
            return
        key, path = self._keys[id(module)]
        self._begin(id(module), key, path, "forward", type(module).__qualname__, args, kwargs)

    def _post_hook(self, module: torch.nn.Module, args: Any, kwargs: Any, output: Any) -> None:
        if self.suspended:
            return
        self._end(id(module), output)

    def _wrap(self, original: Callable[..., Any], key: str, path: str, method: str, owner: Any) -> Callable[..., Any]:
        token = id(original) ^ hash(key)
        class_name = type(owner).__qualname__ if owner is not None else "function"

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if self.suspended:
                return original(*args, **kwargs)
            self._begin(token, key, path, method, class_name, args, kwargs)
            output = original(*args, **kwargs)
            self._end(token, output)
            return output

        wrapper.__wrapped__ = original  # type: ignore[attr-defined]
        wrapper._conformance_wrapper = True  # type: ignore[attr-defined]
        return wrapper


class Recorder(Hooks):
    """Records every call of the hooked modules of `roots` into one case of a golden store.

    oracle: an object with `wants(key)`, `snapshot(key, args, kwargs)` and `measure(key, snapshot,
        outputs) -> [(role, status, metrics, mode)]`, called around each call (see capture/oracle.py).
    """

    def __init__(
        self,
        case: CaseWriter,
        roots: Mapping[str, torch.nn.Module],
        *,
        include: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        methods: Iterable[MethodSpec] = (),
        functions: Iterable[FunctionSpec] = (),
        oracle: Any = None,
        on_call: Callable[[str], None] | None = None,
        keep_checksums: bool = False,
    ) -> None:
        super().__init__(roots, include=include, exclude=exclude, methods=methods, functions=functions)
        self.case = case
        self.oracle = oracle
        self.on_call = on_call
        # where each recorded tensor leaf went, for `checksums()` (a second run is compared with the recording)
        self._targets: dict[tuple[str, int, str], Any] | None = {} if keep_checksums else None
        self._stacks: dict[int, list[_Frame]] = {}
        self._known: dict[int, tuple[weakref.ref[Any], Any, int | None, tuple[int, ...], str]] = {}
        self._cache_memo: dict[tuple[Any, ...], tuple[Any, dict[str, Any]]] = {}
        self.calls_recorded = 0

    def __enter__(self) -> Recorder:
        super().__enter__()
        return self

    def _begin(self, token: int, key: str, path: str, method: str, class_name: str,
               args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:  # fmt: skip
        case = self.case
        call = case.next_call_index(key)
        frame = _Frame(key, path, method, class_name, call, case.next_seq(), {})
        frame.spec["args"] = self._record(args, "args", key, call)
        frame.spec["kwargs"] = self._record(dict(kwargs), "kwargs", key, call)
        if self.oracle is not None and self.oracle.wants(key, call):
            frame.snapshot = self.oracle.snapshot(key, args, kwargs)
        self._stacks.setdefault(token, []).append(frame)

    def _end(self, token: int, output: Any) -> None:
        frame = self._stacks[token].pop()
        frame.spec["outputs"] = self._record(output, "outputs", frame.key, frame.call, top=True)
        seq_end = self.case.next_seq()
        self.case.add_call(frame.key, frame.module_path, frame.method, frame.class_name, frame.call,
                           frame.seq_start, seq_end, frame.spec)  # fmt: skip
        if frame.snapshot is not None:
            # The oracle re-runs the call on the float64 twin; module-level functions are shared with the
            # recorded model, so recording pauses meanwhile.
            self.suspended = True
            try:
                measured = self.oracle.measure(frame.key, frame.snapshot, output)
            finally:
                self.suspended = False
            for role, status, metrics, mode in measured:
                self.case.add_oracle(frame.key, frame.call, role, mode, status, metrics)
            frame.snapshot = None
        self.calls_recorded += 1
        if self.on_call is not None:
            self.on_call(frame.key)

    # -- flattening --------------------------------------------------------------------------------------
    def _record(self, value: Any, role: str, key: str, call: int, top: bool = False) -> dict[str, Any]:
        def visit(leaf_role: str, leaf: Any, kind: str) -> None:
            if kind == "tensor":
                self._record_tensor(leaf, leaf_role, key, call)
            elif kind == "json":
                self.case.add_value(key, call, leaf_role, "json", leaf)
            else:
                self._record_value(leaf, leaf_role, key, call)

        def alias(item: Any, path: str) -> dict[str, Any] | None:
            return self._cache_alias(item, path, key, call, visit)

        return tree.build_spec(value, role, visit, top, is_tensor=_is_tensor, expand=cache_contents, alias=alias)

    def _cache_alias(self, item: Any, path: str, key: str, call: int, visit: Any) -> dict[str, Any] | None:
        """Large KV caches are not flattened again layer by layer: every decoder layer receives the whole
        cache, which would cost layers x layers rows per generated token. A cache layer whose tensors are
        the ones an earlier call recorded reuses that call's structure, its leaves marked with where
        they live (`"from": [key, call]`); only layers that changed are recorded here."""
        contents = cache_contents(item)
        if contents is None:
            return None
        tensors = [t for layer in contents["layers"] for t in (layer["keys"], layer["values"]) if t is not None]
        if sum(t.numel() * t.element_size() for t in tensors) < CACHE_ALIAS_BYTES:
            return None
        layers = []
        for index, layer in enumerate(contents["layers"]):
            state = tuple((id(t), _version(t)) if t is not None else None for t in (layer["keys"], layer["values"]))
            memo = self._cache_memo.get(state)
            if memo is not None and memo[0] is layer["keys"]:
                layers.append(memo[1])
                continue
            node = tree.build_spec(layer, f"{path}/layers/{index}", visit, is_tensor=_is_tensor)
            self._cache_memo[state] = (layer["keys"], _mark_from(node, key, call))
            layers.append(node)
        return {"dict": {"layers": {"list": layers}}, "type": type(item).__qualname__}

    def _record_value(self, value: Any, role: str, key: str, call: int) -> None:
        if value is None:
            self.case.add_value(key, call, role, "none", None)
        elif isinstance(value, bool):
            self.case.add_value(key, call, role, "bool", value)
        elif isinstance(value, (int, np.integer)):
            self.case.add_value(key, call, role, "int", int(value))
        elif isinstance(value, (float, np.floating)):
            number = float(value)
            self.case.add_value(key, call, role, "float", number if math.isfinite(number) else str(number))
        elif isinstance(value, str):
            self.case.add_value(key, call, role, "str", value)
        elif isinstance(value, torch.dtype):
            self.case.add_value(key, call, role, "dtype", str(value).replace("torch.", ""))
        elif isinstance(value, torch.device):
            self.case.add_value(key, call, role, "device", str(value))
        else:
            self.case.add_value(key, call, role, "object", describe_object(value))

    def _record_tensor(self, value: torch.Tensor | np.ndarray, role: str, key: str, call: int) -> None:
        known = self._known.get(id(value))
        if known is not None:
            # Most inputs are an earlier call's outputs (and KV caches repeat in every layer's kwargs):
            # recognise them before any conversion, which costs more than the reference itself.
            ref, target, version, shape, dtype = known
            if ref() is value and tuple(value.shape) == shape and value.dtype == dtype:
                current = _version(value) if isinstance(value, torch.Tensor) else None
                if version is not None and current is not None:
                    unchanged = version == current
                else:  # no version counter: compare the bytes
                    unchanged = checksum(tensor_to_numpy(value)[0]) == self._written(target).crc32
                if unchanged:
                    self.case.add_reference(key, call, role, target)
                    if self._targets is not None:
                        self._targets[(key, call, role)] = target
                    return
        raw, logical = tensor_to_numpy(value)
        target = self.case.add_tensor(key, call, role, raw, logical)
        if self._targets is not None:
            self._targets[(key, call, role)] = target
        try:
            ref = weakref.ref(value)
        except TypeError:
            return
        version = _version(value) if isinstance(value, torch.Tensor) else None
        self._known[id(value)] = (ref, target, version, tuple(value.shape), value.dtype)

    def checksums(self) -> dict[tuple[str, int, str], Fingerprint]:
        """(key, call, role) -> (CRC-32, shape, dtype) of every tensor leaf recorded, in recording order (inputs
        when a call starts, outputs when it returns). Needs `keep_checksums=True`; waits for the writer."""
        if self._targets is None:
            raise RuntimeError("the recorder was not asked to keep checksums (keep_checksums=True)")
        out = {}
        for index, target in self._targets.items():
            record = self._written(target)
            out[index] = (int(record.crc32), tuple(record.shape), record.dtype)
        return out

    def _written(self, target: Any) -> LeafRecord:
        """The written record behind a background writer's handle (waits for the writer if needed)."""
        if isinstance(target, TensorHandle):
            if target.record is None:
                self.case.flush()
            assert target.record is not None
            return target.record
        return target


class _GradFreeMode:
    """Stands in for torch's inference mode while recording: no autograd (like inference mode), but
    tensors keep their version counters, so a tensor passed from module to module is known unchanged
    without hashing its bytes. Only autograd bookkeeping differs; every computed value is the same."""

    def __init__(self, mode: bool = True) -> None:
        self.mode = mode
        self._previous = True

    def __enter__(self) -> None:
        self._previous = torch.is_grad_enabled()
        if self.mode:
            torch.set_grad_enabled(False)

    def __exit__(self, *exc: Any) -> None:
        torch.set_grad_enabled(self._previous)


@contextlib.contextmanager
def versioned_tensors() -> Iterator[None]:
    """Within this block `torch.inference_mode()` behaves like `torch.no_grad()` (see _GradFreeMode)."""
    original = torch._C._InferenceMode
    torch._C._InferenceMode = _GradFreeMode  # type: ignore[attr-defined,misc]
    try:
        yield
    finally:
        torch._C._InferenceMode = original  # type: ignore[attr-defined,misc]


def to_numpy_tree(value: Any) -> Any:
    """A structure with torch tensors as numpy arrays (bfloat16 widened exactly to float32), KV caches as
    their layer dicts and model outputs as plain dicts: what a numpy-only checker can compare."""
    cache = cache_contents(value)
    if cache is not None:
        return to_numpy_tree(cache)
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu()
        return t.float().numpy() if t.dtype == torch.bfloat16 else t.resolve_conj().numpy()
    if isinstance(value, Mapping):
        return {k: to_numpy_tree(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(to_numpy_tree(v) for v in value)
    if isinstance(value, list):
        return [to_numpy_tree(v) for v in value]
    return value


class TorchTap(Hooks):
    """Reports every call of a torch model to a checker's sink as numpy structures, as it happens:
    `sink(key, "call", args, kwargs, None)` before and `sink(key, "return", args, kwargs, outputs)` after.
    Nothing is stored; the official model becomes a chained candidate like any other."""

    def __init__(self, roots: Mapping[str, torch.nn.Module], sink: Callable[[str, str, tuple, dict, Any], None],
                 **kwargs: Any) -> None:  # fmt: skip
        super().__init__(roots, **kwargs)
        self.sink = sink
        self._stacks: dict[int, list[str]] = {}

    def _begin(self, token: int, key: str, path: str, method: str, class_name: str,
               args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:  # fmt: skip
        self._stacks.setdefault(token, []).append(key)
        self.sink(key, "call", to_numpy_tree(tuple(args)), to_numpy_tree(dict(kwargs)), None)

    def _end(self, token: int, output: Any) -> None:
        key = self._stacks[token].pop()
        self.sink(key, "return", (), {}, to_numpy_tree(output))


class ChecksumTap(Hooks):
    """Fingerprints every tensor leaf of every call, named and encoded as the Recorder stores them (raw bytes,
    bfloat16 as its bits), and keeps nothing else: a second run of a recorded case is compared bit for bit with
    the recording (`Recorder.checksums()`) at the cost of hashing, not storing. A tensor handed on unchanged
    (same object, same version) is hashed once, as the Recorder stores it once."""

    def __init__(self, roots: Mapping[str, torch.nn.Module], **kwargs: Any) -> None:
        super().__init__(roots, **kwargs)
        self.prints: dict[tuple[str, int, str], Fingerprint] = {}
        self.calls: list[tuple[str, int]] = []  # in completion order
        self._counts: dict[str, int] = {}
        self._stacks: dict[int, list[tuple[str, int]]] = {}
        self._known: dict[int, tuple[weakref.ref[Any], int, Fingerprint]] = {}

    def _begin(self, token: int, key: str, path: str, method: str, class_name: str,
               args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:  # fmt: skip
        call = self._counts.get(key, 0)
        self._counts[key] = call + 1
        self._stacks.setdefault(token, []).append((key, call))
        self._visit(args, "args", key, call)
        self._visit(dict(kwargs), "kwargs", key, call)

    def _end(self, token: int, output: Any) -> None:
        key, call = self._stacks[token].pop()
        self._visit(output, "outputs", key, call, top=True)
        self.calls.append((key, call))

    def _visit(self, value: Any, role: str, key: str, call: int, top: bool = False) -> None:
        for leaf_role, leaf in flatten(value, role, top).items():
            if _is_tensor(leaf):
                self.prints[(key, call, leaf_role)] = self._fingerprint(leaf)

    def _fingerprint(self, value: torch.Tensor | np.ndarray) -> Fingerprint:
        version = _version(value) if isinstance(value, torch.Tensor) else None
        known = self._known.get(id(value))
        if known is not None and version is not None and known[0]() is value and known[1] == version:
            return known[2]
        raw, logical = tensor_to_numpy(value)
        found: Fingerprint = (checksum(raw), tuple(int(d) for d in raw.shape), logical or raw.dtype.name)
        if version is not None:
            with contextlib.suppress(TypeError):
                self._known[id(value)] = (weakref.ref(value), version, found)
        return found
