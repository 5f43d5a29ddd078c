"""Text ids: the impl's tokenizer (the `tokenizers` library on the real Qwen files) against the official
processor, which `Qwen3TTSModel.from_pretrained` loads with fix_mistral_regex=True."""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from impl.qwen3_tts import text

from .helpers import TINY

STRINGS = [
    "Hello, world.",
    "你好，世界。",
    "The quick brown fox.",
    "iPhone getElementById camelCaseVariable",  # the Mistral regex splits these differently from Qwen's
    "I'll say \"HTTPServer\" x2, don't DON'T 12345 3.14",
    "x!/\n/y  tabs\tand\n\nnewlines ",
    "Ünïcödé ﬁ ligature, emoji 🙂 and Ω≈ç√",
]


@functools.lru_cache(maxsize=1)
def official_processor():
    pytest.importorskip("torch")
    from conformance.subjects.qwen3_tts.checkpoints import loadable_folder, official

    o = official()
    from transformers import AutoConfig, AutoProcessor

    AutoConfig.register("qwen3_tts", o.tts_config.Qwen3TTSConfig, exist_ok=True)
    AutoProcessor.register(o.tts_config.Qwen3TTSConfig, o.tts_processing.Qwen3TTSProcessor, exist_ok=True)
    # exactly the wrapper's call (qwen3_tts_model.py, Qwen3TTSModel.from_pretrained)
    return AutoProcessor.from_pretrained(str(loadable_folder(TINY / "custom_voice")), fix_mistral_regex=True)


def official_ids(s: str) -> list[int]:
    return official_processor()(text=s, return_tensors="np", padding=True)["input_ids"][0].tolist()


@pytest.mark.official
@pytest.mark.parametrize("s", STRINGS)
def test_ids_equal_official_processor(s):
    tokenizer = text.QwenTokenizer(TINY / "custom_voice")
    for wrapped in (s, text.build_assistant_text(s), text.build_ref_text(s), text.build_instruct_text(s)):
        got = tokenizer(wrapped)
        assert got.dtype == np.int64 and got.shape[0] == 1
        assert got[0].tolist() == official_ids(wrapped)


@pytest.mark.official
def test_mistral_regex_is_what_makes_them_equal():
    """The plain tokenizer.json (Qwen's regex) disagrees with the official processor on these words."""
    import tokenizers

    plain = tokenizers.Tokenizer.from_file(str(text.packaged_tokenizer_dir() / "tokenizer.json"))
    for word in ("iPhone", "getElementById"):
        assert plain.encode(word).ids != official_ids(word)
        assert text.QwenTokenizer(TINY / "custom_voice")(word)[0].tolist() == official_ids(word)


def test_template_slices():
    """[:3] is the role and [3:-5] the text, as the official generate slices input_ids."""
    tokenizer = text.QwenTokenizer(TINY / "custom_voice")
    ids = tokenizer(text.build_assistant_text("Hello, world."))[0]
    bare = tokenizer("Hello, world.")[0]
    assert ids[:3].tolist() == [151644, 77091, 198]  # <|im_start|> assistant \n
    assert ids[3:-5].tolist() == bare.tolist()
    assert ids[-5:].tolist() == [151645, 198, 151644, 77091, 198]
    ref = tokenizer(text.build_ref_text("Hello, world."))[0]
    assert ref[3:-2].tolist() == bare.tolist()


@pytest.mark.parametrize(
    ("config", "applies"),
    [
        (None, False),
        ({"model_type": "qwen3_tts"}, True),  # no version: the seeded checkpoints
        ({"model_type": "qwen3_tts", "transformers_version": "4.57.3"}, True),
        ({"model_type": "qwen3_tts", "transformers_version": "4.57.1"}, False),
        ({"model_type": "mistral", "transformers_version": "4.50.0"}, True),
        ({"model_type": "qwen3_tts", "transformers_version": "5.0.0"}, False),
    ],
)
def test_mistral_regex_rule(config, applies):
    assert text.mistral_regex_applies(config) is applies


def test_vocab_merges_folder_equals_tokenizer_json(tmp_path: Path):
    """A checkpoint folder with only vocab.json / merges.txt / tokenizer_config.json (no tokenizer.json)
    tokenizes like the packaged tokenizer.json."""
    source = text.packaged_tokenizer_dir()
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        shutil.copy(source / name, tmp_path / name)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen3_tts", "transformers_version": "4.57.1"}))
    built = text.QwenTokenizer(tmp_path)
    assert not built.mistral_regex and built.files == tmp_path
    (tmp_path / "packaged").mkdir()
    (tmp_path / "packaged" / "config.json").write_text((tmp_path / "config.json").read_text())
    packaged = text.QwenTokenizer(tmp_path / "packaged")
    assert packaged.files == source
    for s in STRINGS:
        wrapped = text.build_assistant_text(s)
        assert built(wrapped).tolist() == packaged(wrapped).tolist()
