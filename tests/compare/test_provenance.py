"""Candidate provenance: which distribution provided the package a Python candidate imported (an installed
fork, an editable install, a source checkout shadowing an installed one), and every difference from the
golden's provenance called out in each report. The forks are built here from the installed official package."""

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
from conformance.compare.provenance import package_label, package_provenance, provenance_differences
from conformance.store import GoldenStore
from conformance.subjects.qwen3_tts.impl_binding import ImplCandidate

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = {"official_package": "qwen-tts", "official_version": "0.1.1", "transformers": "4.57.3", "torch": "2.13.0+cpu"}


def make_package(root: Path, name: str, files: dict[str, str] | None = None) -> Path:
    package = root / name
    package.mkdir(parents=True)
    for relative, text in (files or {"__init__.py": "VALUE = 1\n"}).items():
        (package / relative).parent.mkdir(parents=True, exist_ok=True)
        (package / relative).write_text(text)
    return package


def make_dist_info(
    site: Path, dist: str, version: str, top: str, files: list[str], editable: Path | None = None
) -> None:
    """The dist-info pip writes: METADATA, RECORD (the files the distribution owns), top_level.txt, and for an
    editable install the PEP 610 direct_url.json pointing at the source folder."""
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "top_level.txt").write_text(f"{top}\n")
    record = [*files, f"{info.name}/METADATA", f"{info.name}/RECORD"]
    (info / "RECORD").write_text("".join(f"{path},,\n" for path in record))
    if editable is not None:
        (info / "direct_url.json").write_text(json.dumps({"url": editable.as_uri(), "dir_info": {"editable": True}}))


def test_an_installed_distribution_is_named_with_its_version_and_location(tmp_path: Path, monkeypatch) -> None:
    site = tmp_path / "site"
    package = make_package(site, "portpkg_installed")
    make_dist_info(site, "portpkg-fork", "0.2.0", "portpkg_installed", ["portpkg_installed/__init__.py"])
    monkeypatch.syspath_prepend(str(site))
    __import__("portpkg_installed")
    found = package_provenance("portpkg_installed")
    assert found["imported"] and (found["distribution"], found["version"]) == ("portpkg-fork", "0.2.0")
    assert found["location"] == str(package.resolve()) and found["install"] == "installed"
    assert package_label(found) == "portpkg-fork 0.2.0"


def test_a_source_checkout_shadowing_an_installed_distribution_is_not_called_by_its_name(tmp_path: Path,
                                                                                        monkeypatch) -> None:  # fmt: skip
    site, checkout = tmp_path / "site", tmp_path / "checkout"
    make_package(site, "portpkg_shadowed")
    make_dist_info(site, "portpkg", "1.0.0", "portpkg_shadowed", ["portpkg_shadowed/__init__.py"])
    source = make_package(checkout, "portpkg_shadowed")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.syspath_prepend(str(checkout))  # first on sys.path: the one that is imported
    found = package_provenance("portpkg_shadowed")
    assert found["distribution"] is None and found["version"] is None
    assert found["location"] == str(source.resolve()) and found["install"].startswith("source checkout")
    assert found["shadows"] == [f"portpkg 1.0.0 at {site}"]
    assert package_label(found) == f"portpkg_shadowed from {source.resolve()}"


def test_an_editable_install_is_found_through_its_direct_url(tmp_path: Path, monkeypatch) -> None:
    site, checkout = tmp_path / "site", tmp_path / "work"
    make_package(checkout, "portpkg_editable")
    make_dist_info(site, "portpkg-dev", "0.3.0.dev1", "portpkg_editable", [], editable=checkout)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.syspath_prepend(str(checkout))
    found = package_provenance("portpkg_editable")
    assert (found["distribution"], found["version"], found["install"]) == ("portpkg-dev", "0.3.0.dev1", "editable")
    assert package_provenance("no_such_package_here") == {"import": "no_such_package_here", "imported": False,
        "distribution": None, "version": None, "location": None,
        "error": "no package 'no_such_package_here' is importable"}  # fmt: skip


def test_differences_are_the_stated_fields_that_differ_from_the_recording() -> None:
    same = {"compared_with_golden": {**GOLDEN, "official_package": "Qwen_TTS"}}  # the same project by PEP 503
    assert provenance_differences(GOLDEN, same) == []
    fork = {"compared_with_golden": {"official_package": "qwen-tts-fork", "official_version": "0.2.0",
                                     "transformers": "5.0.0", "torch": None}}  # fmt: skip
    assert provenance_differences(GOLDEN, fork) == [
        {"field": "official_package", "golden": "qwen-tts", "candidate": "qwen-tts-fork"},
        {"field": "official_version", "golden": "0.1.1", "candidate": "0.2.0"},
        {"field": "transformers", "golden": "4.57.3", "candidate": "5.0.0"},
    ]
    assert provenance_differences(GOLDEN, {"kind": "impl"}) == []  # the impl states nothing to compare


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
