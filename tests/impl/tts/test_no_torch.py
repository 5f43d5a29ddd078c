"""The impl runs a whole case (tokenizer, talker, code predictor, speaker encoder, codec) without ever
importing torch, transformers or qwen_tts."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from .helpers import ROOT, TINY

SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    from impl.qwen3_tts import pipeline, tts
    model = tts.load_tts({folder!r}, np.float32)
    out = pipeline.run_case(model, "custom_voice", dict(text="Hi.", speaker="Ryan", language="English",
                            non_streaming_mode=False, max_new_tokens=3))
    base = tts.load_model({base!r}, np.float32)
    base.extract_speaker_embedding(np.zeros(4800, np.float32), 24000)
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers", "qwen_tts", "librosa"))
    print("codes", out["codes"].shape, "loaded", loaded)
    sys.exit(1 if loaded else 0)
    """
)


def test_impl_never_imports_torch():
    script = SCRIPT.format(folder=str(TINY / "custom_voice"), base=str(TINY / "base"))
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "codes (2, 4)" in result.stdout


FORBIDDEN = ("torch", "transformers", "qwen_tts", "librosa")


def test_no_impl_source_imports_torch_anywhere():
    """Static: no import statement in impl/ (at module level or inside a function, on paths the runtime test
    above does not take) names torch, transformers, qwen_tts or librosa."""
    import ast

    found = []
    sources = sorted((ROOT / "impl").rglob("*.py"))
    assert len(sources) > 10
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            found += [f"{path.relative_to(ROOT)}:{node.lineno} {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert not found, found
