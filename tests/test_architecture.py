"""The architecture holds: rooms import downward only, no import cycle spans rooms (function-local imports
included), no generic room imports a subject's package, and no generic room names the first subject's parts."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from tests import architecture

ROOT = Path(__file__).resolve().parent.parent
# the rooms that must know no model: everything of the package but the subject packages
GENERIC = ("store", "capture", "compare", "report", "ports", "cli", "pytest_plugin.py", "errors.py", "metrics.py",
           "precisions.py",
           "project.py", "__init__.py", "subjects/torch_model.py")  # fmt: skip
SUBJECT_WORDS = re.compile(r"qwen|talker|codec|speech_tokenizer", re.IGNORECASE)


def test_rooms_import_downward_only() -> None:
    assert architecture.violations(ROOT) == []


def test_no_import_cycle_between_rooms() -> None:
    assert architecture.room_cycles(ROOT) == []
    assert architecture.module_cycles(ROOT) == []


def generic_files(root: Path) -> list[Path]:
    package = root / "conformance"
    files = []
    for name in GENERIC:
        path = package / name
        files += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix != ".pyc") if path.is_dir() else [path]
    return [p for p in files if p.exists()]


def test_no_generic_room_names_the_first_subject() -> None:
    """Generic code, its docstrings, comments, templates and scripts use neutral words (a model, a vocoder, an
    encoder): what is specific to one model family lives in conformance/subjects/<name>/ and impl/<name>/."""
    found = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
             for path in generic_files(ROOT)
             for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1)
             if SUBJECT_WORDS.search(line)]  # fmt: skip
    assert found == []


# -- the checks themselves, on small packages -----------------------------------------------------------------


def package(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / "conformance" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    for folder in {p.parent for p in (tmp_path / "conformance").rglob("*.py")}:
        (folder / "__init__.py").touch()
    return tmp_path


def test_an_upward_import_inside_a_function_is_found(tmp_path: Path) -> None:
    root = package(tmp_path, {
        "store/reader.py": "def read():\n    from ..compare.engine import check\n",
        "compare/engine.py": "from ..store.reader import read\ncheck = read\n",
    })  # fmt: skip
    assert architecture.violations(root) == [
        "conformance.store.reader line 2 (inside a function): store imports compare (conformance.compare.engine)"
    ]
    assert architecture.room_cycles(root) == [["compare", "store", "compare"]]
    assert architecture.module_cycles(root) == [["conformance.compare.engine", "conformance.store.reader"]]


def test_a_generic_room_importing_a_subject_package_is_found(tmp_path: Path) -> None:
    root = package(tmp_path, {
        "compare/engine.py": "from ..subjects.toy.subject import SUBJECT\nfrom .. import subjects\n",
        "subjects/toy/subject.py": "from ...compare import engine\n",
        "subjects/other/subject.py": "from ..toy import subject\n",
        "cli/main.py": "import importlib\nmodule = importlib.import_module(name)\n",
    })  # fmt: skip
    assert architecture.violations(root) == [
        "conformance.cli.main line 2: imports a module by a computed name (the import graph cannot see it)",
        "conformance.compare.engine line 1: compare imports subject (conformance.subjects.toy.subject)",
        "conformance.subjects.other.subject line 1: the subject package imports another subject's "
        "(conformance.subjects.toy.subject)",
    ]


@pytest.mark.parametrize("word", ["Qwen3", "TALKER", "codec", "speech_tokenizer"])
def test_the_name_check_reads_comments_and_docstrings(tmp_path: Path, word: str) -> None:
    root = package(tmp_path, {"report/view.py": f'"""Draws the {word} panel."""\nx = 1  # neutral\n'})
    files = generic_files(root)
    assert any(SUBJECT_WORDS.search(p.read_text()) for p in files)
