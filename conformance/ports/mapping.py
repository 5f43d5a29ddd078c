"""A port's name and layout map (TOML): how the tensors of its dump become golden tensors (numpy only).

    format = 1                                  # optional; the only version
    case = "decode_short"                       # optional: the case the dump holds
    export_dir = "golden-export"                # optional: where `conformance export` wrote (relative to this file)

    [names]                                     # explicit table: dump name = golden name
    "wave" = "vocoder:decode#0/outputs/audio_values/0"

    [tables.stage]                              # lookup tables for templates: {1:stage}
    "first" = "0"

    [[rename]]                                  # regex over the whole dump name, groups used in `to`
    match = 'dec\\.stages\\.(\\d+)\\.out\\[(\\d+)\\]'
    to = "vocoder.decoder.blocks.{1+1}#{2}/outputs/0"
    layout = "NLC->NCL"                         # or permute = [0, 2, 1]

    [[rename]]                                  # a fused projection split into three golden tensors
    match = 'dec\\.xf\\.(\\d+)\\.qkv\\[(\\d+)\\]'
    to = ["...q_proj#{2}/outputs/0", "...k_proj#{2}/outputs/0", "...v_proj#{2}/outputs/0"]
    split = -1                                  # axis (of the golden layout); equal parts unless split_sizes

    [[rename]]                                  # the port dumps the last position's logits only, as float32 ids
    match = 'head\\.logits'
    to = "model.lm_head#0/outputs/0"
    slice = "[:, -1:, :]"                       # the golden side is sliced: compared with golden[:, -1:, :]
    dtype = "float32"                           # a cast of the dump tensor (dtype = "int64" for ids dumped as floats)

    [[ignore]]
    match = 'debug\\..*'
    reason = "scratch buffers of the port"      # mandatory

Routing of one dump name: the `[names]` table, then `[[ignore]]` rules, then `[[rename]]` rules in file
order (the first match wins), then the name itself if it is already a golden name (`key#call/role`).
A rename rule may use `names = {dump = golden, ...}` instead of `match`/`to` to give a table its
transforms. Transforms run in this order: permute (or layout), split, reshape, dtype. `slice` selects the part of
the golden tensor the dump holds (numpy basic indexing: integers, `start:stop:step`, one `...`): the dump tensor,
after its transforms, is compared with `golden[slice]`, under the golden tensor's own thresholds, and the verdict
notes the slice. A slice that is not such an index is an error naming the map and the rule.

Templates: `{N}` or `{name}` is a regex group, `{N+1}` (also -, *, //, %, parentheses) is integer
arithmetic on it, `{N:table}` looks the group up in `[tables.table]`, `{0}` is the whole name.

A rule (rename or ignore) whose regex or table matches no tensor of the dump is an error unless it has
`optional = true`; two dump tensors mapped onto one golden tensor are an error.

Python candidates (`--candidate impl`, `official`, a fork) are called module by module rather than read from
a dump; two more sections map their names (dumps ignore them, and the sections above mean nothing to them):

    [modules]                                   # golden module key = the candidate's module path
    "model.rotary_emb" = "model.rope"           # moves the module and everything below it
    "vocoder.decoder:chunked_decode" = "vocoder.decoder:decode_chunks"   # a method

    [[kwargs]]                                  # keyword arguments the candidate's modules take under other names
    modules = "model.layers.*.self_attn"        # glob (or list of globs) over golden module keys
    names = { position_ids = "pos_ids" }        # golden keyword = candidate keyword

Isolated replay calls the candidate's module at the mapped path with the renamed keywords; in chained runs
the candidate's own module paths and keywords are translated back to the golden's. A `[modules]` key or a
`[[kwargs]]` glob that names no module of the golden store is an error, as are two golden modules mapped to
one candidate path and two golden keywords renamed to one.
"""

from __future__ import annotations

import ast
import fnmatch
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MappingError
from ..store.schema import split_name
from .formats import SUPPORTED_DTYPES

_TOP_KEYS = {"format", "case", "export_dir", "names", "tables", "rename", "ignore", "modules", "kwargs", "profile"}
CASE_OUTPUTS = "case#0/"  # a case's final outputs are the golden tensors case#0/outputs/<name> ("outputs/<name>" too)
_KWARGS_KEYS = {"modules", "names"}
_MODULE_PATH = re.compile(r"^\w+(\.\w+)*$")  # model.layers.0.self_attn
_METHOD_KEY = re.compile(r"^(\w+(\.\w+)*)?:\w+$")  # vocoder.decoder:chunked_decode, :generate
_RENAME_KEYS = {"match", "to", "names", "permute", "layout", "split", "split_sizes", "reshape", "dtype", "slice",
                "optional", "note"}  # fmt: skip
_IGNORE_KEYS = {"match", "names", "reason", "optional"}
_TEMPLATE = re.compile(r"\{([^{}]*)\}")
_REF = re.compile(r"^\s*(\d+|[A-Za-z_]\w*)")


class ShapeError(ValueError):
    """A transform cannot apply to a tensor of this shape."""


# -- transforms -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Transform:
    """permute -> split -> reshape -> dtype, applied to one dump tensor to give (one part of) a golden tensor."""

    permute: tuple[int, ...] | None = None
    split_axis: int | None = None
    split_sizes: tuple[int, ...] | None = None
    parts: int = 1
    reshape: tuple[int, ...] | None = None
    dtype: str | None = None
    layout: str | None = None
    golden_index: tuple[Any, ...] | None = None  # the part of the golden tensor the dump holds (`slice`)
    golden_slice: str | None = None  # that selection as the map writes it

    @property
    def identity(self) -> bool:
        return (self.permute is None and self.split_axis is None and self.reshape is None and self.dtype is None
                and self.golden_index is None)  # fmt: skip

    def golden_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The shape of the part of a golden tensor of `shape` this transform's dump tensor stands for (the whole
        tensor without a slice); raises ShapeError when the slice does not apply to it."""
        if self.golden_index is None:
            return tuple(shape)
        try:
            view = np.broadcast_to(np.empty((), dtype=np.bool_), tuple(shape))[self.golden_index]  # no memory
        except IndexError as exc:
            raise ShapeError(
                f"slice {self.golden_slice} does not apply to a tensor of shape {list(shape)}: {exc}"
            ) from None
        if view.size == 0:
            raise ShapeError(f"slice {self.golden_slice} selects nothing of a tensor of shape {list(shape)}")
        return tuple(view.shape)

    def describe(self) -> str:
        steps = []
        if self.permute is not None:
            steps.append(f"layout {self.layout}" if self.layout else f"permute {list(self.permute)}")
        if self.split_axis is not None:
            sizes = f" sizes {list(self.split_sizes)}" if self.split_sizes else ""
            steps.append(f"split axis {self.split_axis} into {self.parts}{sizes}")
        if self.reshape is not None:
            steps.append(f"reshape {list(self.reshape)}")
        if self.dtype is not None:
            steps.append(f"dtype {self.dtype}")
        if self.golden_slice is not None:
            steps.append(f"against golden{self.golden_slice}")
        return ", ".join(steps) or "none"

    def _split_bounds(self, shape: tuple[int, ...], part: int) -> tuple[int, int, int]:
        """(axis, start, stop) of `part` along the split axis."""
        assert self.split_axis is not None
        axis = self.split_axis + len(shape) if self.split_axis < 0 else self.split_axis
        if not 0 <= axis < len(shape):
            raise ShapeError(f"split axis {self.split_axis} does not exist in a tensor of rank {len(shape)}")
        size = shape[axis]
        if self.split_sizes is not None:
            if sum(self.split_sizes) != size:
                raise ShapeError(f"split_sizes {list(self.split_sizes)} add up to {sum(self.split_sizes)}, axis "
                                 f"{self.split_axis} has {size}")  # fmt: skip
            start = sum(self.split_sizes[:part])
            return axis, start, start + self.split_sizes[part]
        if size % self.parts:
            raise ShapeError(f"axis {self.split_axis} of size {size} does not split into {self.parts} equal parts")
        step = size // self.parts
        return axis, part * step, (part + 1) * step

    def shape_of(self, shape: tuple[int, ...], part: int = 0) -> tuple[int, ...]:
        """The shape this transform gives a tensor of `shape` (raises ShapeError when it cannot apply)."""
        shape = tuple(shape)
        if self.permute is not None:
            if len(self.permute) != len(shape):
                raise ShapeError(
                    f"{self.describe()} needs rank {len(self.permute)}, the tensor has shape {list(shape)}"
                )
            shape = tuple(shape[i] for i in self.permute)
        if self.split_axis is not None:
            axis, start, stop = self._split_bounds(shape, part)
            shape = (*shape[:axis], stop - start, *shape[axis + 1 :])
        if self.reshape is not None:
            shape = _reshaped(shape, self.reshape)
        return shape

    def apply(self, array: np.ndarray, part: int = 0) -> np.ndarray:
        if self.permute is not None:
            array = np.transpose(array, self.permute)
        if self.split_axis is not None:
            axis, start, stop = self._split_bounds(tuple(array.shape), part)
            index = [slice(None)] * array.ndim
            index[axis] = slice(start, stop)
            array = array[tuple(index)]
        if self.reshape is not None:
            array = np.reshape(array, _reshaped(tuple(array.shape), self.reshape))
        if self.dtype is not None:
            array = array.astype(self.dtype)
        return array

    def dtype_of(self, dtype: str) -> str:
        return self.dtype or dtype


def _reshaped(shape: tuple[int, ...], target: tuple[int, ...]) -> tuple[int, ...]:
    numel = int(np.prod(shape, dtype=np.int64))
    known = int(np.prod([d for d in target if d != -1], dtype=np.int64))
    if -1 in target:
        if known == 0 or numel % known:
            raise ShapeError(f"cannot reshape {list(shape)} ({numel} elements) to {list(target)}")
        return tuple(numel // known if d == -1 else d for d in target)
    if known != numel:
        raise ShapeError(f"cannot reshape {list(shape)} ({numel} elements) to {list(target)}")
    return tuple(target)


def layout_permutation(spec: str) -> tuple[int, ...]:
    """ "NLC->NCL" -> (0, 2, 1): the axes of the source to take, in the order of the target."""
    source, arrow, target = spec.replace(" ", "").partition("->")
    if not arrow or not source or not target:
        raise ValueError(f"layout must look like 'NLC->NCL', not {spec!r}")
    if len(set(source)) != len(source) or sorted(source) != sorted(target):
        raise ValueError(f"layout {spec!r}: both sides must name the same distinct axes")
    return tuple(source.index(axis) for axis in target)


# -- templates ------------------------------------------------------------------------------------------


_ALLOWED_NODES = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Constant, ast.Name, ast.Load, ast.Add, ast.Sub,
                  ast.Mult, ast.FloorDiv, ast.Mod, ast.USub, ast.UAdd)  # fmt: skip


def _evaluate(node: ast.AST, value: int) -> int:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body, value)
    if isinstance(node, ast.Constant) and isinstance(node.value, int):
        return node.value
    if isinstance(node, ast.Name):
        return value
    if isinstance(node, ast.UnaryOp):
        inner = _evaluate(node.operand, value)
        return -inner if isinstance(node.op, ast.USub) else inner
    if isinstance(node, ast.BinOp):
        left, right = _evaluate(node.left, value), _evaluate(node.right, value)
        if isinstance(node.op, ast.Add):
            return left + right
        if isinstance(node.op, ast.Sub):
            return left - right
        if isinstance(node.op, ast.Mult):
            return left * right
        if right == 0:
            raise ZeroDivisionError("division by zero")
        return left // right if isinstance(node.op, ast.FloorDiv) else left % right
    raise ValueError(f"unsupported expression {ast.dump(node)}")


@dataclass(frozen=True)
class _Field:
    """One `{...}` of a template: a group, with arithmetic or a table lookup."""

    text: str
    group: int | str
    expression: ast.Expression | None = None
    table: str | None = None


@dataclass(frozen=True)
class Template:
    text: str
    pieces: tuple[str | _Field, ...]

    def render(self, match: re.Match[str], tables: dict[str, dict[str, str]], where: str) -> str:
        out = []
        for piece in self.pieces:
            if isinstance(piece, str):
                out.append(piece)
                continue
            value = match.group(piece.group)
            if value is None:
                raise MappingError(f"{where}: group {piece.group} of {{{piece.text}}} did not take part in the match "
                                   f"of {match.string!r}")  # fmt: skip
            if piece.table is not None:
                table = tables[piece.table]
                if value not in table:
                    raise MappingError(f"{where}: {value!r} (from {match.string!r}) is not in [tables.{piece.table}]")
                out.append(table[value])
            elif piece.expression is not None:
                try:
                    number = int(value)
                except ValueError:
                    raise MappingError(f"{where}: group {piece.group} of {match.string!r} is {value!r}, not an integer, "
                                       f"in {{{piece.text}}}") from None  # fmt: skip
                try:
                    out.append(str(_evaluate(piece.expression, number)))
                except ZeroDivisionError:
                    raise MappingError(f"{where}: {{{piece.text}}} divides by zero") from None
            else:
                out.append(value)
        return "".join(out)


def compile_template(text: str, pattern: re.Pattern[str] | None, tables: dict[str, dict[str, str]],
                     where: str) -> Template:  # fmt: skip
    pieces: list[str | _Field] = []
    position = 0
    for found in _TEMPLATE.finditer(text):
        pieces.append(text[position : found.start()])
        position = found.end()
        inner = found.group(1)
        ref = _REF.match(inner)
        if ref is None:
            raise MappingError(f"{where}: {{{inner}}} in {text!r} does not start with a group (a number or a name)")
        name = ref.group(1)
        group: int | str = int(name) if name.isdigit() else name
        groups = pattern.groups if pattern is not None else 0
        names = pattern.groupindex if pattern is not None else {}
        if isinstance(group, int) and group > groups:
            raise MappingError(f"{where}: {{{inner}}} refers to group {group} but the regex has {groups} group(s)")
        if isinstance(group, str) and group not in names:
            raise MappingError(f"{where}: {{{inner}}} refers to no named group of the regex")
        rest = inner[ref.end() :].strip()
        if not rest:
            pieces.append(_Field(inner, group))
        elif rest.startswith(":"):
            table = rest[1:].strip()
            if table not in tables:
                raise MappingError(f"{where}: {{{inner}}} looks up [tables.{table}], which the map does not define")
            pieces.append(_Field(inner, group, table=table))
        else:
            try:
                tree = ast.parse("g " + rest, mode="eval")
            except SyntaxError:
                raise MappingError(f"{where}: {{{inner}}} is not integer arithmetic like {{1+1}}") from None
            for node in ast.walk(tree):
                if not isinstance(node, _ALLOWED_NODES) or (isinstance(node, ast.Name) and node.id != "g") or (
                        isinstance(node, ast.Constant) and (isinstance(node.value, bool) or not isinstance(node.value, int))):  # fmt: skip
                    raise MappingError(f"{where}: {{{inner}}} may only use + - * // % and integers")
            pieces.append(_Field(inner, group, expression=tree))
    pieces.append(text[position:])
    if "{" in "".join(p for p in pieces if isinstance(p, str)) or "}" in "".join(
        p for p in pieces if isinstance(p, str)
    ):
        raise MappingError(f"{where}: unbalanced braces in {text!r}")
    return Template(text, tuple(p for p in pieces if p != ""))


# -- rules ----------------------------------------------------------------------------------------------


@dataclass
class Rule:
    """A rename rule (or the [names] table, or an ignore rule)."""

    label: str  # "rule 3 (match '...')", "[names]", "ignore 1 (...)"
    kind: str  # "rename" or "ignore"
    pattern: re.Pattern[str] | None = None
    names: dict[str, list[str]] | None = None  # explicit table: dump name -> golden names
    targets: tuple[Template, ...] = ()
    transform: Transform = field(default_factory=Transform)
    reason: str = ""
    optional: bool = False
    matched: int = 0

    def route(self, name: str, tables: dict[str, dict[str, str]]) -> list[str] | None:
        """The golden names of a dump name, or None when this rule does not take it."""
        if self.names is not None:
            return list(self.names[name]) if name in self.names else None
        assert self.pattern is not None
        found = self.pattern.fullmatch(name)
        if found is None:
            return None
        return [t.render(found, tables, self.label) for t in self.targets]


@dataclass
class Route:
    """Where one dump tensor goes."""

    name: str
    kind: str  # "mapped", "identity", "ignored", "unmatched"
    targets: list[str] = field(default_factory=list)
    transform: Transform = field(default_factory=Transform)
    rule: str = ""
    reason: str = ""


@dataclass(frozen=True)
class KwargsRule:
    """A [[kwargs]] entry: the modules (globs over golden keys) whose keywords the candidate names otherwise."""

    label: str
    globs: tuple[str, ...]
    names: dict[str, str]  # golden keyword -> candidate keyword

    def applies(self, key: str) -> bool:
        return any(fnmatch.fnmatchcase(key, glob) for glob in self.globs)


@dataclass
class Mapping:
    path: Path | None = None
    case: str | None = None
    export_dir: Path | None = None
    rules: list[Rule] = field(default_factory=list)  # [names] first, then ignore rules, then rename rules
    tables: dict[str, dict[str, str]] = field(default_factory=dict)
    modules: dict[str, str] = field(default_factory=dict)  # golden module key -> the candidate's (Python candidates)
    kwargs: list[KwargsRule] = field(default_factory=list)
    # [profile]: what the port supports, per case semantic (text_layout = ["non_streaming"], voice = [...])
    profile: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return str(self.path) if self.path else "<no map>"

    @property
    def renames_python_names(self) -> bool:
        """Whether the map has anything for a Python candidate ([modules] or [[kwargs]])."""
        return bool(self.modules or self.kwargs)

    def candidate_key(self, key: str) -> str:
        """The candidate's key of a golden module key ([modules]; a moved module moves what is below it)."""
        return _moved(key, self.modules)

    def golden_key(self, key: str) -> str:
        """The golden key of a module key the candidate reports (the reverse of `candidate_key`)."""
        return _moved(key, {target: source for source, target in self.modules.items()})

    def keyword_names(self, key: str) -> dict[str, str]:
        """golden keyword -> candidate keyword for the golden module `key` (the first rule naming a keyword wins)."""
        names: dict[str, str] = {}
        for rule in self.kwargs:
            if rule.applies(key):
                for golden, candidate in rule.names.items():
                    names.setdefault(golden, candidate)
        return names

    def candidate_kwargs(self, key: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        """The golden's keyword arguments of a call of `key`, under the names the candidate's module takes."""
        names = self.keyword_names(key)
        return {names.get(name, name): value for name, value in kwargs.items()} if names else kwargs

    def golden_kwargs(self, key: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        """A candidate's keyword arguments of a call of golden module `key`, under the golden's names."""
        names = {candidate: golden for golden, candidate in self.keyword_names(key).items()}
        return {names.get(name, name): value for name, value in kwargs.items()} if names else kwargs

    def check_python_names(self, golden_keys: set[str], where: Path | str) -> None:
        """A [modules] key or [[kwargs]] glob that names no module of the golden store is a mistake, not a no-op."""
        for source in self.modules:
            if not any(_is_under(key, source) for key in golden_keys):
                raise MappingError(f"[modules] maps {source!r}, which is no module of the golden store {where}",
                                   path=_where(self.path))  # fmt: skip
        for rule in self.kwargs:
            if not any(rule.applies(key) for key in golden_keys):
                raise MappingError(f"{rule.label}: modules {list(rule.globs)} match no module of the golden store "
                                   f"{where}", path=_where(self.path))  # fmt: skip

    def route(self, name: str) -> Route:
        for rule in self.rules:
            targets = rule.route(name, self.tables)
            if targets is None:
                continue
            rule.matched += 1
            if rule.kind == "ignore":
                return Route(name, "ignored", rule=rule.label, reason=rule.reason)
            return Route(name, "mapped", targets, rule.transform, rule.label)
        if name.startswith("outputs/") and len(name) > len("outputs/"):  # a case's final output
            return Route(name, "identity", [CASE_OUTPUTS + name], Transform(), "golden name")
        try:
            split_name(name)
        except ValueError:
            return Route(
                name, "unmatched", reason="no rule of the map takes it and it is not a golden name (key#call/role)"
            )
        return Route(name, "identity", [name], Transform(), "golden name")

    def route_all(self, names: list[str]) -> list[Route]:
        """Route every dump name; a non-optional rule that took nothing is an error."""
        for rule in self.rules:
            rule.matched = 0
        routes = []
        for name in names:
            try:
                routes.append(self.route(name))
            except MappingError as exc:  # a template that cannot render this name
                if exc.path is not None:
                    raise
                raise MappingError(exc.message, path=_where(self.path), tensor=name) from None
        present = set(names)
        for rule in self.rules:
            if rule.optional:
                continue
            if rule.names is not None:
                absent = [n for n in rule.names if n not in present]
                if absent:
                    raise MappingError(f"{rule.label} names {absent[0]!r}, which is not in the dump"
                                       + (f" (nor {len(absent) - 1} more)" if len(absent) > 1 else "")
                                       + (" (add optional = true if that is expected)" if rule.label != "[names]" else ""),
                                       path=_where(self.path))  # fmt: skip
            elif rule.matched == 0:
                raise MappingError(f"{rule.label} matches no tensor of the dump (add optional = true if that is "
                                   "expected)", path=_where(self.path))  # fmt: skip
        return routes


def _is_under(key: str, source: str) -> bool:
    """Whether [modules] entry `source` moves golden key `key` (the module itself, a submodule, a method)."""
    if ":" in source:
        return key == source
    path = key.partition(":")[0]
    return path == source or path.startswith(source + ".")


def _moved(key: str, table: dict[str, str]) -> str:
    """`key` after the moves in `table`: an exact entry (also `path:method`), else the longest module path that
    is `key`'s own path or one of its parents."""
    if key in table:
        return table[key]
    path, colon, method = key.partition(":")
    parts = path.split(".") if path else []
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if ":" not in prefix and prefix in table:
            return ".".join([table[prefix], *parts[end:]]) + colon + method
    return key


def _where(path: Path | None) -> Path | str:
    return path if path is not None else "<map>"


def _int_list(value: Any, what: str, path: Path | None, allow_minus_one: bool = False) -> tuple[int, ...]:
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        raise MappingError(f"{what} must be a non-empty list of integers, not {value!r}", path=_where(path))
    if not allow_minus_one and any(v < 0 for v in value):
        raise MappingError(f"{what} must not be negative: {value!r}", path=_where(path))
    if allow_minus_one and (any(v < -1 for v in value) or value.count(-1) > 1):
        raise MappingError(f"{what}: sizes must be >= 0 with at most one -1, not {value!r}", path=_where(path))
    return tuple(value)


def _transform(raw: dict[str, Any], label: str, parts: int, path: Path | None) -> Transform:
    permute = layout = None
    if "permute" in raw and "layout" in raw:
        raise MappingError(f"{label}: give permute or layout, not both", path=_where(path))
    if "permute" in raw:
        permute = _int_list(raw["permute"], f"{label}: permute", path)
        if sorted(permute) != list(range(len(permute))):
            raise MappingError(f"{label}: permute {list(permute)} is not a permutation of 0..{len(permute) - 1}",
                               path=_where(path))  # fmt: skip
    if "layout" in raw:
        if not isinstance(raw["layout"], str):
            raise MappingError(f"{label}: layout must be a string like 'NLC->NCL'", path=_where(path))
        try:
            permute = layout_permutation(raw["layout"])
        except ValueError as exc:
            raise MappingError(f"{label}: {exc}", path=_where(path)) from None
        layout = raw["layout"]
    split_axis = split_sizes = None
    if "split" in raw:
        if not isinstance(raw["split"], int) or isinstance(raw["split"], bool):
            raise MappingError(f"{label}: split must be an axis (an integer)", path=_where(path))
        split_axis = raw["split"]
        if parts < 2:
            raise MappingError(f"{label}: split needs a list of two or more targets in `to`", path=_where(path))
        if "split_sizes" in raw:
            split_sizes = _int_list(raw["split_sizes"], f"{label}: split_sizes", path)
            if len(split_sizes) != parts:
                raise MappingError(f"{label}: split_sizes has {len(split_sizes)} sizes for {parts} targets",
                                   path=_where(path))  # fmt: skip
    elif parts > 1:
        raise MappingError(f"{label}: {parts} targets need split = <axis>", path=_where(path))
    elif "split_sizes" in raw:
        raise MappingError(f"{label}: split_sizes without split", path=_where(path))
    reshape = _int_list(raw["reshape"], f"{label}: reshape", path, allow_minus_one=True) if "reshape" in raw else None
    dtype = raw.get("dtype")
    if dtype is not None and dtype not in SUPPORTED_DTYPES:
        raise MappingError(f"{label}: dtype {dtype!r} is not one of {', '.join(SUPPORTED_DTYPES)}", path=_where(path))
    if dtype == "bfloat16":
        raise MappingError(
            f"{label}: cannot cast to bfloat16 (numpy has no such dtype); cast to float32", path=_where(path)
        )
    index, text = _golden_slice(raw["slice"], label, path) if "slice" in raw else (None, None)
    return Transform(permute, split_axis, split_sizes, parts if split_axis is not None else 1, reshape, dtype, layout,
                     index, text)  # fmt: skip


_SLICE_ITEM = re.compile(r"^(-?\d+)?(?::(-?\d+)?(?::(-?\d+)?)?)?$")


def _golden_slice(raw: Any, label: str, path: Path | None) -> tuple[tuple[Any, ...], str]:
    """ "[:, -1:, :]" -> (slice(None), slice(-1, None), slice(None)): numpy basic indexing, written as in Python."""
    example = 'like "[:, -1:, :]" (integers, start:stop:step and one ...)'
    if not isinstance(raw, str) or not raw.strip().startswith("[") or not raw.strip().endswith("]"):
        raise MappingError(f"{label}: slice must be an index in brackets {example}, not {raw!r}", path=_where(path))
    text = raw.strip()
    items: list[Any] = []
    for item in text[1:-1].split(","):
        item = item.replace(" ", "")
        if item == "...":
            if Ellipsis in items:
                raise MappingError(f"{label}: slice {text!r} has more than one ...", path=_where(path))
            items.append(Ellipsis)
            continue
        found = _SLICE_ITEM.match(item)
        if not item or found is None:
            raise MappingError(f"{label}: slice {text!r}: {item!r} is not an integer, start:stop:step or ... "
                               f"({example})", path=_where(path))  # fmt: skip
        if ":" not in item:
            items.append(int(item))
            continue
        start, stop, step = (int(g) if g is not None else None for g in found.groups())
        if step == 0:
            raise MappingError(f"{label}: slice {text!r}: a step of 0", path=_where(path))
        items.append(slice(start, stop, step))
    return tuple(items), text


def _regex(raw: Any, label: str, path: Path | None) -> re.Pattern[str]:
    if not isinstance(raw, str) or not raw:
        raise MappingError(f"{label}: match must be a non-empty regex string", path=_where(path))
    try:
        return re.compile(raw)
    except re.error as exc:
        raise MappingError(f"{label}: bad regex {raw!r} ({exc})", path=_where(path)) from None


def _names_table(raw: Any, label: str, path: Path | None, multi: bool) -> dict[str, list[str]]:
    if not isinstance(raw, dict) or not raw:
        raise MappingError(f"{label}: names must be a non-empty table of dump name = golden name", path=_where(path))
    out = {}
    for dump_name, golden in raw.items():
        targets = golden if isinstance(golden, list) and multi else [golden]
        if not all(isinstance(t, str) and t for t in targets):
            raise MappingError(f"{label}: names.{dump_name!r} must be a golden name string", path=_where(path))
        out[str(dump_name)] = list(targets)
    return out


def _check_golden_names(names: list[str], label: str, path: Path | None) -> None:
    for name in names:
        try:
            split_name(name)
        except ValueError:
            raise MappingError(
                f"{label}: {name!r} is not a golden tensor name (key#call/role)", path=_where(path)
            ) from None


def parse_mapping(data: dict[str, Any], path: Path | None = None) -> Mapping:
    """Validate a map (as read from TOML) and compile its rules."""
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise MappingError(f"unknown key {unknown[0]!r} (known: {', '.join(sorted(_TOP_KEYS))})", path=_where(path))
    if data.get("format", 1) not in (1, "1", "conformance-map/1"):
        raise MappingError(f"format {data['format']!r} is not supported (this tool reads format 1)", path=_where(path))
    case = data.get("case")
    if case is not None and (not isinstance(case, str) or not case):
        raise MappingError("case must be a case name", path=_where(path))
    export_dir = None
    if "export_dir" in data:
        if not isinstance(data["export_dir"], str) or not data["export_dir"]:
            raise MappingError("export_dir must be a folder path", path=_where(path))
        export_dir = Path(data["export_dir"])
        if not export_dir.is_absolute() and path is not None:
            export_dir = path.parent / export_dir
    tables: dict[str, dict[str, str]] = {}
    raw_tables = data.get("tables", {})
    if not isinstance(raw_tables, dict):
        raise MappingError("tables must be a table of tables ([tables.NAME])", path=_where(path))
    for name, table in raw_tables.items():
        if not isinstance(table, dict) or not all(isinstance(v, (str, int)) for v in table.values()):
            raise MappingError(f"[tables.{name}] must map strings to strings", path=_where(path))
        tables[name] = {str(k): str(v) for k, v in table.items()}
    rules: list[Rule] = []
    if "names" in data:
        table = _names_table(data["names"], "[names]", path, multi=False)
        for targets in table.values():
            _check_golden_names(targets, "[names]", path)
        rules.append(Rule("[names]", "rename", names=table))
    raw_ignores = data.get("ignore", [])
    if not isinstance(raw_ignores, list):
        raise MappingError("ignore must be an array of tables ([[ignore]])", path=_where(path))
    for index, raw in enumerate(raw_ignores):
        label = f"ignore rule {index + 1}"
        if not isinstance(raw, dict):
            raise MappingError(f"{label} must be a table", path=_where(path))
        unknown = sorted(set(raw) - _IGNORE_KEYS)
        if unknown:
            raise MappingError(f"{label}: unknown key {unknown[0]!r} (known: {', '.join(sorted(_IGNORE_KEYS))})",
                               path=_where(path))  # fmt: skip
        reason = raw.get("reason")
        if not isinstance(reason, str) or not reason.strip():
            raise MappingError(f"{label} needs a reason (a non-empty string)", path=_where(path))
        if ("match" in raw) == ("names" in raw):
            raise MappingError(
                f"{label} needs match (a regex) or names (a list), not both or neither", path=_where(path)
            )
        if "match" in raw:
            pattern = _regex(raw["match"], label, path)
            rules.append(Rule(f"{label} (match '{raw['match']}')", "ignore", pattern=pattern, reason=reason.strip(),
                              optional=bool(raw.get("optional", False))))  # fmt: skip
        else:
            names = raw["names"]
            if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
                raise MappingError(f"{label}: names must be a list of dump names", path=_where(path))
            rules.append(Rule(label, "ignore", names={n: [] for n in names}, reason=reason.strip(),
                              optional=bool(raw.get("optional", False))))  # fmt: skip
    raw_renames = data.get("rename", [])
    if not isinstance(raw_renames, list):
        raise MappingError("rename must be an array of tables ([[rename]])", path=_where(path))
    for index, raw in enumerate(raw_renames):
        label = f"rename rule {index + 1}"
        if not isinstance(raw, dict):
            raise MappingError(f"{label} must be a table", path=_where(path))
        unknown = sorted(set(raw) - _RENAME_KEYS)
        if unknown:
            raise MappingError(f"{label}: unknown key {unknown[0]!r} (known: {', '.join(sorted(_RENAME_KEYS))})",
                               path=_where(path))  # fmt: skip
        optional = raw.get("optional", False)
        if not isinstance(optional, bool):
            raise MappingError(f"{label}: optional must be true or false", path=_where(path))
        if "names" in raw:
            if "match" in raw or "to" in raw:
                raise MappingError(f"{label}: names replaces match/to; give one or the other", path=_where(path))
            table = _names_table(raw["names"], label, path, multi=True)
            counts = {len(t) for t in table.values()}
            if len(counts) != 1:
                raise MappingError(f"{label}: every name must have the same number of targets", path=_where(path))
            for targets in table.values():
                _check_golden_names(targets, label, path)
            transform = _transform(raw, label, counts.pop(), path)
            rules.append(Rule(label, "rename", names=table, transform=transform, optional=optional))
            continue
        if "match" not in raw or "to" not in raw:
            raise MappingError(f"{label} needs match (a regex) and to (a golden name template)", path=_where(path))
        pattern = _regex(raw["match"], label, path)
        label = f"{label} (match '{raw['match']}')"
        to = raw["to"]
        templates = to if isinstance(to, list) else [to]
        if not templates or not all(isinstance(t, str) and t for t in templates):
            raise MappingError(f"{label}: to must be a template string or a list of them", path=_where(path))
        try:
            compiled = tuple(compile_template(t, pattern, tables, label) for t in templates)
        except MappingError as exc:
            raise MappingError(exc.message, path=_where(path)) from None
        transform = _transform(raw, label, len(compiled), path)
        rules.append(Rule(label, "rename", pattern=pattern, targets=compiled, transform=transform, optional=optional))
    # [names] first, then ignore rules, then rename rules: a name routed explicitly is never ignored by a regex
    ordered = [r for r in rules if r.label == "[names]"] + [r for r in rules if r.kind == "ignore"] + \
              [r for r in rules if r.kind == "rename" and r.label != "[names]"]  # fmt: skip
    _check_table_overlap(ordered, path)
    modules = _modules_table(data.get("modules", {}), path)
    kwargs = _kwargs_rules(data.get("kwargs", []), path)
    return Mapping(path, case, export_dir, ordered, tables, modules, kwargs, _profile(data.get("profile", {}), path))


def _profile(raw: Any, path: Path | None) -> dict[str, tuple[str, ...]]:
    """[profile]: semantic = "value" or ["value", ...], the values of each case semantic the port supports."""
    if not isinstance(raw, dict):
        raise MappingError("profile must be a table ([profile]) of semantic = [supported values]", path=_where(path))
    out: dict[str, tuple[str, ...]] = {}
    for name, value in raw.items():
        values = [value] if isinstance(value, str) else value
        if not isinstance(values, list) or not values or not all(isinstance(v, str) and v for v in values):
            raise MappingError(f"[profile] {name} must be a value or a non-empty list of values (strings)",
                               path=_where(path))  # fmt: skip
        out[str(name)] = tuple(values)
    return out


def _modules_table(raw: Any, path: Path | None) -> dict[str, str]:
    if not isinstance(raw, dict):
        raise MappingError("[modules] must be a table of golden module key = candidate module path", path=_where(path))
    seen: dict[str, str] = {}
    for source, target in raw.items():
        if not isinstance(target, str):
            raise MappingError(f"[modules] {source!r} must map to a module path string, not {target!r}",
                               path=_where(path))  # fmt: skip
        for name in (source, target):
            if not (_MODULE_PATH.match(name) or _METHOD_KEY.match(name)):
                raise MappingError(f"[modules] {name!r} is not a module path like 'model.rotary_emb' (or "
                                   "'path:method'; no globs: a mapped module moves what is below it)",
                                   path=_where(path))  # fmt: skip
        if (":" in source) != (":" in target):
            raise MappingError(f"[modules] {source!r} = {target!r}: a method maps to a method, a module to a module",
                               path=_where(path))  # fmt: skip
        if target in seen:
            raise MappingError(f"[modules] maps both {seen[target]!r} and {source!r} to {target!r}", path=_where(path))
        seen[target] = source
    return dict(raw)


def _kwargs_rules(raw: Any, path: Path | None) -> list[KwargsRule]:
    if not isinstance(raw, list):
        raise MappingError("kwargs must be an array of tables ([[kwargs]])", path=_where(path))
    rules = []
    for index, entry in enumerate(raw):
        label = f"kwargs rule {index + 1}"
        if not isinstance(entry, dict):
            raise MappingError(f"{label} must be a table", path=_where(path))
        unknown = sorted(set(entry) - _KWARGS_KEYS)
        if unknown:
            raise MappingError(f"{label}: unknown key {unknown[0]!r} (known: {', '.join(sorted(_KWARGS_KEYS))})",
                               path=_where(path))  # fmt: skip
        if "modules" not in entry or "names" not in entry:
            raise MappingError(f"{label} needs modules (a glob over golden module keys) and names (golden keyword = "
                               "candidate keyword)", path=_where(path))  # fmt: skip
        globs = entry["modules"] if isinstance(entry["modules"], list) else [entry["modules"]]
        if not globs:
            raise MappingError(f"{label}: modules must name at least one glob", path=_where(path))
        for glob in globs:
            _module_glob(glob, f"{label}: modules", path)
        names = entry["names"]
        if not isinstance(names, dict) or not names:
            raise MappingError(f"{label}: names must be a non-empty table of golden keyword = candidate keyword",
                               path=_where(path))  # fmt: skip
        targets: dict[str, str] = {}
        for golden, candidate in names.items():
            if not isinstance(candidate, str) or not golden.isidentifier() or not candidate.isidentifier():
                raise MappingError(f"{label}: names.{golden} = {candidate!r} must rename a keyword to a keyword "
                                   "(Python identifiers)", path=_where(path))  # fmt: skip
            if candidate in targets:
                raise MappingError(f"{label}: both {targets[candidate]!r} and {golden!r} are renamed to {candidate!r}",
                                   path=_where(path))  # fmt: skip
            targets[candidate] = golden
        rules.append(KwargsRule(label, tuple(globs), dict(names)))
    return rules


def _module_glob(pattern: Any, where: str, path: Path | None) -> str:
    if not isinstance(pattern, str) or not pattern:
        raise MappingError(f"{where} must be a non-empty glob string (or a list of them)", path=_where(path))
    if pattern.count("[") != pattern.count("]") or re.search(r"[\s#/]", pattern):
        raise MappingError(f"{where}: bad glob {pattern!r} (unbalanced brackets, or characters no module key has)",
                           path=_where(path))  # fmt: skip
    try:
        re.compile(fnmatch.translate(pattern))
    except re.error as exc:
        raise MappingError(f"{where}: bad glob {pattern!r} ({exc})", path=_where(path)) from None
    return pattern


def _check_table_overlap(rules: list[Rule], path: Path | None) -> None:
    seen: dict[str, str] = {}
    for rule in rules:
        for name in rule.names or {}:
            if name in seen:
                raise MappingError(f"{name!r} is listed by both {seen[name]} and {rule.label}", path=_where(path))
            seen[name] = rule.label


def load_mapping(path: Path | None) -> Mapping:
    if path is None:
        return Mapping()
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise MappingError("map file not found", path=path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise MappingError(f"cannot read the map ({exc})", path=path) from None
    except tomllib.TOMLDecodeError as exc:
        raise MappingError(f"not valid TOML ({exc})", path=path) from None
    return parse_mapping(data, path)
