"""`check --repeat N`: the candidate runs each case N times; a tensor that differs between runs fails (mode
"repeat") and the first nondeterministic module is blamed. Candidates: the NumPy impl (deterministic), and the
impl with one module that adds fresh random noise on every other run, like a buffer of uninitialised memory."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conformance.cli import main as cli_main
from conformance.compare import engine
from conformance.compare.policy import load_policy
from conformance.compare.results import FAIL, PASS, RunResult
from conformance.ports import candidates
from conformance.store import GoldenStore
from conformance.subjects.qwen3_tts.impl_binding import ImplCandidate
from conformance.subjects.qwen3_tts.subject import SUBJECT

POLICY = Path(__file__).resolve().parents[3] / "conformance-policy.toml"
CASE = "tts_custom_voice"
FLAKY = "talker.model.layers.1.mlp"


class FlakyImpl(ImplCandidate):
    """The impl whose second talker MLP adds unseeded noise on runs 2, 4, ...: run 1 conforms to the goldens."""

    def __init__(self, module: str = FLAKY) -> None:
        super().__init__()
        self.module = module
        self.runs = 0

    def prepare(self, store: GoldenStore, case: Any) -> None:
        super().prepare(store, case)
        module = self.roots[""].get(self.module)
        forward = type(module).forward.__get__(module)

        def sometimes_noisy(*args: Any, **kwargs: Any) -> Any:
            out = forward(*args, **kwargs)
            if self.runs % 2 == 0:
                out = out + np.random.default_rng().standard_normal(out.shape).astype(out.dtype) * 1e-3
            return out

        module.forward = sometimes_noisy

    def run_chained(self, case: Any, sink: Any) -> None:
        self.runs += 1
        super().run_chained(case, sink)


def check(golden: Path, candidate: Any, repeat: int, cases: list[str] | None = None) -> RunResult:
    with GoldenStore(golden) as store, GoldenStore(engine.find_reference(golden)) as reference:
        options = engine.CheckOptions(modes=("chained",), cases=cases or [CASE], reference=reference, subject=SUBJECT,
                                      repeat=repeat)  # fmt: skip
        return engine.check(store, candidate, load_policy(POLICY), options)


def test_a_candidate_noisy_on_some_runs_is_flagged_and_its_module_blamed(golden_f32: Path) -> None:
    run = check(golden_f32, FlakyImpl(), repeat=3)
    outcome = run.cases[0]
    assert run.modes == ["chained", "repeat"] and outcome.modes == ["chained", "repeat"]
    assert {t.status for t in outcome.outputs("chained")} == {PASS}  # run 1 alone conforms to the goldens
    assert run.exit_code == 1 and outcome.verdict == FAIL
    blame = outcome.blame["repeat"]
    assert blame is not None and (blame.key, blame.call, blame.kind) == (FLAKY, 0, "module")
    assert blame.reason.startswith(f"nondeterministic candidate: {FLAKY} differs between runs 1 and 2")
    repeated = [t for t in outcome.tensors if t.mode == "repeat"]
    before = [t for t in repeated if t.seq_end < blame.seq_end]
    assert before and all(t.status == PASS for t in before)
    failing = [t for t in repeated if t.status == FAIL]
    assert failing and all(t.metrics["differing_runs"] == [2] for t in failing)  # run 3 is clean again
    assert all(t.message.startswith("differs between runs 1 and 2") for t in failing)


def test_deterministic_candidates_pass_a_repeated_check(golden_f32: Path) -> None:
    run = check(golden_f32, ImplCandidate(), repeat=2, cases=[CASE, "codec_decode_short"])
    assert run.verdict == PASS and run.exit_code == 0
    for outcome in run.cases:
        repeated = outcome.outputs("repeat")
        assert len(repeated) == len(outcome.outputs("chained")) > 0
        assert {t.status for t in repeated} == {PASS} and outcome.blame["repeat"] is None


@pytest.fixture
def conformance_cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str]]:
    def run(*args: str | Path) -> tuple[int, str]:
        capsys.readouterr()
        try:
            code = cli_main([str(a) for a in args])
        except SystemExit as exc:
            code = int(exc.code or 0)
        return code, capsys.readouterr().err

    return run


def test_check_repeat_through_the_command_line(golden_f32: Path, tmp_path: Path, conformance_cli: Callable[..., Any],
                                               monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    base = ["check", "--goldens", golden_f32, "--cases", CASE, "--mode", "chained", "--repeat"]
    code, err = conformance_cli(*base, "2", "--candidate", "impl", "--reports", tmp_path / "impl", "--no-html")
    assert code == 0, err
    summary = json.loads((tmp_path / "impl" / "summary.json").read_text())
    assert summary["modes"] == ["chained", "repeat"] and summary["cases"][0]["blame"]["repeat"] is None
    assert 'testsuite name="tts_custom_voice.repeat"' in (tmp_path / "impl" / "junit.xml").read_text()

    monkeypatch.setattr(candidates, "make_candidate", lambda *args, **kwargs: FlakyImpl())
    code, err = conformance_cli(*base, "3", "--reports", tmp_path / "flaky", "-q")
    assert code == 1
    line = f"{CASE}: nondeterministic candidate: {FLAKY} differs between runs 1 and 2"
    assert line in err
    assert line in (tmp_path / "flaky" / "summary.md").read_text()
    junit = (tmp_path / "flaky" / "junit.xml").read_text()
    assert f'<testcase classname="{CASE}.repeat" name="{FLAKY}"' in junit
    assert "First divergence (repeat)" in (tmp_path / "flaky" / "index.html").read_text()
