"""`conformance dump` and `conformance.capture.dump`: a torch implementation (the installed official package,
or a fork of it) dumped in the port contract and checked through the language-neutral path, without a map."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from safetensors import safe_open  # noqa: E402

from conformance.cli import main as cli_main  # noqa: E402
from conformance.store import GoldenStore  # noqa: E402

pytestmark = pytest.mark.official
ROOT = Path(__file__).resolve().parents[2]
POLICY = ROOT / "conformance-policy.toml"
CASES = ["codec_decode_short", "tts_custom_voice"]
SNAKE = "speech_tokenizer.decoder.decoder.2.block.2.act1"


def run_cli(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        code = cli_main([str(a) for a in args])
    except SystemExit as exc:  # argparse usage errors
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def check_dump(capsys: pytest.CaptureFixture[str], golden: Path, dump: Path, reports: Path,
               cases: list[str]) -> tuple[int, dict]:  # fmt: skip
    code, _, _ = run_cli(capsys, "check", "--goldens", golden, "--candidate", f"dump:{dump}", "--cases", *cases,
                         "--policy", POLICY, "--reports", reports, "--no-html", "-q")  # fmt: skip
    return code, json.loads((reports / "summary.json").read_text())


def test_the_installed_official_package_dumped_by_the_cli_passes_bit_for_bit(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, golden_f32: Path
) -> None:
    code, out, err = run_cli(capsys, "dump", "--goldens", golden_f32, "--cases", *CASES, "-o", tmp_path / "dumps")
    assert code == 0, err
    assert "check it: conformance check" in out
    for case in CASES:
        with safe_open(str(tmp_path / "dumps" / f"{case}.safetensors"), "np") as handle:
            metadata = handle.metadata()
            names = list(handle.keys())
        assert metadata["case"] == case
        candidate = json.loads(metadata["candidate"])
        assert candidate["distribution"] == "qwen-tts" and candidate["version"] == "0.1.1"
        assert metadata["transformers"] == __import__("transformers").__version__
        assert names and all("#" in name and "/outputs" in name for name in names)
    code, summary = check_dump(capsys, golden_f32, tmp_path / "dumps", tmp_path / "reports", CASES)
    assert code == 0 and summary["verdict"] == "pass"
    outputs = [t for case in summary["cases"] for t in case["tensors"] if t["role"].startswith("outputs")]
    assert len(outputs) > 900 and {t["status"] for t in outputs} == {"pass"}
    floats = [t for t in outputs if t["metrics"] and "exact" in t["metrics"]]
    assert floats and all(t["metrics"]["exact"] for t in floats)  # the same code on the same inputs: same bits
    notes = [note for case in summary["cases"] for note in case["notes"]]
    assert any("0 matched nothing" in note for note in notes), notes


def test_a_hand_written_fork_with_one_module_changed_is_caught_and_blamed_through_its_dump(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, golden_f32: Path, tiny_checkpoint: Path
) -> None:
    """The Python API as a fork's author meets it: their own torch model (here the official codec, loaded by
    hand, whose SnakeBeta activation a 'fork' changed by 0.1%), roots by golden prefix, a function running
    the case on the golden's inputs. The unchanged model passes; the changed one fails, blamed on the module."""
    from conformance.capture.dump import dump_case
    from conformance.subjects.qwen3_tts.record import CheckpointSource, OfficialModels, method_specs

    case = "codec_decode_short"
    torch.set_num_threads(1)  # the golden's thread count
    codec = OfficialModels(CheckpointSource.from_path(tiny_checkpoint), "float32", "eager").codec()
    roots = {"speech_tokenizer": codec.model}
    with GoldenStore(golden_f32) as store:
        codes = store.case(case).input("codes")

    def run() -> None:
        codec.decode([{"audio_codes": codes[0]}])

    dump_case(roots, run, tmp_path / "same" / f"{case}.safetensors", case=case, methods=method_specs(roots))
    code, summary = check_dump(capsys, golden_f32, tmp_path / "same", tmp_path / "r-same", [case])
    assert code == 0, summary["counts"]

    snake = codec.model.get_submodule(SNAKE[len("speech_tokenizer.") :])
    original = snake.forward
    snake.forward = lambda x: original(x) * (1 + 1e-3)  # the fork's change: its hooks still fire
    dump_case(roots, run, tmp_path / "fork" / f"{case}.safetensors", case=case, methods=method_specs(roots))
    code, summary = check_dump(capsys, golden_f32, tmp_path / "fork", tmp_path / "r-fork", [case])
    assert code == 1 and summary["verdict"] == "fail"
    assert summary["cases"][0]["blame"]["chained"]["key"] == SNAKE


def test_a_dump_of_a_run_that_calls_no_hooked_module_is_refused(tmp_path: Path) -> None:
    from conformance.capture.dump import dump_case
    from conformance.errors import UsageError

    with pytest.raises(UsageError, match="nothing to dump"):
        dump_case({"": torch.nn.Linear(2, 2)}, lambda: None, tmp_path / "d.safetensors")
    assert not list(tmp_path.iterdir())


def test_an_installed_package_that_raises_gives_exit_2_in_one_line_and_no_dump(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, golden_f32: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from conformance.subjects.qwen3_tts.checkpoints import official

    def broken(self: object, *args: object, **kwargs: object) -> None:
        raise RuntimeError("this fork's decode is broken")

    monkeypatch.setattr(official().inference_tokenizer.Qwen3TTSTokenizer, "decode", broken)
    code, _, err = run_cli(capsys, "dump", "--goldens", golden_f32, "--cases", "codec_decode_short",
                           "-o", tmp_path / "dumps")  # fmt: skip
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert "RuntimeError while running case codec_decode_short: this fork's decode is broken" in lines[0]
    assert not list((tmp_path / "dumps").glob("*.safetensors"))


def test_a_case_the_golden_lacks_exits_2_and_writes_nothing(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                           golden_f32: Path) -> None:  # fmt: skip
    code, _, err = run_cli(capsys, "dump", "--goldens", golden_f32, "-o", tmp_path / "d", "--cases", "no_such_case")
    assert code == 2 and "no case 'no_such_case' in the golden store" in err
    assert not (tmp_path / "d").exists()


def test_a_missing_golden_exits_2_naming_it(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run_cli(capsys, "dump", "--goldens", tmp_path / "missing.h5", "-o", tmp_path / "d")
    assert code == 2 and f"{tmp_path / 'missing.h5'}: no such file" in err


def test_recorded_inputs_replace_the_runners_own(golden_f32: Path) -> None:
    """The dump answers the golden's inputs, even where the runner would make others."""
    from conformance.subjects.qwen3_tts.dump import RecordedIO

    with GoldenStore(golden_f32) as store:
        case = store.case("codec_decode_short")
        io = RecordedIO(case, "tiny")
        given = io.input("codes", np.zeros((1, 3, 16), dtype=np.int64))
        assert np.array_equal(given, case.input("codes")) and given is not case.input("codes")
        assert io.input("not_recorded", 7) == 7


def test_a_fork_that_fails_on_import_gives_exit_2_in_one_line_naming_it(tmp_path: Path, golden_f32: Path) -> None:
    """What the official qwen-tts 0.1.1 does on transformers 5.x (a decorator whose signature changed raises
    at import time): here a fork on the path ahead of the installed package, raising the same way."""
    import os
    import subprocess
    import sys

    fork = tmp_path / "fork" / "qwen_tts"
    fork.mkdir(parents=True)
    (fork / "__init__.py").write_text(
        "raise TypeError(\"check_model_inputs() missing 1 required positional argument: 'func'\")\n"
    )
    env = {**os.environ, "PYTHONPATH": str(fork.parent)}
    done = subprocess.run([sys.executable, "-m", "conformance.cli", "dump", "--goldens", str(golden_f32), "--cases",
                           "codec_decode_short", "-o", str(tmp_path / "dumps")], capture_output=True, text=True,
                          env=env, timeout=300)  # fmt: skip
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert (
        f"from {fork})" in lines[0]
        and "raised TypeError while loading the model of case codec_decode_short" in lines[0]
    )
    assert not (tmp_path / "dumps").exists()


GUIDE = ROOT / "docs" / "forks.md"


def _blocks(language: str) -> list[str]:
    import re

    return [
        body for label, body in re.findall(r"```(\w*)\n(.*?)```", GUIDE.read_text(), flags=re.S) if label == language
    ]


def test_the_fork_guides_python_example_runs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (code,) = _blocks("python")
    monkeypatch.chdir(ROOT)
    exec(compile(code, str(GUIDE), "exec"), {"__name__": "__docs__"})
    assert "exit 1, blamed speech_tokenizer.decoder.decoder.2.block.2.act1#0" in capsys.readouterr().out


def test_the_fork_guides_commands_parse() -> None:
    import shlex

    from conformance.cli import build_parser

    lines = [line.split(" #")[0] for block in _blocks("") for line in block.splitlines()]
    commands = [shlex.split(line)[1:] for line in lines if line.startswith("conformance ")]
    assert {words[0] for words in commands} == {"dump", "check"}
    parser = build_parser()
    for words in commands:
        parser.parse_args(words)  # exits 2 on an option the command line does not have
