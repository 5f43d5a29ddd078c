"""Regenerate Qwen3-TTS's committed goldens (`python -m conformance.project goldens --subject qwen3_tts`, which
`nox -s goldens` runs for every subject).

Builds the tiny seeded checkpoint set into `<dir>/checkpoints/qwen3_tts-tiny/` (skipped when present: the build is
deterministic), records every case in float32 (with the isolated float64 oracle) and in clean float64, and returns
this subject's entry of `<dir>/manifest.json` (the files' hashes). Only when the recorder or the cases change:
each regeneration adds its full size to the repository's history.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ...capture import session
from . import cases, checkpoints, record
from .identity import NAME, TITLE

CHECKPOINT_DIR = f"checkpoints/{NAME}-tiny"


def store_name(dtype: str) -> str:
    return f"{NAME}-tiny-{dtype}.h5"


def make_goldens(out_dir: Path, seed: int = record.DEFAULT_SEED, threads: int = 1) -> dict[str, Any]:
    """Record the committed goldens into `out_dir`; returns this subject's manifest entry."""
    out_dir.mkdir(parents=True, exist_ok=True)
    folder = out_dir / CHECKPOINT_DIR
    record.ensure_checkpoints("tiny", seed, folder=folder)
    stores = []
    for dtype in ("float32", "float64"):
        path = out_dir / store_name(dtype)
        command = "python -m conformance.project goldens"
        started = time.time()
        record.record(path, list(cases.CASES), dtype=dtype, checkpoint=folder, seed=seed, threads=threads,
                      oracle=dtype == "float32", command=command, reference64=False,  # paired by the manifest
                      on_case=lambda name, i, n, dtype=dtype: print(f"[{NAME} {dtype}] {i + 1}/{n} {name}", flush=True))  # fmt: skip
        stores.append({
            "path": path.name,
            "dtype": dtype,
            "bytes": path.stat().st_size,
            "sha256": checkpoints.file_sha256(path),
            "cases": [case.name for case in cases.CASES],
            "oracle": "isolated-float64" if dtype == "float32" else "none",
            "seconds": round(time.time() - started, 1),
        })  # fmt: skip
    stores[0]["float64_reference"] = stores[1]["path"]
    return {
        "title": TITLE,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": "nox -s goldens",
        "threads": threads,
        "checkpoint": {
            "path": CHECKPOINT_DIR,
            "seed": seed,
            "size": "tiny",
            "files": checkpoints.weights_hashes(folder, follow_links=False),
        },
        "stores": stores,
        "software": session.software([record.QwenRecording()]),
    }
