"""Candidate provenance with Qwen3-TTS: the impl says where it was imported from, and two forks of the installed
official package (one installed as another distribution, one a bare source checkout) are named apart, with every
difference from the golden's provenance called out in each report."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from conformance.compare import engine
from conformance.compare.policy import load_policy
from conformance.store import GoldenStore
from conformance.subjects.qwen3_tts.impl_binding import ImplCandidate
from tests.compare.test_provenance import make_dist_info

ROOT = Path(__file__).resolve().parents[3]


def test_the_impl_says_where_it_was_imported_from(golden_f32: Path) -> None:
    with GoldenStore(golden_f32) as store:
        options = engine.CheckOptions(modes=("isolated",), cases=["codec_decode_short"], modules=["*.pre_conv*"])
        run = engine.check(store, ImplCandidate(), load_policy(None), options)
    package = run.candidate_provenance["package"]
    assert run.candidate_provenance["kind"] == "impl" and package["location"] == str(ROOT / "impl" / "qwen3_tts")
    assert package["distribution"] == "conformance" and run.candidate_provenance["dtype"] == "float32"
    assert run.candidate_provenance["libraries"]["numpy"] == __import__("numpy").__version__
    assert run.candidate == run.candidate_provenance["label"] and "NumPy" in run.candidate
    assert run.to_json()["provenance_differences"] == []


# -- two forks of the official package, each checked in its own process -------------------------------------


def _official_package() -> Path:
    spec = __import__("importlib").util.find_spec("qwen_tts")
    assert spec is not None and spec.origin
    return Path(spec.origin).parent


def _fork(root: Path, installed_as: tuple[str, str] | None) -> Path:
    """A copy of the installed qwen_tts under `root`: installed as (distribution, version), or a bare checkout."""
    shutil.copytree(_official_package(), root / "qwen_tts", ignore=shutil.ignore_patterns("__pycache__"))
    if installed_as is not None:
        files = sorted(str(p.relative_to(root)) for p in (root / "qwen_tts").rglob("*") if p.is_file())
        make_dist_info(root, installed_as[0], installed_as[1], "qwen_tts", files)
    return root


def _check_fork(golden: Path, fork: Path, reports: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(fork), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "conformance.cli", "check", "--goldens", str(golden), "--candidate",
                           "official", "--cases", "codec_decode_short", "--reports", str(reports),
                           "--policy", str(ROOT / "conformance-policy.toml")],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)  # fmt: skip


def _header(page: Path) -> str:
    return html.unescape(re.search(r'<header id="top".*?</header>', page.read_text(), flags=re.S).group(0))


@pytest.mark.official
@pytest.mark.slow
def test_two_forks_of_the_official_package_are_named_apart_and_their_differences_called_out(
    golden_f32: Path, tmp_path: Path
) -> None:
    pytest.importorskip("torch")
    installed = _fork(tmp_path / "site", ("qwen-tts-fork", "0.2.0"))
    checkout = _fork(tmp_path / "checkout", None)
    results = {name: _check_fork(golden_f32, fork, tmp_path / name) for name, fork in
               (("installed", installed), ("checkout", checkout))}  # fmt: skip
    for name, process in results.items():  # the same code as the official package: the numbers still conform
        assert process.returncode == 0, (name, process.stderr[-2000:])
    summaries = {name: json.loads((tmp_path / name / "summary.json").read_text()) for name in results}

    fork = summaries["installed"]
    assert fork["candidate"].startswith("qwen-tts-fork 0.2.0, not the recorded qwen-tts 0.1.1 (transformers ")
    assert fork["candidate_provenance"]["package"]["location"] == str((installed / "qwen_tts").resolve())
    assert [(d["field"], d["candidate"]) for d in fork["provenance_differences"]] == [
        ("official_package", "qwen-tts-fork"), ("official_version", "0.2.0")]  # fmt: skip
    source = summaries["checkout"]
    where = str((checkout / "qwen_tts").resolve())
    assert source["candidate"].startswith(f"qwen_tts from {where}, not the recorded qwen-tts 0.1.1")
    assert source["candidate_provenance"]["package"]["distribution"] is None
    assert [d["field"] for d in source["provenance_differences"]] == ["official_package"]
    assert not fork["candidate"].startswith("official") and not source["candidate"].startswith("official")

    for name, summary in summaries.items():
        markdown = (tmp_path / name / "summary.md").read_text()
        assert "**The candidate is not what the golden was recorded with**" in markdown
        for difference in summary["provenance_differences"]:
            line = f"{difference['field']}: the golden was recorded with {difference['golden']}, the candidate ran " \
                   f"{difference['candidate']}"  # fmt: skip
            assert f"> - {line}" in markdown
            properties = ET.parse(tmp_path / name / "junit.xml").getroot().find("testsuite/properties")
            assert properties is not None
            assert (
                properties.find(f"property[@name='provenance_difference.{difference['field']}']").get("value") == line
            )
            assert f"<li>{line}</li>" in _header(tmp_path / name / "index.html")
        assert f"candidate {summary['candidate_provenance']['package']['import']} from" in results[name].stderr
    headers = {name: _header(tmp_path / name / "index.html") for name in results}
    assert headers["installed"] != headers["checkout"]
    assert "qwen-tts-fork 0.2.0" in headers["installed"] and where in headers["checkout"]
