"""Import the official Qwen3-TTS package (PyPI `qwen-tts==0.1.1`) on a CPU-only machine.

`import qwen_tts` fails without torchaudio even for the 12 Hz pipeline: the package `__init__` chain
reaches the 25 Hz tokenizer, which runs `import torchaudio.compliance.kaldi` at module level (it is
used only by the 25 Hz x-vector extractor). torchaudio cannot be installed beside torch 2.13 on CPU,
so when no real torchaudio is importable we register a small stub for `torchaudio`,
`torchaudio.compliance` and `torchaudio.compliance.kaldi`: importing works, calling anything in it
raises a clear error. Nothing on the 12 Hz path calls it. With a real torchaudio the stub is skipped.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import os
import sys
import types
from typing import Any

OFFICIAL_PACKAGE = "qwen-tts"
OFFICIAL_VERSION = "0.1.1"
TORCH_VERSION = "2.13.0"
TRANSFORMERS_VERSION = "4.57.3"

_STUB_NAMES = ("torchaudio", "torchaudio.compliance", "torchaudio.compliance.kaldi")


class _StubModule(types.ModuleType):
    """A module whose every attribute access fails loudly: it exists only to satisfy an import."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("compliance", "kaldi"):
            raise AttributeError(name)
        raise RuntimeError(
            f"{self.__name__}.{name} is a conformance stub: torchaudio is not installed. "
            "Only Qwen3-TTS's 25 Hz tokenizer uses it; the 12 Hz pipeline never does."
        )


def install_torchaudio_stub() -> bool:
    """Register the stub unless a real torchaudio is importable. Returns True if the stub is in use."""
    if "torchaudio" in sys.modules and not isinstance(sys.modules["torchaudio"], _StubModule):
        return False
    if "torchaudio" not in sys.modules and importlib.util.find_spec("torchaudio") is not None:
        return False
    parent = None
    for name in _STUB_NAMES:
        module = sys.modules.get(name)
        if module is None:
            module = _StubModule(name)
            module.__spec__ = importlib.machinery.ModuleSpec(name, loader=None, is_package=name != _STUB_NAMES[-1])
            module.__path__ = []  # type: ignore[attr-defined]
            sys.modules[name] = module
        if parent is not None:
            object.__setattr__(parent, name.rsplit(".", 1)[-1], module)
        parent = module
    return True


def import_official() -> types.SimpleNamespace:
    """Import the official modules used by the recorder. Raises ImportError with install advice."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    stubbed = install_torchaudio_stub()
    try:
        # sox (imported by the 25 Hz tokenizer) prints a warning when the sox binary is absent: harmless.
        import qwen_tts
        import transformers
        from qwen_tts.core.models import configuration_qwen3_tts as tts_config
        from qwen_tts.core.models import modeling_qwen3_tts as tts_modeling
        from qwen_tts.core.models import processing_qwen3_tts as tts_processing
        from qwen_tts.core.tokenizer_12hz import configuration_qwen3_tts_tokenizer_v2 as codec_config
        from qwen_tts.core.tokenizer_12hz import modeling_qwen3_tts_tokenizer_v2 as codec_modeling
        from qwen_tts.inference import qwen3_tts_model as inference_model
        from qwen_tts.inference import qwen3_tts_tokenizer as inference_tokenizer
    except ImportError as exc:
        raise ImportError(
            f"the official Qwen3-TTS package could not be imported ({exc}). Install the recording side: "
            f"pip install 'torch=={TORCH_VERSION}' '.[record]' && pip install --no-deps {OFFICIAL_PACKAGE}=={OFFICIAL_VERSION}"
        ) from exc
    from transformers.models.mimi import modeling_mimi

    return types.SimpleNamespace(
        qwen_tts=qwen_tts,
        transformers=transformers,
        tts_config=tts_config,
        tts_modeling=tts_modeling,
        tts_processing=tts_processing,
        codec_config=codec_config,
        codec_modeling=codec_modeling,
        inference_model=inference_model,
        inference_tokenizer=inference_tokenizer,
        mimi=modeling_mimi,
        torchaudio_stubbed=stubbed,
    )


def official_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(OFFICIAL_PACKAGE)
    except PackageNotFoundError:
        return "not installed"
