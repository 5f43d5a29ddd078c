"""Installing the project into a fork's environment leaves the fork's transformers as it is: `pip install -e
'.[fork]'` into a virtualenv with another transformers major version (5.x, from the package registry), the
way docs/forks.md tells a fork's author to. The `record` extra, pinned for this project's own runs, would
replace it (checked with pip's dry run, so the test can tell the two apart)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=600)
    if check and done.returncode != 0:
        pytest.fail(
            f"{' '.join(map(str, args))} exited {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
        )
    return done


def _version(python: Path, distribution: str) -> str:
    code = f"import importlib.metadata as m; print(m.version({distribution!r}))"
    return _run(python, "-c", code).stdout.strip()


@pytest.mark.slow
def test_the_fork_extra_installs_beside_transformers_5_without_changing_it(tmp_path: Path) -> None:
    env = tmp_path / "fork-env"
    _run(sys.executable, "-m", "venv", env)
    python = env / "bin" / "python"
    pip = (python, "-m", "pip", "--disable-pip-version-check", "--quiet")
    _run(*pip, "install", "transformers>=5,<6")  # stands for the fork's environment
    before = _version(python, "transformers")
    assert before.split(".")[0] == "5", before

    report = tmp_path / "record-extra.json"
    _run(*pip, "install", "--dry-run", "--report", report, "-e", f"{ROOT}[record]")
    planned = {i["metadata"]["name"]: i["metadata"]["version"] for i in json.loads(report.read_text())["install"]}
    assert planned.get("transformers") == "4.57.3"  # what this test would catch if [fork] kept the pin

    _run(*pip, "install", "-e", f"{ROOT}[fork]")
    assert _version(python, "transformers") == before
    assert _version(python, "librosa")  # the extra's own requirements did install
    assert _version(python, "conformance")
    listed = _run(env / "bin" / "conformance", "--help").stdout
    assert "dump" in listed and "record" in listed
    # no torch in this environment: the commands that run a torch model say so in one line, exit 2
    done = _run(env / "bin" / "conformance", "dump", "--goldens", ROOT / "goldens" / "qwen3_tts-tiny-float32.h5",
                "-o", tmp_path / "d", check=False)  # fmt: skip
    assert done.returncode == 2 and "needs torch" in done.stderr, done.stderr
