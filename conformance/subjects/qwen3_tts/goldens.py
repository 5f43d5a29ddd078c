"""Regenerate Qwen3-TTS's committed goldens (`python -m conformance.project goldens --subject qwen3_tts`, which
`nox -s goldens` runs for every subject).

Builds the tiny seeded checkpoint set into `<dir>/checkpoints/qwen3_tts-tiny/` (skipped when present: the build is
deterministic), records every case in clean float64, then in float32 with the isolated float64 oracle and the
noise of its precision twins (`TWINS`: bfloat16, float16 and Q8_0 weights, isolated and chained against the
float64 store; noise records only), and returns this subject's entry of `<dir>/manifest.json` (the files' hashes). Only when the recorder or the cases change:
each regeneration adds its full size to the repository's history.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ... import precisions
from ...capture import session
from ...errors import UsageError
from . import cases, checkpoints, configs, record
from .identity import NAME, TITLE

CHECKPOINT_DIR = f"checkpoints/{NAME}-tiny"
TWINS = precisions.twins("bfloat16,float16", "q8_0")  # what `check --precision` can judge on the committed goldens


def checkpoint_dir(size: str = "tiny") -> str:
    return f"checkpoints/{NAME}-{size}"


def store_name(dtype: str, size: str = "tiny") -> str:
    return f"{NAME}-{size}-{dtype}.h5"


def make_goldens(
    out_dir: Path, seed: int = record.DEFAULT_SEED, threads: int = 1, size: str = "tiny"
) -> dict[str, Any]:
    """Record the goldens into `out_dir`; returns this subject's manifest entry. The committed ones are tiny; `size`
    "port" builds the port-shaped ones (too large to commit: `nox -s goldens -- --subject qwen3_tts --size port
    --goldens DIR`, checked by `python -m conformance.project check --goldens DIR`)."""
    if size not in configs.SIZES:
        raise UsageError(f"unknown size {size!r} for {NAME} goldens ({', '.join(configs.SIZES)})")
    out_dir.mkdir(parents=True, exist_ok=True)
    folder = out_dir / checkpoint_dir(size)
    record.ensure_checkpoints(size, seed, folder=folder)
    stores = []
    for dtype in ("float64", "float32"):  # float64 first: the twins' chained noise is measured against it
        path = out_dir / store_name(dtype, size)
        command = "python -m conformance.project goldens"
        started = time.time()
        twins = TWINS if dtype == "float32" else ()
        record.record(path, list(cases.CASES), dtype=dtype, checkpoint=folder, seed=seed, threads=threads,
                      oracle=dtype == "float32", command=command, reference64=False,  # paired by the manifest
                      twins=twins, twins_reference=out_dir / store_name("float64") if twins else None,
                      on_case=lambda name, i, n, dtype=dtype: print(f"[{NAME} {dtype}] {i + 1}/{n} {name}", flush=True))  # fmt: skip
        stores.append({
            "path": path.name,
            "dtype": dtype,
            "bytes": path.stat().st_size,
            "sha256": checkpoints.file_sha256(path),
            "cases": [case.name for case in cases.CASES],
            "oracle": "isolated-float64" if dtype == "float32" else "none",
            **({"precision_twins": [twin.name for twin in twins]} if twins else {}),
            "seconds": round(time.time() - started, 1),
        })  # fmt: skip
    stores.reverse()  # the manifest lists the float32 golden first
    stores[0]["float64_reference"] = stores[1]["path"]
    return {
        "title": TITLE,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": "nox -s goldens",
        "threads": threads,
        "checkpoint": {
            "path": checkpoint_dir(size),
            "seed": seed,
            "size": size,
            "files": checkpoints.weights_hashes(folder, follow_links=False),
        },
        "stores": stores,
        "software": session.software([record.QwenRecording()]),
    }
