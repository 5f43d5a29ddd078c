"""Regenerate the committed goldens: `python -m conformance.subjects.qwen3_tts.goldens goldens/`.

Builds the tiny seeded checkpoint set into `<dir>/checkpoints/qwen3_tts-tiny/` (skipped when present:
the build is deterministic), records every case in float32 (with the isolated float64 oracle) and in
clean float64, and writes `<dir>/manifest.json` with the files' hashes. Run it through `nox -s goldens`,
and only when the recorder or the cases change: each regeneration adds its full size to the history.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from . import cases, checkpoints, record

MANIFEST_SCHEMA = "conformance-goldens-manifest/1"
CHECKPOINT_DIR = "checkpoints/qwen3_tts-tiny"


def store_name(dtype: str) -> str:
    return f"qwen3_tts-tiny-{dtype}.h5"


def make_goldens(out_dir: Path, seed: int = record.DEFAULT_SEED, threads: int = 1) -> dict[str, Any]:
    out_dir.mkdir(parents=True, exist_ok=True)
    folder = out_dir / CHECKPOINT_DIR
    record.ensure_checkpoints("tiny", seed, folder=folder)
    stores = []
    for dtype in ("float32", "float64"):
        path = out_dir / store_name(dtype)
        command = f"python -m conformance.subjects.qwen3_tts.goldens {out_dir}"
        started = time.time()
        record.record(path, list(cases.CASES), dtype=dtype, checkpoint=folder, seed=seed, threads=threads,
                      oracle=dtype == "float32", command=command, reference64=False,  # paired by the manifest
                      on_case=lambda case, i, n, dtype=dtype: print(f"[{dtype}] {i + 1}/{n} {case.name}", flush=True))  # fmt: skip
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
    manifest = {
        "schema": MANIFEST_SCHEMA,
        "subject": record.SUBJECT,
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
        "software": record.software(),
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def main(argv: list[str]) -> int:
    out_dir = Path(argv[0]) if argv else Path("goldens")
    manifest = make_goldens(out_dir)
    total = sum(p.stat().st_size for p in out_dir.rglob("*") if p.is_file() and not p.is_symlink())
    print(f"goldens in {out_dir}: {len(manifest['stores'])} stores, {total / 1e6:.1f} MB in total")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
