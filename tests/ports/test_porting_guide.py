"""docs/porting-guide.md stays true: its Python examples run, its commands parse with the real command
line, its sample map is a valid map."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from conformance.cli import build_parser
from conformance.ports.mapping import parse_mapping

from .conftest import EXAMPLE, ROOT

GUIDE = ROOT / "docs" / "porting-guide.md"
README = EXAMPLE / "README.md"


def blocks(path: Path, language: str) -> list[str]:
    """The fenced blocks of a page in one language ("" for unlabelled ones)."""
    found, current, label = [], None, ""
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            if current is None:
                current, label = [], line[3:].strip()
            else:
                if label == language:
                    found.append("\n".join(current) + "\n")
                current = None
        elif current is not None:
            current.append(line)
    return found


def commands(text: str) -> list[list[str]]:
    """The `conformance export|check` commands of shell blocks and workflow steps, continuations joined."""
    import shlex

    lines: list[str] = []
    folded: list[str] | None = None
    indent = 0
    for raw in re.sub(r"\\\n\s*", " ", text).splitlines():  # shell continuations
        width = len(raw) - len(raw.lstrip())
        if folded is not None and raw.strip() and width > indent:
            folded.append(raw.strip())  # a YAML folded scalar (run: >) goes on while it is indented deeper
            continue
        if folded is not None:
            lines.append(" ".join(folded))
            folded = None
        if raw.strip().endswith("run: >"):
            folded, indent = [], width
            continue
        lines.append(raw)
    if folded:
        lines.append(" ".join(folded))
    found = []
    for line in lines:
        match = re.search(r"(?:^|&&|run:|\S=\S+)\s*(conformance (?:export|checkpoint|check) .*)$", line.strip())
        if match and "──" not in line:
            found.append(shlex.split(match.group(1).split(" #")[0])[1:])
    return found


def test_the_python_examples_run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    code = blocks(GUIDE, "python")
    assert code
    monkeypatch.chdir(ROOT)
    for block in code:
        exec(compile(block, str(GUIDE), "exec"), {"__name__": "__docs__"})
    assert "speech_tokenizer.decoder.decoder.2.block.2.act1: rel_l2" in capsys.readouterr().out


def test_the_commands_parse() -> None:
    text = "\n".join(blocks(GUIDE, "") + blocks(GUIDE, "yaml") + blocks(README, ""))
    found = commands(text)
    assert len(found) >= 8
    parser = build_parser()
    for words in found:
        args = parser.parse_args(words)  # exits 2 on an option the CLI does not have
        assert args.command in ("export", "check", "checkpoint")
    assert {tuple(w[:1]) for w in found} == {("export",), ("check",), ("checkpoint",)}


def test_the_sample_map_is_valid() -> None:
    (sample,) = [b for b in blocks(GUIDE, "toml") if "[[rename]]" in b]
    mapping = parse_mapping(tomllib.loads(sample))
    assert mapping.case == "codec_decode_short"
    assert mapping.route("dec.stage1.res0.a1.out@0").targets == [
        "speech_tokenizer.decoder.decoder.2.block.2.act1#0/outputs/0"
    ]
    assert len(mapping.route("dec.xf.1.attn.qkv.out@0").targets) == 3
    assert mapping.route("debug.x").kind == "ignored"


def test_the_sample_profile_is_valid() -> None:
    (sample,) = [b for b in blocks(GUIDE, "toml") if "[profile]" in b]
    mapping = parse_mapping(tomllib.loads(sample))
    assert mapping.profile == {"text_layout": ("non_streaming",), "voice": ("custom_voice", "voice_design", "x_vector")}
    assert mapping.route("outputs/waveform").targets == ["case#0/outputs/waveform"]
