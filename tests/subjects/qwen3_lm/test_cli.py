"""The Qwen3 causal LM through the command line, as a user meets it: recorded from scratch with `conformance record
--subject qwen3_lm` and checked; its impl checked where torch is not installed; bad requests refused in one line
(exit 2) with nothing written."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conformance.cli import main

from ...conftest import GOLDENS, ROOT

GOLDEN = GOLDENS / "qwen3_lm-tiny-float32.h5"
POLICY = ROOT / "conformance-policy.toml"


def test_record_then_check_from_scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("transformers")
    monkeypatch.setenv("CONFORMANCE_CACHE", str(tmp_path / "cache"))
    golden = tmp_path / "lm.h5"
    assert main(["record", "--subject", "qwen3_lm", "--cases", "lm_greedy", "-o", str(golden)]) == 0
    assert (tmp_path / "lm.float64.h5").exists()
    assert (tmp_path / "cache" / "checkpoints" / "qwen3_lm-tiny-seed20260301" / "model.safetensors").exists()
    assert main(["check", "--goldens", str(golden), "--candidate", "impl", "--policy", str(POLICY), "--reports",
                 str(tmp_path / "reports"), "-q"]) == 0  # fmt: skip
    summary = json.loads((tmp_path / "reports" / "summary.json").read_text())
    assert summary["cases"][0]["notes"] == []  # calibrated on the twin `record` wrote


def test_the_impl_is_checked_where_torch_is_not_installed(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None  # importing it raises: as on a port's CI, numpy and h5py only
        from conformance.cli import main
        code = main(["check", "--goldens", {str(GOLDEN)!r}, "--candidate", "impl", "--policy", {str(POLICY)!r},
                     "--reports", {str(tmp_path)!r}, "-q"])
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("transformers",) or m == "torch" and sys.modules[m])
        print("exit", code, "loaded", loaded)
        sys.exit(code or bool(loaded))
    """)  # fmt: skip
    run = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and "exit 0 loaded []" in run.stdout, run.stdout + run.stderr


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["record", "--subject", "qwen3_lm", "--size", "full"], "subject 'qwen3_lm' builds tiny checkpoints, not 'full'"),
        (["record", "--subject", "qwen3_lm", "--attn-implementation", "sdpa"], "loads its model one way"),
        (["record", "--subject", "qwen3_lm", "--checkpoint", "/no/such/folder"], "checkpoint folder not found"),
        (["check", "--goldens", str(GOLDEN), "--candidate", "official:perturb=model.layers.9.mlp.up_proj.weight"],
         "no parameter 'model.layers.9.mlp.up_proj.weight' in the official model of subject 'qwen3_lm'"),
        (["check", "--goldens", str(GOLDEN), "--candidate", "impl:bfloat16"], "impl dtype must be float32 or float64"),
    ],
)  # fmt: skip
def test_bad_requests_are_one_line_errors(arguments: list[str], message: str, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    pytest.importorskip("transformers")
    monkeypatch.setenv("CONFORMANCE_CACHE", str(tmp_path / "cache"))
    out = ["-o", str(tmp_path / "g.h5")] if arguments[0] == "record" else ["--reports", str(tmp_path / "r"), "-q"]
    assert main([*arguments, *out]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("conformance: error:") and message in error and len(error.splitlines()) == 1
    assert not (tmp_path / "g.h5").exists()


def test_a_golden_without_its_checkpoint_names_the_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    moved = tmp_path / GOLDEN.name
    shutil.copy(GOLDEN, moved)  # the committed golden names its checkpoint relative to itself: not beside the copy
    code = main(["check", "--goldens", str(moved), "--candidate", "impl", "--cases", "lm_prefill", "--reports",
                 str(tmp_path / "r"), "-q"])  # fmt: skip
    error = capsys.readouterr().err
    assert code == 2 and "the checkpoint of case 'lm_prefill' is not at" in error and "--checkpoint" in error
    assert main(["check", "--goldens", str(moved), "--candidate", "impl", "--cases", "lm_prefill", "--checkpoint",
                 str(GOLDENS / "checkpoints" / "qwen3_lm-tiny"), "--reports", str(tmp_path / "r"), "-q"]) == 0  # fmt: skip
