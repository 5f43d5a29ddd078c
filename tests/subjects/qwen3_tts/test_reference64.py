"""One recording is enough to check against: `record` writes the clean float64 twin beside the golden and names
it, `check` finds it, both files appear together or not at all, and a check without a usable twin says that
its chained thresholds fell back (console, summary.json, summary.md) without failing a correct candidate."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("torch")

from conformance.cli import main as cli_main
from conformance.compare import engine
from conformance.store import GoldenStore

pytestmark = pytest.mark.official
ROOT = Path(__file__).resolve().parents[3]
POLICY = ROOT / "conformance-policy.toml"
CASE = "codec_decode_short"  # a case whose chained thresholds fail the impl when they fall back to bare isolated noise


def run_cli(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        code = cli_main([str(a) for a in args])
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path) -> Path:
    """`conformance record` of one case, as a user runs it (its float64 twin is on by default)."""
    out = tmp_path_factory.mktemp("record") / "golden.h5"
    # --oracle: the default without --checkpoint (what the README's flow runs), off with one
    assert cli_main(["record", "--checkpoint", str(tiny_checkpoint), "--oracle", "--cases", CASE, "-o", str(out)]) == 0
    return out


def check(capsys: pytest.CaptureFixture[str], golden: Path, reports: Path, *extra: str) -> tuple[int, str, dict]:
    code, _, err = run_cli(capsys, "check", "--goldens", golden, "--candidate", "impl", "--policy", POLICY,
                           "--reports", reports, "--no-html", *extra)  # fmt: skip
    return code, err, json.loads((reports / "summary.json").read_text())


def chained_sources(summary: dict) -> set[str]:
    return {t["source"] for c in summary["cases"] for t in c["tensors"]
            if t["mode"] == "chained" and t["role"].startswith("outputs") and t["source"].startswith("calibrated")}  # fmt: skip


def test_record_writes_the_float64_twin_beside_the_golden_and_names_it(recorded: Path) -> None:
    twin = recorded.with_name("golden.float64.h5")
    with GoldenStore(recorded) as store, GoldenStore(twin) as reference:
        assert store.float64_reference == {"path": "golden.float64.h5", "recording_id": reference.recording_id}
        assert reference.cases == store.cases == [CASE]
        assert reference.case(CASE).dtype == "float64" and store.case(CASE).dtype == "float32"
        assert reference.float64_reference is None and reference.recording_id != store.recording_id
        assert reference.case(CASE).provenance["seed"] == store.case(CASE).provenance["seed"]
    assert engine.locate_reference(recorded) == engine.ReferenceLookup(twin)
    assert not list(recorded.parent.glob("*.partial-*"))


def test_check_finds_the_twin_and_calibrates_chained_thresholds_on_it(
    capsys: pytest.CaptureFixture[str], recorded: Path, tmp_path: Path
) -> None:
    code, err, summary = check(capsys, recorded, tmp_path)
    assert code == 0 and summary["notes"] == [] and "calibration fallback" not in err
    assert chained_sources(summary) == {"calibrated (k=20.0)"}


def test_without_its_twin_the_check_falls_back_loudly_and_still_passes_the_correct_impl(
    capsys: pytest.CaptureFixture[str], recorded: Path, tmp_path: Path
) -> None:
    alone = tmp_path / "alone" / "golden.h5"
    alone.parent.mkdir()
    shutil.copy(recorded, alone)  # copied without its twin
    code, err, summary = check(capsys, alone, tmp_path / "reports")
    assert code == 0, summary["counts"]
    (note,) = summary["notes"]
    assert (
        note.startswith("calibration fallback: the golden names its float64 reference") and "which is missing" in note
    )
    assert "along the data flow, x16 (calibration.fallback_factor)" in note and note.endswith("(every case)")
    assert f"note: {note}" in " ".join(err.split())  # the console (yellow on a terminal), even with the table
    assert note in " ".join((tmp_path / "reports" / "summary.md").read_text().split())
    assert any(n.startswith("calibration fallback") for n in summary["cases"][0]["notes"])
    (source,) = chained_sources(summary)
    assert (
        source == "calibrated (k=20.0), fallback: isolated noise carried along the data flow x16 (no float64 reference)"
    )


def test_the_fallback_still_fails_and_blames_a_real_perturbation(
    capsys: pytest.CaptureFixture[str], recorded: Path, tmp_path: Path
) -> None:
    alone = tmp_path / "golden.h5"
    shutil.copy(recorded, alone)
    owner = "speech_tokenizer.decoder.decoder.2.block.2.conv1.conv"
    code, _, _ = run_cli(capsys, "check", "--goldens", alone, "--candidate",
                           f"official:float32:perturb={owner}.weight@1e-3", "--mode", "chained", "--policy", POLICY,
                           "--reports", tmp_path / "r", "--no-html", "-q")  # fmt: skip
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert code == 1 and summary["notes"][0].startswith("calibration fallback")
    assert summary["cases"][0]["blame"]["chained"]["key"] == owner


def test_a_twin_from_another_recording_is_not_paired(capsys: pytest.CaptureFixture[str], recorded: Path,
                                                      tmp_path: Path, tiny_checkpoint: Path) -> None:  # fmt: skip
    golden = tmp_path / "golden.h5"
    shutil.copy(recorded, golden)
    impostor = tmp_path / "golden.float64.h5"  # the same case, recorded again: same name, another recording
    assert cli_main(["record", "--checkpoint", str(tiny_checkpoint), "--cases", CASE, "--dtype", "float64",
                     "-o", str(impostor)]) == 0  # fmt: skip
    lookup = engine.locate_reference(golden)
    assert lookup.path is None and "is not the float64 reference recorded with this golden" in lookup.note
    code, _, summary = check(capsys, golden, tmp_path / "r")
    assert code == 0 and "recording id differs" in summary["notes"][0]


def test_a_recording_that_fails_leaves_the_previous_pair_as_it_was(recorded: Path, tmp_path: Path,
                                                                   tiny_checkpoint: Path) -> None:  # fmt: skip
    from conformance.subjects.qwen3_tts import cases, record

    golden, twin = tmp_path / "golden.h5", tmp_path / "golden.float64.h5"
    shutil.copy(recorded, golden)
    shutil.copy(recorded.with_name(twin.name), twin)
    before = golden.read_bytes(), twin.read_bytes()

    def fail_in_the_float32_pass(name: str, index: int, total: int) -> None:
        if "float64 reference" not in name:  # the twin is complete by now, not yet in place
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        record.record(golden, cases.select([CASE]), checkpoint=tiny_checkpoint, on_case=fail_in_the_float32_pass)
    assert (golden.read_bytes(), twin.read_bytes()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["golden.float64.h5", "golden.h5"]


def test_no_reference64_records_the_golden_alone_and_the_check_says_so(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, tiny_checkpoint: Path
) -> None:
    golden = tmp_path / "golden.h5"
    code, _, _ = run_cli(capsys, "record", "--checkpoint", tiny_checkpoint, "--oracle", "--cases", CASE,
                           "--no-reference64", "-o", golden)  # fmt: skip
    assert code == 0 and sorted(p.name for p in tmp_path.iterdir()) == ["golden.h5"]
    with GoldenStore(golden) as store:
        assert store.float64_reference is None
    code, _, summary = check(capsys, golden, tmp_path / "r", "-q")
    assert code == 0 and "names no float64 reference" in summary["notes"][0]


def test_reference64_path() -> None:
    from conformance.capture.session import reference64_path

    assert reference64_path("a/golden.h5") == Path("a/golden.float64.h5")
    assert reference64_path("g.hdf5") == Path("g.float64.hdf5")
    assert reference64_path("golden") == Path("golden.float64.h5")
