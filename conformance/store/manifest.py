"""The goldens manifest (`goldens/manifest.json`): which committed golden stores exist, per subject, with their
hashes, the checkpoints they were recorded from and what they ran on (stdlib only).

    {"schema": "conformance-goldens-manifest/2",
     "subjects": {"<subject>": {"title", "created_utc", "command", "threads",
                                "checkpoint": {"path", "seed", "size", "files": {file: sha256}},
                                "stores": [{"path", "dtype", "bytes", "sha256", "cases", "oracle", "seconds",
                                            "float64_reference"?, "precision_twins"?}],
                                "software": {...}}}}

Each subject's entry is written by its own goldens regeneration (`python -m conformance.project goldens`), which
replaces that entry and leaves the other subjects' as they are. Paths are relative to the manifest's folder.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import StoreError

SCHEMA = "conformance-goldens-manifest/2"
NAME = "manifest.json"


@dataclass(frozen=True)
class StoreEntry:
    """One committed golden store of a subject, as the manifest lists it."""

    subject: str
    path: Path  # absolute: the manifest's folder joined with the entry's path
    entry: dict[str, Any]

    @property
    def dtype(self) -> str:
        return str(self.entry.get("dtype", ""))

    @property
    def float64_reference(self) -> Path | None:
        name = self.entry.get("float64_reference")
        return self.path.parent / str(name) if name else None


def read_manifest(folder: Path) -> dict[str, Any]:
    """The manifest in `folder` (an empty one of the current schema when there is none). A manifest of another
    schema, or one that is not JSON, is a StoreError naming the file."""
    path = Path(folder) / NAME
    if not path.exists():
        return {"schema": SCHEMA, "subjects": {}}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise StoreError(f"not a readable goldens manifest ({exc})", path=path) from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA or not isinstance(data.get("subjects"), dict):
        found = data.get("schema") if isinstance(data, dict) else None
        raise StoreError(f"goldens manifest of schema {found!r}, expected {SCHEMA!r} (one entry per subject)",
                         path=path)  # fmt: skip
    return data


def stores(folder: Path) -> Iterator[StoreEntry]:
    """Every store the manifest in `folder` lists, subject by subject, in the order they are listed."""
    folder = Path(folder)
    for subject, entry in read_manifest(folder)["subjects"].items():
        for store in entry.get("stores", []):
            yield StoreEntry(subject, folder / str(store["path"]), store)


def paired_reference(store_path: Path) -> tuple[Path | None, str]:
    """(the float64 golden the manifest beside `store_path` pairs it with, or None; why not, when it names one
    that is missing). A missing or unreadable manifest pairs nothing."""
    folder = Path(store_path).parent
    if not (folder / NAME).exists():
        return None, ""
    try:
        listed = list(stores(folder))
    except StoreError:
        return None, ""
    for entry in listed:
        if entry.path.name == Path(store_path).name and entry.float64_reference is not None:
            if entry.float64_reference.exists():
                return entry.float64_reference, ""
            return None, f"{folder / NAME} pairs the golden with {entry.float64_reference}, which is missing"
    return None, ""


def update_subject(folder: Path, subject: str, entry: dict[str, Any]) -> dict[str, Any]:
    """Replace `subject`'s entry of the manifest in `folder` (the other subjects' stay as they are), atomically.
    Returns the whole manifest written."""
    folder = Path(folder)
    data = read_manifest(folder)
    data["subjects"][subject] = entry
    data["subjects"] = dict(sorted(data["subjects"].items()))
    path = folder / NAME
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return data
