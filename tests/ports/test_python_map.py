"""The map's sections for Python candidates: [modules] (a moved module, and everything below it) and
[[kwargs]] (keywords taken under other names, per module glob). Translation both ways, and every malformed
section rejected as bad input: exit 2 with one line naming the map file, nothing written."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from conformance.errors import MappingError
from conformance.ports.mapping import load_mapping, parse_mapping

from .conftest import EXAMPLE, Outcome


def mapping(text: str):
    return parse_mapping(tomllib.loads(text), Path("port-map.toml"))


def test_a_moved_module_moves_what_is_below_it_and_translates_back() -> None:
    names = mapping("""
[modules]
"talker.model" = "talker.backbone"
"talker.model.rotary_emb" = "talker.rope"
"speech_tokenizer.decoder:chunked_decode" = "speech_tokenizer.decoder:decode_chunks"
""")
    assert names.candidate_key("talker.model") == "talker.backbone"
    assert names.candidate_key("talker.model.layers.1.mlp") == "talker.backbone.layers.1.mlp"
    assert names.candidate_key("talker.model.rotary_emb") == "talker.rope"  # the longest entry wins
    assert names.candidate_key("talker.model_extra") == "talker.model_extra"  # a prefix of the name is no parent
    assert names.candidate_key("speech_tokenizer.decoder:chunked_decode") == "speech_tokenizer.decoder:decode_chunks"
    assert names.candidate_key("talker.model:generate") == "talker.backbone:generate"
    for key in ("talker.model.layers.1.mlp", "talker.model.rotary_emb", "speech_tokenizer.decoder:chunked_decode",
                "talker.codec_head", ":generate"):  # fmt: skip
        assert names.golden_key(names.candidate_key(key)) == key


def test_keywords_are_renamed_for_the_modules_their_globs_match() -> None:
    names = mapping("""
[[kwargs]]
modules = ["talker.model.layers.*.self_attn", "talker.code_predictor.model.layers.*.self_attn"]
names = { position_ids = "pos_ids", hidden_states = "x" }

[[kwargs]]
modules = "talker.model.layers.0.*"
names = { position_ids = "positions", cache_position = "cache_pos" }
""")
    kwargs = {"hidden_states": 1, "position_ids": 2, "cache_position": 3}
    first = names.candidate_kwargs("talker.model.layers.0.self_attn", kwargs)
    assert first == {"x": 1, "pos_ids": 2, "cache_pos": 3}  # the first rule naming a keyword wins
    assert names.golden_kwargs("talker.model.layers.0.self_attn", first) == kwargs
    assert names.candidate_kwargs("talker.model.norm", kwargs) == kwargs


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('[modules]\n"talker.model.*" = "talker.backbone"', "is not a module path"),
        ('[modules]\n"talker.model" = 3', "must map to a module path string"),
        ('[modules]\n"talker.model:generate" = "talker.backbone"', "a method maps to a method"),
        ('[modules]\n"talker.a" = "talker.x"\n"talker.b" = "talker.x"', "maps both 'talker.a' and 'talker.b'"),
        ('modules = ["talker"]', "[modules] must be a table"),
        ('[kwargs]\nmodules = "talker.*"', "kwargs must be an array of tables"),
        ('[[kwargs]]\nmodules = "talker.*"\nnames = { a = "b" }\nmatch = "x"', "kwargs rule 1: unknown key 'match'"),
        ('[[kwargs]]\nmodules = "talker.*"', "needs modules"),
        ('[[kwargs]]\nmodules = "talker.[model"\nnames = { a = "b" }', "bad glob 'talker.[model'"),
        ('[[kwargs]]\nmodules = "talker model"\nnames = { a = "b" }', "bad glob 'talker model'"),
        ('[[kwargs]]\nmodules = []\nnames = { a = "b" }', "at least one glob"),
        ('[[kwargs]]\nmodules = "talker.*"\nnames = {}', "non-empty table"),
        ('[[kwargs]]\nmodules = "talker.*"\nnames = { a = "not a name" }', "Python identifiers"),
        ('[[kwargs]]\nmodules = "talker.*"\nnames = { a = "c", b = "c" }', "both 'a' and 'b' are renamed to 'c'"),
        ('[module]\n"a" = "b"', "unknown key 'module'"),
    ],
)  # fmt: skip
def test_malformed_python_sections_are_mapping_errors(text: str, needle: str) -> None:
    with pytest.raises(MappingError) as raised:
        mapping(text)
    assert needle in str(raised.value) and "port-map.toml" in str(raised.value)


def run_check(cli, tmp_path: Path, golden: Path, map_text: str) -> Outcome:
    path = tmp_path / "port-map.toml"
    path.write_text(map_text)
    return cli("check", "--goldens", golden, "--candidate", "impl", "--cases", "tts_custom_voice", "--map", path,
               "--reports", tmp_path / "reports", "--no-html", "-q")  # fmt: skip


@pytest.mark.parametrize(
    ("map_text", "needles"),
    [
        ('[[kwargs]]\nmodules = "talker.[model"\nnames = { position_ids = "pos_ids" }', ["bad glob"]),
        ('[modules]\n"talker.model.rotary" = "talker.model.rope"',
         ["[modules] maps 'talker.model.rotary', which is no module of the golden store"]),
        ('[[kwargs]]\nmodules = "talker.model.layer.*"\nnames = { position_ids = "pos_ids" }',
         ["match no module of the golden store"]),
        ('[[rename]]\nmatch = "a"\nto = "talker#0/outputs/0"', ["no [modules] or [[kwargs]] section"]),
    ],
)  # fmt: skip
def test_a_bad_map_for_a_python_candidate_is_exit_2_in_one_line_and_writes_nothing(
        cli, tmp_path: Path, golden_f32: Path, map_text: str, needles: list[str]) -> None:  # fmt: skip
    outcome = run_check(cli, tmp_path, golden_f32, map_text)
    assert outcome.code == 2, outcome.err
    lines = outcome.error_lines
    assert len(lines) == 1 and lines[0].startswith("conformance: error: ") and "port-map.toml" in lines[0], lines
    for needle in needles:
        assert needle in lines[0]
    assert not (tmp_path / "reports").exists()


def test_a_dump_map_may_carry_python_sections(tmp_path: Path) -> None:
    """One map file can serve a port's dump and its Python twin: the dump routes by its own sections."""
    example = EXAMPLE / "map.toml"
    path = tmp_path / "map.toml"
    path.write_text(example.read_text() + '\n[modules]\n"talker.model.rotary_emb" = "talker.model.rope"\n')
    combined, plain = load_mapping(path), load_mapping(example)
    assert [r.label for r in combined.rules] == [r.label for r in plain.rules]
    assert combined.modules == {"talker.model.rotary_emb": "talker.model.rope"} and not plain.renames_python_names
