"""The smallest module tree that lets a checker see inside a NumPy implementation.

Every component is a `Module` whose `path` is the official module path (`talker.model.layers.3.mlp`),
so an implementation needs no name mapping: a checker can call any component on its own (isolated
checks) and, while a tap is installed, sees every call of every component with its inputs and outputs
(chained checks). Methods other than `__call__` that compute a component (a quantizer's `decode`, a
model's `generate`) are marked with `@tapped` and reported as `<path>:<method>`; module-level functions
of the official code with `@tapped_function(name)`, reported as `:<name>`.

A module lists the checkpoint tensors it owns in `params` (official names: `weight`, `bias`, ...) and
their shapes in `param_shapes()`; `impl.common.weights.load_weights` fills them. There is no global
state except the explicit tap installed by `tapping()`.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any

# A tap receives (key, phase, args, kwargs, outputs) with phase "call" (before) and "return" (after).
Tap = Callable[[str, str, tuple, dict, Any], None]
_taps: list[Tap] = []


@contextlib.contextmanager
def tapping(tap: Tap) -> Iterator[None]:
    """Report every module call to `tap` within this block."""
    _taps.append(tap)
    try:
        yield
    finally:
        _taps.pop()


def _run(key: str, function: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
    """Call `function`, reporting the call and its outputs to the tap installed, if any."""
    if not _taps:
        return function(*args, **kwargs)
    _taps[-1](key, "call", args, kwargs, None)
    outputs = function(*args, **kwargs)
    _taps[-1](key, "return", args, kwargs, outputs)
    return outputs


class Module:
    """A component at an official module path (torch.nn.Module's role). Subclasses implement `forward`."""

    path: str = ""
    params: tuple[str, ...] = ()  # the checkpoint tensors this module owns, by official name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return _run(self.path or "(root)", self.forward, args, kwargs)

    def forward(self, *args: Any, **kwargs: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """The shapes the official module gives its parameters, from its config. The loader refuses a
        checkpoint tensor of another shape: a (1,) norm weight would otherwise broadcast silently."""
        return {}

    def children(self) -> Iterator[tuple[str, Module]]:
        for name, value in vars(self).items():
            if isinstance(value, Module):
                yield name, value
            elif isinstance(value, (list, tuple)) and value and all(isinstance(v, Module) for v in value):
                for i, item in enumerate(value):
                    yield f"{name}.{i}", item

    def bind(self, path: str = "") -> Module:
        """Give this module and all below it their official paths (call once on the root)."""
        self.path = path
        for name, child in self.children():
            child.bind(f"{path}.{name}" if path else name)
        return self

    def named_modules(self) -> Iterator[tuple[str, Module]]:
        yield self.path, self
        for _, child in self.children():
            yield from child.named_modules()

    def get(self, path: str) -> Module:
        """The submodule at an official path relative to this module (`layers.3.mlp`)."""
        module: Any = self
        for part in path.split(".") if path else []:
            module = module[int(part)] if isinstance(module, (list, tuple)) else getattr(module, part)
        if not isinstance(module, Module):
            raise AttributeError(f"{path!r} is not a module")
        return module


class ModuleList(list, Module):  # type: ignore[misc]
    """nn.ModuleList, for nested lists (a plain list of modules is enough otherwise): indexable, its
    items get paths `<name>.<i>`. Never called itself."""

    def __init__(self, items: Any = ()) -> None:
        list.__init__(self, items)

    def children(self) -> Iterator[tuple[str, Module]]:
        for i, item in enumerate(self):
            yield str(i), item

    __hash__ = object.__hash__  # type: ignore[assignment]


def tapped(method: Callable[..., Any]) -> Callable[..., Any]:
    """Report calls of a non-forward method as `<path>:<method name>`."""

    @functools.wraps(method)
    def wrapper(self: Module, *args: Any, **kwargs: Any) -> Any:
        return _run(f"{self.path}:{method.__name__}", functools.partial(method, self), args, kwargs)

    return wrapper


def tapped_function(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Report calls of a free function as `:<name>` (the official code's module-level functions)."""

    def decorate(function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return _run(f":{name}", function, args, kwargs)

        return wrapper

    return decorate
