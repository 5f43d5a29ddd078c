"""impl/ runs without ever importing torch, transformers or qwen_tts: a whole Qwen3-TTS case (tokenizer,
talker, code predictor, speaker encoder, codec) and a Qwen3 causal LM (load, prefill, greedy decode),
and no source file in impl/ (impl/common, impl/qwen3_tts, impl/qwen3_lm) imports them."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

from .tts.helpers import ROOT, TINY

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


LM_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    from impl.qwen3_lm import load
    model = load({folder!r}, np.float32)
    ids = np.array([[0, 5, 2, 0], [1, 2, 3, 4]])
    mask = np.array([[0, 1, 1, 1], [1, 1, 1, 1]])
    print("logits", model(input_ids=ids)["logits"].shape, "tokens", model.generate(ids, attention_mask=mask, max_new_tokens=3).shape)
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers", "qwen_tts"))
    print("loaded", loaded)
    sys.exit(1 if loaded else 0)
    """
)


def test_the_qwen3_lm_never_imports_torch(tmp_path: Path) -> None:
    """A save_pretrained-layout folder written with NumPy only (tied embeddings: no lm_head tensor)."""
    from safetensors.numpy import save_file

    config = {"vocab_size": 11, "hidden_size": 8, "intermediate_size": 12, "num_hidden_layers": 1, "num_attention_heads": 2,
              "num_key_value_heads": 1, "head_dim": 4, "tie_word_embeddings": True, "eos_token_id": 9}  # fmt: skip
    (tmp_path / "config.json").write_text(json.dumps(config))
    rng = np.random.default_rng(0)
    shapes = {"model.embed_tokens.weight": (11, 8), "model.norm.weight": (8,), "model.layers.0.input_layernorm.weight": (8,),
              "model.layers.0.post_attention_layernorm.weight": (8,), "model.layers.0.self_attn.q_proj.weight": (8, 8),
              "model.layers.0.self_attn.k_proj.weight": (4, 8), "model.layers.0.self_attn.v_proj.weight": (4, 8),
              "model.layers.0.self_attn.o_proj.weight": (8, 8), "model.layers.0.self_attn.q_norm.weight": (4,),
              "model.layers.0.self_attn.k_norm.weight": (4,), "model.layers.0.mlp.gate_proj.weight": (12, 8),
              "model.layers.0.mlp.up_proj.weight": (12, 8), "model.layers.0.mlp.down_proj.weight": (8, 12)}  # fmt: skip
    save_file({name: rng.standard_normal(shape).astype(np.float32) for name, shape in shapes.items()},
              str(tmp_path / "model.safetensors"))  # fmt: skip
    result = subprocess.run([sys.executable, "-c", LM_SCRIPT.format(folder=str(tmp_path))], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "logits (2, 4, 11) tokens (2, 7)" in result.stdout


FORBIDDEN = ("torch", "transformers", "qwen_tts", "librosa")


def test_no_impl_source_imports_torch_anywhere():
    """Static: no import statement in impl/ (at module level or inside a function, on paths the runtime test
    above does not take) names torch, transformers, qwen_tts or librosa."""
    import ast

    found = []
    sources = sorted((ROOT / "impl").rglob("*.py"))
    assert {path.parent.name for path in sources} >= {"common", "qwen3_tts", "qwen3_lm"}
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
