"""The subject registry: built-in, installed (an entry point of a distribution on the path) and registered subjects;
cases found by name across subjects; a golden case's subject; the per-subject goldens manifest and the project job
that checks every subject's stores."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conformance import project, subjects
from conformance.cli import main
from conformance.compare.policy import parse_policy
from conformance.errors import PolicyError, StoreError, UsageError
from conformance.store import GoldenStore, GoldenWriter, manifest
from tests.conftest import ToyGoldens
from tests.toy_subject import NAME, SUBJECT, ToySubject


@pytest.fixture
def toy_registered() -> None:
    subjects.register(SUBJECT, replace=True)


def install(site: Path, module: str, source: str, entry: str) -> None:
    """A distribution on `site` (put on sys.path) whose entry point in conformance.subjects is `entry`."""
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{module}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[{subjects.ENTRY_POINT_GROUP}]\n{entry}\n")


def test_an_installed_package_adds_a_subject_by_entry_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install(tmp_path, "their_subject", """
        from conformance.subjects import Subject

        class Theirs(Subject):
            name = "theirs"
            title = "Their model"

        SUBJECT = Theirs()
    """, "theirs = their_subject:SUBJECT")  # fmt: skip
    install(tmp_path, "broken_subject", "raise ImportError('needs their_runtime')\n",
            "broken = broken_subject:SUBJECT")  # fmt: skip
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(subjects, "_loaded", {})
    assert {"qwen3_tts", "theirs", "broken"} <= set(subjects.names())
    assert subjects.get("theirs").title == "Their model" and subjects.get("theirs") is subjects.get("theirs")
    with pytest.raises(UsageError, match=r"subject 'broken' \(entry point broken_subject:SUBJECT\) failed to load: "
                                         "ImportError: needs their_runtime"):  # fmt: skip
        subjects.get("broken")
    with pytest.raises(UsageError, match="no subject 'absent' is installed"):
        subjects.get("absent")
    sys.modules.pop("their_subject", None)


def test_the_registry_imports_neither_numpy_nor_torch_and_the_built_in_subject_no_torch() -> None:
    script = ("import sys\nfrom conformance import subjects\nassert not {'numpy', 'torch'} & set(sys.modules)\n"
              "qwen = subjects.get('qwen3_tts')\nprint(qwen.title, len(qwen.cases()), qwen.official.import_name)\n"
              "assert 'torch' not in sys.modules, 'the subject imported torch'\n")  # fmt: skip
    process = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert process.returncode == 0, process.stderr
    from conformance.subjects.qwen3_tts.cases import CASES

    assert process.stdout.split() == ["Qwen3-TTS", str(len(CASES)), "qwen_tts"]


def test_cases_are_found_by_name_or_qualified_and_ambiguous_names_are_refused(toy_registered: None) -> None:
    assert [(s.name, c.name) for s, c in subjects.find_cases(["toy_greedy", "qwen3_tts:end_to_end"])] == [
        (NAME, "toy_greedy"), ("qwen3_tts", "end_to_end")]  # fmt: skip
    assert [c.name for _, c in subjects.find_cases(None, NAME)] == ["toy_prefill", "toy_greedy"]
    twin = type("Twin", (ToySubject,), {"name": "toy_twin"})()
    subjects.register(twin)
    try:
        with pytest.raises(UsageError, match="belongs to several subjects: qualify it"):
            subjects.find_cases(["toy_greedy"])
        assert subjects.find_cases(["toy_twin:toy_greedy"])[0][0] is twin
    finally:
        subjects.unregister("toy_twin")
    with pytest.raises(UsageError, match="unknown case 'nope'"):
        subjects.find_cases(["nope"])


def test_a_store_of_two_subjects_names_no_one_subject(tmp_path: Path, toy_registered: None) -> None:
    path = tmp_path / "g.h5"
    with GoldenWriter(path, command="t", software={}) as writer:
        for name, subject in (("a", NAME), ("b", "qwen3_tts")):
            with writer.case(name, {"subject": subject}):
                pass
    with GoldenStore(path) as store:
        assert subjects.for_store(store, ["a"]) is SUBJECT
        with pytest.raises(UsageError, match="the cases come from several subjects"):
            subjects.for_store(store)


def test_list_cases_lists_every_subject_or_one(capsys: pytest.CaptureFixture[str], toy_registered: None) -> None:
    assert main(["list-cases"]) == 0
    out = capsys.readouterr().out
    assert "subject qwen3_tts" in out and f"subject {NAME}" in out and "toy_greedy" in out
    assert main(["list-cases", "--subject", NAME]) == 0
    out = capsys.readouterr().out
    assert "toy_greedy" in out and "end_to_end" not in out


def test_one_checkpoint_cannot_record_two_subjects(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    toy_registered: None) -> None:  # fmt: skip
    code = main(["record", "--cases", "toy_greedy", "codec_decode_short", "--checkpoint", str(tmp_path), "-o",
                 str(tmp_path / "g.h5")])  # fmt: skip
    assert code == 2 and "--checkpoint is one subject's checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "g.h5").exists()


def test_a_policy_scoped_to_an_unknown_subject_is_refused() -> None:
    with pytest.raises(PolicyError, match=r"rule 1.subject names the subject 'qwen3-tts', which is not installed"):
        parse_policy({"rule": [{"modules": "*", "subject": "qwen3-tts", "rel_l2": 1e-3}]}, "p.toml")
    with pytest.raises(PolicyError, match=r"\[tokens.talker\] names the subject 'talker'"):
        parse_policy({"tokens": {"talker": {"logits": ["head"]}}}, "p.toml")
    with pytest.raises(PolicyError, match=r"unknown key 'logit' in \[tokens.qwen3_tts\]"):
        parse_policy({"tokens": {"qwen3_tts": {"logit": ["head"]}}}, "p.toml")
    policy = parse_policy({"tokens": {"near_tie_margin": 0.5, "qwen3_tts": {"logits": ["head.*"]}}}, "p.toml")
    scoped = policy.for_subject("qwen3_tts", ("other",))
    assert scoped.tokens.logits == ("head.*",) and scoped.tokens.near_tie_margin == 0.5
    assert policy.for_subject(NAME if NAME in subjects.names() else None, ("lm_head",)).tokens.logits == ("lm_head",)


# -- the goldens manifest, per subject ----------------------------------------------------------------------------


def test_the_manifest_is_updated_one_subject_at_a_time(tmp_path: Path) -> None:
    manifest.update_subject(tmp_path, "a", {"stores": [{"path": "a.h5", "dtype": "float32"}]})
    manifest.update_subject(tmp_path, "b", {"stores": [{"path": "b.h5", "dtype": "float64"}]})
    manifest.update_subject(tmp_path, "a", {"stores": [{"path": "a2.h5", "dtype": "float32"}]})
    data = json.loads((tmp_path / "manifest.json").read_text())
    assert data["schema"] == manifest.SCHEMA and list(data["subjects"]) == ["a", "b"]
    assert [(e.subject, e.path.name) for e in manifest.stores(tmp_path)] == [("a", "a2.h5"), ("b", "b.h5")]
    (tmp_path / "manifest.json").write_text(json.dumps({"schema": "conformance-goldens-manifest/1", "stores": []}))
    with pytest.raises(
        StoreError, match=r"manifest\.json: goldens manifest of schema 'conformance-goldens-manifest/1'"
    ):
        list(manifest.stores(tmp_path))


def test_the_committed_manifest_lists_every_store_with_its_hash(goldens_dir: Path) -> None:
    import hashlib

    entries = list(manifest.stores(goldens_dir))
    assert {e.subject for e in entries} >= {"qwen3_tts"}
    for entry in entries:
        assert hashlib.sha256(entry.path.read_bytes()).hexdigest() == entry.entry["sha256"], entry.path


def test_the_project_job_checks_every_store_of_every_subject(toy: ToyGoldens, tmp_path: Path) -> None:
    """A goldens folder with the toy's pair in its manifest: the job checks the subject's own candidate on each
    store, reports under reports/<subject>/ (the other dtypes in a sub-folder), and exits with the worst code."""
    goldens = tmp_path / "goldens"
    goldens.mkdir()
    for path in (toy.golden, toy.reference):
        shutil.copy(path, goldens / path.name)
    manifest.update_subject(goldens, NAME, {"stores": [
        {"path": toy.golden.name, "dtype": "float32", "float64_reference": toy.reference.name},
        {"path": toy.reference.name, "dtype": "float64"}]})  # fmt: skip
    policy = Path(__file__).resolve().parent.parent / "conformance-policy.toml"
    reports = tmp_path / "reports"
    assert project.check(goldens, policy, reports, quiet=True) == 0
    assert json.loads((reports / NAME / "summary.json").read_text())["verdict"] == "pass"
    assert json.loads((reports / NAME / "float64" / "summary.json").read_text())["verdict"] == "pass"
    assert project.check(goldens, policy, tmp_path / "perturbed", "official:perturb=lm_head.weight@-2",
                         quiet=True) == 1  # fmt: skip
    with pytest.raises(Exception, match="lists no golden store of subject qwen3_tts"):
        project.check(goldens, policy, reports, only="qwen3_tts")


def test_regenerating_one_subjects_goldens_rewrites_its_manifest_entry_only(toy: ToyGoldens, tmp_path: Path,
                                                                            capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    other = {"title": "Another model", "stores": []}
    manifest.update_subject(tmp_path, "qwen3_tts", other)
    assert project.goldens(tmp_path, NAME) == 0
    data = json.loads((tmp_path / "manifest.json").read_text())
    assert data["subjects"]["qwen3_tts"] == other and list(data["subjects"]) == ["qwen3_tts", NAME]
    entries = [entry for entry in manifest.stores(tmp_path) if entry.subject == NAME]
    assert [(e.path.name, e.dtype) for e in entries] == [
        (f"{NAME}-float32.h5", "float32"),
        (f"{NAME}-float64.h5", "float64"),
    ]
    assert f"{NAME}: 2 stores" in capsys.readouterr().out
    policy = Path(__file__).resolve().parent.parent / "conformance-policy.toml"
    assert project.check(tmp_path, policy, tmp_path / "reports", only=NAME, quiet=True) == 0
    summary = json.loads((tmp_path / "reports" / NAME / "summary.json").read_text())
    assert summary["verdict"] == "pass" and not summary["notes"]  # calibrated on the pair the manifest names
