"""Seeded random Qwen3 checkpoints, built from transformers' own config class and saved the way the published
Qwen3 repositories are (config.json, generation_config.json, model.safetensors in bfloat16).

The tiny configuration keeps what ports get wrong: grouped-query attention (4 query heads share 2 key/value
heads), a head width that is not hidden / heads (16 * 4 = 64 != 48, as Qwen3-0.6B's 128 * 16 != 1024), per-head
q/k RMSNorms, Qwen3's RoPE base and epsilon, and the published generation_config (sampling by default: the cases
ask for greedy decoding). The lm_head is untied, as in Qwen3-8B and larger: a random model whose head is its
embedding table (Qwen3-0.6B to 4B) mostly repeats its last token (e . e outweighs everything the layers add), so
its tokens would not depend on the context; impl/qwen3_lm's own tests cover the tied head against transformers.

Every parameter is drawn from a generator seeded by (seed, parameter name), so no norm keeps its identity
initialisation and each parameter is reproducible on its own: norm weights 1 + 0.3 N(0, 1), embeddings N(0, 1),
projections N(0, 1 / fan_in) (activations of order one), the lm_head N(0, 16 / fan_in) (logits of standard
deviation about 4: clear top-1 margins, greedy tokens that change with the context).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

ENDOFTEXT, IM_END = 2, 3  # Qwen3's layout: <|endoftext|> is BOS, pad and the second EOS; <|im_end|> ends a turn
TINY = {
    "vocab_size": 384,
    "hidden_size": 48,
    "intermediate_size": 96,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "max_position_embeddings": 256,
    "rope_theta": 1000000.0,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": False,
    "attention_bias": False,
    "hidden_act": "silu",
    "bos_token_id": ENDOFTEXT,
    "eos_token_id": IM_END,
}
GENERATION = {"bos_token_id": ENDOFTEXT, "eos_token_id": [IM_END, ENDOFTEXT], "pad_token_id": ENDOFTEXT, "do_sample": True,
              "temperature": 0.6, "top_k": 20, "top_p": 0.95}  # fmt: skip
SIZES = {"tiny": TINY}


def _generator(seed: int, name: str) -> Any:
    import torch

    digest = hashlib.sha256(f"{seed}/{name}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


def randomize_(model: Any, seed: int) -> dict[str, str]:
    """Overwrite every parameter of `model` in place from its own seeded generator; returns name -> rule."""
    import torch

    rules = {}
    with torch.no_grad():
        for name, parameter in model.named_parameters():  # tied parameters are listed once
            values = torch.randn(parameter.shape, generator=_generator(seed, name), dtype=torch.float64)
            if name.endswith("norm.weight"):
                values, rules[name] = 1 + 0.3 * values, "1 + 0.3 N(0, 1)"
            elif "embed_tokens" in name:
                rules[name] = "N(0, 1)"
            elif name == "lm_head.weight":
                values, rules[name] = 4 * values / parameter.shape[1] ** 0.5, "N(0, 16 / fan_in)"
            elif parameter.ndim == 2:
                values, rules[name] = values / parameter.shape[1] ** 0.5, "N(0, 1 / fan_in)"
            else:
                raise ValueError(f"no randomisation rule for {name}: add one so no parameter keeps its init value")
            parameter.copy_(values.to(parameter.dtype))
    return rules


def build_checkpoint(folder: Path, *, seed: int, size: str = "tiny") -> Path:
    """Write the seeded checkpoint of a size into `folder` through the official save_pretrained."""
    import transformers

    if size not in SIZES:
        raise ValueError(f"no {size!r} Qwen3 configuration (sizes: {', '.join(SIZES)})")
    config = transformers.Qwen3Config(**SIZES[size], torch_dtype="bfloat16")
    model = transformers.Qwen3ForCausalLM(config)
    randomize_(model, seed)
    model = model.bfloat16()  # saved as the published checkpoints are
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    (folder / "generation_config.json").write_text(json.dumps({**GENERATION, "transformers_version":
                                                               transformers.__version__}, indent=2) + "\n")  # fmt: skip
    return folder
