"""Forks of the official package, built the way a third party makes one: a copy of the installed `qwen_tts`
with its model source edited, imported ahead of the real one (PYTHONPATH) by `--candidate official`.

Each edit names the class it changes and the exact text it replaces, so an edit that no longer applies
(another qwen-tts version) fails loudly instead of building an unchanged "fork".
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
MODELING = Path("core") / "models" / "modeling_qwen3_tts.py"

# (class, old text, new text)
Edit = tuple[str, str, str]

# The talker hands its rotary embedding the text positions as int64 [1, L] (the golden holds the float32
# [3, 1, L] MRoPE grid, three equal rows for text), and the rotary embedding broadcasts them itself.
INT_POSITIONS: list[Edit] = [
    ("Qwen3TTSTalkerModel",
     "position_embeddings = self.rotary_emb(hidden_states, position_ids)",
     "position_embeddings = self.rotary_emb(hidden_states, text_position_ids.long())"),
    ("Qwen3TTSTalkerRotaryEmbedding",
     "        # In contrast to other models, Qwen3TTSThinkerText has different position ids for the grids\n",
     "        if position_ids.ndim == 2:  # text positions: the same for the three sections\n"
     "            position_ids = position_ids[None].expand(3, -1, -1)\n"),
]  # fmt: skip

# inv_freq is never initialised: it holds whatever was in memory (here a seeded stand-in for that garbage).
GARBAGE_ROPE: list[Edit] = [
    ("Qwen3TTSTalkerRotaryEmbedding",
     '        self.register_buffer("inv_freq", inv_freq, persistent=False)\n',
     "        inv_freq = torch.empty_like(inv_freq).uniform_(-1e3, 1e3, generator=torch.Generator().manual_seed(7))\n"
     '        self.register_buffer("inv_freq", inv_freq, persistent=False)\n'),
]  # fmt: skip

# The talker attention takes the text positions as `pos_ids` (and no catch-all **kwargs); its decoder layer
# passes them under that name. Same numbers, another interface.
RENAMED_KWARG: list[Edit] = [
    ("Qwen3TTSTalkerAttention",
     "        **kwargs: Unpack[FlashAttentionKwargs],\n    ) -> tuple[torch.Tensor, Optional[torch.Tensor], Optional[tuple[torch.Tensor]]]:\n",
     "        pos_ids: Optional[torch.LongTensor] = None,\n        output_attentions: bool = False,\n"
     "        use_cache: bool = False,\n    ) -> tuple[torch.Tensor, Optional[torch.Tensor], Optional[tuple[torch.Tensor]]]:\n"),
    ("Qwen3TTSTalkerAttention",
     "            sliding_window=self.sliding_window,  # diff with Llama\n            **kwargs,\n",
     "            sliding_window=self.sliding_window,  # diff with Llama\n"),
    ("Qwen3TTSTalkerDecoderLayer",
     "            position_ids=position_ids,\n            past_key_values=past_key_values,\n",
     "            pos_ids=position_ids,\n            past_key_values=past_key_values,\n"),
]  # fmt: skip

# The talker's rotary embedding lives at `talker.model.rope`.
MOVED_ROTARY: list[Edit] = [
    ("Qwen3TTSTalkerModel", "        self.rotary_emb = Qwen3TTSTalkerRotaryEmbedding(config)\n",
     "        self.rope = Qwen3TTSTalkerRotaryEmbedding(config)\n"),
    ("Qwen3TTSTalkerModel", "position_embeddings = self.rotary_emb(hidden_states, position_ids)",
     "position_embeddings = self.rope(hidden_states, position_ids)"),
]  # fmt: skip


def _edit_class(source: str, class_name: str, old: str, new: str) -> str:
    start = source.index(f"\nclass {class_name}(")
    end = source.find("\nclass ", start + 1)
    end = len(source) if end < 0 else end
    body = source[start:end]
    if body.count(old) != 1:
        raise AssertionError(
            f"fork edit does not apply: {old.strip()!r} occurs {body.count(old)} times in {class_name}"
        )
    return source[:start] + body.replace(old, new) + source[end:]


def make_fork(folder: Path, *edits: list[Edit]) -> Path:
    """A copy of the installed qwen_tts under `folder` with `edits` applied; returns the folder to put first on
    PYTHONPATH."""
    spec = importlib.util.find_spec("qwen_tts")
    assert spec is not None and spec.submodule_search_locations
    installed = Path(next(iter(spec.submodule_search_locations)))
    target = folder / "qwen_tts"
    shutil.copytree(installed, target, ignore=shutil.ignore_patterns("__pycache__"))
    modeling = target / MODELING
    source = modeling.read_text()
    for group in edits:
        for class_name, old, new in group:
            source = _edit_class(source, class_name, old, new)
    modeling.write_text(source)
    return folder


def run_check(fork: Path | None, *args: str | Path) -> subprocess.CompletedProcess[str]:
    """`conformance check` in a fresh interpreter that imports `qwen_tts` from `fork` (when given)."""
    env = dict(os.environ)
    paths = [str(fork)] if fork is not None else []
    env["PYTHONPATH"] = os.pathsep.join([*paths, str(ROOT), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "conformance.cli", "check", *[str(a) for a in args]],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)  # fmt: skip
