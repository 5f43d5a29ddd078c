"""Candidate provenance: which distribution provided the package a Python candidate imported (an installed
fork, an editable install, a source checkout shadowing an installed one), and which fields differ from the
golden's provenance (tests/subjects/qwen3_tts/test_provenance.py checks forks of the official package)."""

from __future__ import annotations

import json
from pathlib import Path

from conformance.compare.provenance import package_label, package_provenance, provenance_differences

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
