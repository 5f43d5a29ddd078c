"""What a candidate is, for the reports (stdlib only: the checking side never imports torch).

A Python candidate is whatever package the import system actually found: the distribution that installed
it (a wheel, an editable install of a fork), or a source checkout on sys.path that no distribution
provides. `package_provenance` tells them apart by the files each installed distribution owns, so a
checkout that shadows an installed distribution of the same package is never reported as that distribution.

A candidate that implements the official package (the official binding, a fork of it, a dump declaring
where it came from) states, under `compared_with_golden`, its values of the golden provenance fields it
can be compared on; `provenance_differences` lists the ones that differ from the recording, so a check
of another version, another fork or another transformers says so in every report.
"""

from __future__ import annotations

import importlib.metadata as metadata
import importlib.util
import json
import re
import sys
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

# golden provenance fields (engine._provenance_summary) a candidate can be compared on, in report order
COMPARED_FIELDS = ("official_package", "official_version", "transformers", "torch")


def _origin(import_name: str) -> tuple[Path | None, bool]:
    """(the file the package was or would be imported from, or its folder for a namespace package; whether
    it is imported)."""
    module = sys.modules.get(import_name)
    if module is not None:
        where = getattr(module, "__file__", None) or next(iter(getattr(module, "__path__", []) or []), None)
        if where:
            return Path(where).resolve(), True
    try:
        spec = importlib.util.find_spec(import_name)
    except (ImportError, ValueError):  # ValueError: set to None in sys.modules (import blocked)
        spec = None
    if spec is None:
        return None, module is not None
    where = spec.origin if spec.origin not in (None, "built-in", "frozen") else None
    where = where or next(iter(spec.submodule_search_locations or []), None)
    return (Path(where).resolve() if where else None), module is not None


def _editable_roots(dist: metadata.Distribution) -> list[Path]:
    """Source folders an editable install of `dist` puts on the path (PEP 610 direct_url.json, .pth files)."""
    roots = []
    try:
        direct = json.loads(dist.read_text("direct_url.json") or "{}")
    except ValueError:
        direct = {}
    if direct.get("dir_info", {}).get("editable") and str(direct.get("url", "")).startswith("file:"):
        roots.append(Path(unquote(urlparse(direct["url"]).path)).resolve())
    for file in dist.files or []:
        if file.suffix == ".pth":
            try:
                lines = Path(str(dist.locate_file(file))).read_text().splitlines()
            except (OSError, UnicodeDecodeError):
                continue
            roots += [
                Path(line.strip()).resolve() for line in lines if line.strip() and not line.startswith(("#", "import"))
            ]
    return roots


def _owns(dist: metadata.Distribution, origin: Path, top: str) -> bool:
    for file in dist.files or []:
        if not file.parts or file.parts[0] not in (top, f"{top}.py"):
            continue
        located = Path(str(dist.locate_file(file))).resolve()
        if located == origin or (origin.is_dir() and located.is_relative_to(origin)):
            return True
    return any(origin.is_relative_to(root) for root in _editable_roots(dist))


def package_provenance(import_name: str) -> dict[str, Any]:
    """The distribution that provides the package `import_name` as imported (or importable) here: its name,
    version and location; `distribution` None for a source checkout no installed distribution provides
    (then `shadows` names the installed ones that claim the same package elsewhere)."""
    top = import_name.split(".")[0]
    origin, imported = _origin(import_name)
    out: dict[str, Any] = {"import": import_name, "imported": imported, "distribution": None, "version": None,
                           "location": None}  # fmt: skip
    if origin is None:
        out["error"] = f"no package {import_name!r} is importable"
        return out
    out["location"] = str(origin.parent if origin.name == "__init__.py" else origin)  # a package's folder
    claiming = metadata.packages_distributions().get(top, [])
    others = []
    for name in dict.fromkeys(claiming):
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        if _owns(dist, origin, top):
            out["distribution"] = dist.metadata["Name"] or name
            out["version"] = dist.version
            editable = any(origin.is_relative_to(root) for root in _editable_roots(dist))
            out["install"] = "editable" if editable else "installed"
            return out
        others.append(f"{dist.metadata['Name'] or name} {dist.version} at {dist.locate_file('')}")
    out["install"] = "source checkout (no installed distribution provides it)"
    if others:
        out["shadows"] = others
    return out


def imported_versions(names: tuple[str, ...]) -> dict[str, str | None]:
    """The versions of these libraries as imported in this process (None: not imported)."""
    versions: dict[str, str | None] = {}
    for name in names:
        module = sys.modules.get(name)
        versions[name] = str(getattr(module, "__version__", "unknown")) if module is not None else None
    return versions


def package_label(package: dict[str, Any]) -> str:
    """`official-model 1.2.0`, or `official_model from /src/fork/official_model` for a source checkout."""
    if package.get("distribution"):
        return f"{package['distribution']} {package.get('version')}"
    if package.get("location"):
        return f"{package['import']} from {package['location']}"
    return f"{package.get('import')} (not importable)"


def provenance_differences(golden: dict[str, Any], candidate: dict[str, Any]) -> list[dict[str, Any]]:
    """The golden provenance fields on which the candidate states another value, in COMPARED_FIELDS order."""
    claims = candidate.get("compared_with_golden") or {}
    out = []
    for field in (*COMPARED_FIELDS, *(k for k in claims if k not in COMPARED_FIELDS)):
        if field not in claims:
            continue
        recorded, stated = golden.get(field), claims[field]
        if recorded is None or stated is None or _same(field, str(recorded), str(stated)):
            continue
        out.append({"field": field, "golden": str(recorded), "candidate": str(stated)})
    return out


def canonical_name(name: str) -> str:
    """A distribution name as PyPI compares them (PEP 503): `Official_Model` is `official-model`."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _same(field: str, recorded: str, stated: str) -> bool:
    if field == "official_package":
        return canonical_name(recorded) == canonical_name(stated)
    return recorded == stated


def difference_line(difference: dict[str, Any]) -> str:
    return f"{difference['field']}: the golden was recorded with {difference['golden']}, the candidate ran {difference['candidate']}"
