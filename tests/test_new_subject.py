"""docs/new-subject.md, followed literally: the files it shows become a package in a fresh folder, pip installs that
package into a virtualenv (which sees this environment's packages, conformance included, but installs the new one
into itself), and every `conformance` command of its section 3 runs there with the exit code the page gives it
(0 unless a comment says `exit N`). Then what the page promises is checked: the subject is found by its entry point,
the golden names it and the official package, the planted perturbation is blamed on its module, the dump checks
clean. Hermetic: no network (pip installs from the folder, --no-index --no-deps), its own checkpoint cache."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "new-subject.md"

pytest.importorskip("torch")


def files(page: str) -> dict[str, str]:
    """The blocks the page names a file for: ```<language> file=<path>."""
    return dict(re.findall(r"```\w+ file=(\S+)\n(.*?)```", page, flags=re.S))


def commands(page: str) -> list[tuple[list[str], int]]:
    """The `conformance ...` lines of the page's shell blocks, as arguments, with the exit code each expects."""
    found = []
    for block in re.findall(r"```sh\n(.*?)```", page, flags=re.S):
        for line in block.splitlines():
            command, _, comment = line.partition("#")
            if command.startswith("conformance "):
                expected = re.search(r"\bexit (\d)", comment)
                found.append((shlex.split(command)[1:], int(expected.group(1)) if expected else 0))
    return found


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, str]]:
    """(the virtualenv's python, a working folder, the environment to run it in) with the page's package installed."""
    page = PAGE.read_text()
    work = tmp_path_factory.mktemp("new_subject")
    package = work / "tiny-classifier"
    for name, text in files(page).items():
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text(text)
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site_packages = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                        capture_output=True, text=True, check=True).stdout.strip())  # fmt: skip
    # this environment's packages (conformance, torch, pip, setuptools) below the virtualenv's own, .pth files included
    outer = sysconfig.get_paths()["purelib"]
    (site_packages / "_outer_environment.pth").write_text(f"import site; site.addsitedir({outer!r})\n")
    env = {**os.environ, "CONFORMANCE_CACHE": str(work / "cache"), "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1",
           "HF_HUB_OFFLINE": "1"}  # fmt: skip
    install = subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-build-isolation", "-q", "-e",
                              str(package)], capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert install.returncode == 0, install.stdout + install.stderr
    return python, work, env


def test_the_page_shows_a_whole_package() -> None:
    page = PAGE.read_text()
    assert set(files(page)) == {"pyproject.toml", "tiny_classifier/__init__.py", "tiny_classifier/model.py",
                                "tiny_classifier/conformance_subject.py"}  # fmt: skip
    assert [args[0] for args, _ in commands(page)] == ["list-cases", "record", "inspect", "check", "check", "export",
                                                       "dump", "check"]  # fmt: skip


def test_the_installed_subject_is_recorded_and_checked_with_the_same_commands(
    installed: tuple[Path, Path, dict[str, str]],
) -> None:
    python, work, env = installed
    where = subprocess.run([str(python), "-c", "import tiny_classifier, conformance; print(tiny_classifier.__file__)"],
                           capture_output=True, text=True, env=env, check=True).stdout  # fmt: skip
    assert str(work / "tiny-classifier") in where  # imported from the installed package, not from the tests
    outputs = {}
    for args, expected in commands(PAGE.read_text()):
        run = subprocess.run([str(python), "-m", "conformance.cli", *args], cwd=work, capture_output=True, text=True,
                             env=env, timeout=300)  # fmt: skip
        said = f"conformance {shlex.join(args)}: exit {run.returncode}\n{run.stdout}\n{run.stderr}"
        assert run.returncode == expected, said
        outputs[args[0]] = run.stdout
    assert "classify" in outputs["list-cases"] and "embed" in outputs["list-cases"]

    from conformance.store import GoldenStore

    with GoldenStore(work / "tiny.h5") as store:
        assert store.cases == ["classify", "embed"]
        for case in store:
            provenance = case.provenance
            assert provenance["subject"] == "tiny_classifier" and provenance["official_package"] == "tiny-classifier"
            assert provenance["official_version"] == "0.1.0" and provenance["determinism"]["bitwise_identical"]
        assert store.case("embed").has_call(":embed", 0)
    assert (work / "tiny.float64.h5").exists()
    assert (work / "cache" / "checkpoints" / "tiny_classifier-tiny-seed7").is_dir()  # the seeded one, built

    def summary(name: str) -> dict:
        return json.loads((work / "reports" / name / "summary.json").read_text())

    assert summary("own-noise")["verdict"] == "pass"
    planted = summary("planted")
    assert planted["verdict"] == "fail"
    for case in planted["cases"]:
        assert {mode: blame["key"] for mode, blame in case["blame"].items()} == {"isolated": "features.3",
                                                                               "chained": "features.3"}  # fmt: skip
    assert planted["candidate_provenance"]["package"]["distribution"] == "tiny-classifier"
    assert summary("dump")["verdict"] == "pass" and summary("dump")["counts"]["not_covered"] == 0
    assert (work / "tiny-export" / "classify" / "inputs.safetensors").exists()
