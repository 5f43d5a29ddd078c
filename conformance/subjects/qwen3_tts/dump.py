"""`conformance dump`: run whatever `qwen_tts` is importable (the official package, a fork of it, the official
package on another transformers version) on the recorded inputs of golden cases, with the recorder's hooks,
and write one dump per case in the port contract (`<out>/<case>.safetensors`, golden names, no map needed).
`conformance check --candidate dump:<out>` then judges it like any port's dump.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ...capture.io import RecordedIO
from ...errors import ConformanceError, UsageError
from ...store.reader import GoldenStore
from .cases import CASES_BY_NAME


def package_provenance(package: str = "qwen_tts") -> dict[str, Any]:
    """Which distribution provides the importable `package`, its version and where it is imported from
    (without importing it: a fork that fails on import is still described)."""
    module = sys.modules.get(package)
    origin = getattr(module, "__file__", None) if module is not None else None
    if origin is None:
        spec = importlib.util.find_spec(package)
        origin = spec.origin if spec is not None else None
    distributions = importlib.metadata.packages_distributions().get(package, [])
    out: dict[str, Any] = {"package": package, "location": str(Path(origin).parent) if origin else None}
    if distributions:
        out["distribution"] = distributions[0]
        out["version"] = importlib.metadata.version(distributions[0])
    return out


class DumpCrash(ConformanceError):
    """The implementation under test raised while running a case: nothing was dumped for that case."""


def _crash(exc: BaseException, doing: str, path: Path) -> DumpCrash:
    found = package_provenance()
    what = f"{found.get('distribution', 'qwen_tts')} {found.get('version', '')}".strip()
    message = " ".join(str(exc).split())[:300]
    return DumpCrash(f"the installed qwen_tts ({what}, from {found['location']}) raised {type(exc).__name__} {doing}: "
                     f"{message}", path=path)  # fmt: skip


def dump_cases(store: GoldenStore, names: list[str] | None, out: Path, *, checkpoint: Path | None = None,
               dtype: str = "float32", modules: list[str] | None = None, inputs: bool = False,
               on_case: Callable[[str, Path], None] | None = None) -> list[Path]:  # fmt: skip
    """Dump each named case (default: all) of `store` into `out/<case>.safetensors`. Returns the files."""
    import torch

    from ...capture.dump import dump_case
    from .official_binding import OfficialCandidate
    from .record import function_specs, method_specs

    names = names or list(store.cases)
    for name in names:
        if name not in store.cases:
            raise UsageError(f"no case {name!r} in the golden store (cases: {', '.join(store.cases)})", path=store.path)
        if name not in CASES_BY_NAME:
            raise UsageError(f"case {name!r} has no runner here: dump runs the cases `conformance list-cases` knows",
                             path=store.path)  # fmt: skip
    candidate = OfficialCandidate(dtype, checkpoint=checkpoint)
    written = []
    for name in names:
        case = store.case(name)
        spec = CASES_BY_NAME[name]
        try:
            candidate.prepare(store, case)  # imports qwen_tts, loads the weights the golden names, at its threads
        except ConformanceError:
            raise
        except Exception as exc:
            raise _crash(exc, f"while loading the model of case {name}", store.path) from exc
        roots = {k: v for k, v in candidate.roots.items() if k != "speech_tokenizer" or "codec" in spec.hooks}
        io = RecordedIO(case, str(case.provenance.get("size", "tiny")))
        path = out / f"{name}.safetensors"
        metadata = {"candidate": {**package_provenance(), "dtype": dtype}, "golden": str(store.path),
                    "golden_recording_id": store.recording_id}  # fmt: skip
        try:
            torch.manual_seed(int(case.provenance.get("seed", 0)))
            run = functools.partial(spec.run, candidate.models, io)
            with candidate._precision():
                dump_case(roots, run, path, case=name, include=modules, methods=method_specs(roots),
                          functions=function_specs(), inputs=inputs, metadata=metadata)  # fmt: skip
        except ConformanceError:
            raise
        except Exception as exc:
            raise _crash(exc, f"while running case {name}", path) from exc
        finally:
            candidate.release()
        written.append(path)
        if on_case is not None:
            on_case(name, path)
    return written
