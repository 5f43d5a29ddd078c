"""Whole check runs on the toy subject through `conformance check` (in-process) and the library: worker processes
give the serial verdicts, `--repeat` flags a nondeterministic port and blames its module, and a port that crashes
(while loading, or mid-case) gets error verdicts with every report written. The ports are the toy's NumPy
candidate changed the way a third party's code goes wrong."""

from __future__ import annotations

import html
import json
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")

from conformance.cli import main as cli_main
from conformance.compare import check_goldens, engine, load_policy
from conformance.compare.results import FAIL, PASS, RunResult
from conformance.ports import CandidateSpec
from conformance.report import write_reports
from conformance.store import GoldenStore
from tests import toy_subject
from tests.conftest import ToyGoldens
from tests.toy_subject import ToyImpl

POLICY = Path(__file__).resolve().parents[2] / "conformance-policy.toml"
CASE = "toy_greedy"
FLAKY = "layers.1.mlp"


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


def verdicts(run: RunResult) -> list[Any]:
    return [(case.case, case.verdict, [(t.key, t.call, t.role, t.mode, t.status, json.dumps(t.metrics, sort_keys=True))
                                       for t in case.tensors]) for case in run.cases]  # fmt: skip


def test_worker_processes_give_the_serial_verdicts(toy: ToyGoldens) -> None:
    """Each worker builds its own candidate from the picklable spec, with the toy subject registered again there
    (it is registered at run time, not installed)."""
    runs = {jobs: check_goldens(toy.golden, CandidateSpec("official:float64"), load_policy(POLICY), jobs=jobs)
            for jobs in (1, 2)}  # fmt: skip
    assert [case.case for case in runs[2].cases] == ["toy_prefill", CASE]
    assert verdicts(runs[1]) == verdicts(runs[2]) and runs[1].counts() == runs[2].counts()
    assert runs[2].verdict == PASS and runs[2].candidate == runs[1].candidate == "toy official (float64)"


# -- --repeat ----------------------------------------------------------------------------------------------------


class FlakyImpl(ToyImpl):
    """The NumPy toy whose second MLP adds unseeded noise on runs 2, 4, ...: run 1 conforms to the goldens."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.runs = 0

    def build(self) -> Any:
        model = super().build()
        module = model.get(FLAKY)
        forward = module.forward

        def sometimes_noisy(*args: Any, **kwargs: Any) -> Any:
            out = forward(*args, **kwargs)
            if self.runs % 2 == 0:
                out = out + np.random.default_rng().standard_normal(out.shape).astype(out.dtype) * 1e-3
            return out

        module.forward = sometimes_noisy
        return model

    def run_chained(self, case: Any, sink: Any) -> None:
        self.runs += 1
        super().run_chained(case, sink)


def repeated(toy: ToyGoldens, candidate: Any, repeat: int) -> RunResult:
    with GoldenStore(toy.golden) as store, GoldenStore(toy.reference) as reference:
        options = engine.CheckOptions(modes=("chained",), cases=[CASE], reference=reference, repeat=repeat)
        return engine.check(store, candidate, load_policy(POLICY), options)


def test_a_port_noisy_on_some_runs_is_flagged_and_its_module_blamed(toy: ToyGoldens) -> None:
    run = repeated(toy, FlakyImpl(), 3)
    outcome = run.cases[0]
    assert run.modes == ["chained", "repeat"] and {t.status for t in outcome.outputs("chained")} == {PASS}
    assert run.exit_code == 1 and outcome.verdict == FAIL
    blame = outcome.blame["repeat"]
    assert blame is not None and (blame.key, blame.call, blame.kind) == (FLAKY, 0, "module")
    assert blame.reason.startswith(f"nondeterministic candidate: {FLAKY} differs between runs 1 and 2")
    failing = [t for t in outcome.tensors if t.mode == "repeat" and t.status == FAIL]
    assert failing and all(t.metrics["differing_runs"] == [2] for t in failing)  # run 3 is clean again


def test_a_deterministic_port_passes_a_repeated_check(toy: ToyGoldens) -> None:
    outcome = repeated(toy, ToyImpl(), 2).cases[0]
    assert len(outcome.outputs("repeat")) == len(outcome.outputs("chained")) > 0
    assert {t.status for t in outcome.outputs("repeat")} == {PASS} and outcome.blame["repeat"] is None


def test_check_repeat_through_the_command_line(toy: ToyGoldens, tmp_path: Path, conformance_cli: Callable[..., Any],
                                               monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setattr(toy_subject, "ToyImpl", FlakyImpl)  # what `--candidate impl` builds for the toy subject
    code, err = conformance_cli("check", "--goldens", toy.golden, "--cases", CASE, "--mode", "chained", "--repeat",
                                "3", "--reports", tmp_path, "-q")  # fmt: skip
    line = f"{CASE}: nondeterministic candidate: {FLAKY} differs between runs 1 and 2"
    assert code == 1 and line in err and line in (tmp_path / "summary.md").read_text()
    assert f'<testcase classname="{CASE}.repeat" name="{FLAKY}"' in (tmp_path / "junit.xml").read_text()
    assert "First divergence (repeat)" in (tmp_path / "index.html").read_text()


def test_runs_are_compared_by_fingerprints_not_kept_arrays() -> None:
    prints = engine.Fingerprints()
    value = np.arange(6, dtype=np.float32).reshape(2, 3)
    prints("m", "call", (value,), {"mask": np.ones(3, bool)}, None)
    prints("m", "return", (), {}, {"out": value * 2})
    assert prints.calls == {("m", 0): 0}
    stored = prints.prints[("m", 0)]
    assert set(stored) == {"args/0", "kwargs/mask", "outputs/out"}
    assert all(isinstance(crc, int) and isinstance(shape, tuple) and isinstance(dtype, str)
               for crc, shape, dtype in stored.values())  # fmt: skip
    assert stored["args/0"] != stored["outputs/out"] and stored["args/0"][1:] == ((2, 3), "<f4")


@pytest.mark.parametrize(("extra", "message"), [
    (["--repeat", "0"], "--repeat must be at least 1"),
    (["--repeat", "2", "--mode", "isolated"], "--repeat needs the chained mode"),
])  # fmt: skip
def test_a_repeat_that_cannot_run_is_a_usage_error(toy: ToyGoldens, tmp_path: Path, extra: list[str], message: str,
                                                    conformance_cli: Callable[..., Any]) -> None:  # fmt: skip
    code, err = conformance_cli("check", "--goldens", toy.golden, "--reports", tmp_path / "r", *extra)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and message in lines[0], err
    assert not (tmp_path / "r").exists()


# -- crashes -------------------------------------------------------------------------------------------------------


def reports_of(folder: Path) -> tuple[dict[str, Any], str, ET.Element, str]:
    summary = json.loads((folder / "summary.json").read_text())
    return (summary, (folder / "summary.md").read_text(), ET.parse(folder / "junit.xml").getroot(),
            html.unescape((folder / "index.html").read_text()))  # fmt: skip


class FixedBufferPort(ToyImpl):
    """A port whose second block copies its input into a buffer preallocated for 4 positions: the prefill (6) and
    the fourth decoding step raise numpy's broadcasting error, after the first modules ran."""

    def build(self) -> Any:
        model = super().build()
        block = model.get("layers.1")
        forward = block.forward

        def with_buffer(hidden_states: np.ndarray, attention_mask: Any = None) -> np.ndarray:
            buffer = np.zeros((hidden_states.shape[0], 4, hidden_states.shape[2]), hidden_states.dtype)
            buffer[...] = hidden_states
            return forward(buffer, attention_mask=attention_mask)

        block.forward = with_buffer
        return model


def test_a_port_that_raises_mid_case_keeps_what_it_produced_before_and_errors_the_case(toy: ToyGoldens,
                                                                                        tmp_path: Path) -> None:  # fmt: skip
    with GoldenStore(toy.golden) as store:
        run = engine.check(store, FixedBufferPort(), load_policy(POLICY), engine.CheckOptions(modes=("chained",),
                                                                                              cases=["toy_prefill"]))  # fmt: skip
    outcome = run.cases[0]
    assert run.exit_code == 2 and outcome.verdict == "error"
    assert outcome.error is not None and (outcome.error.stage, outcome.error.type) == ("chained", "ValueError")
    assert "could not broadcast" in outcome.error.message and "with_buffer" in outcome.error.traceback
    judged = [t for t in outcome.outputs() if t.status == PASS]
    unreached = [t for t in outcome.outputs() if t.status == "error"]
    assert judged and unreached and max(t.seq_end for t in judged) < min(t.seq_end for t in unreached)
    assert all(t.message.startswith("not reached") for t in unreached)
    write_reports(run, tmp_path)
    summary, markdown, junit, page = reports_of(tmp_path)
    assert summary["cases"][0]["error"]["stage"] == "chained" and f"- toy_prefill: {outcome.error.line}" in markdown
    assert (
        junit.find("testsuite[@name='toy_prefill.chained']/testcase[@name='(the candidate crashed)']/error") is not None
    )
    assert 'data-stage="chained"' in page and outcome.error.line in page


def test_a_port_whose_construction_raises_errors_every_case_with_reports_written(
    toy: ToyGoldens, tmp_path: Path, conformance_cli: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    def cannot_load(self: Any, *args: Any, **kwargs: Any) -> None:
        raise OSError("libtoy_kernels.so: cannot open shared object file: No such file or directory")

    monkeypatch.setattr(ToyImpl, "__init__", cannot_load)
    code, err = conformance_cli("check", "--goldens", toy.golden, "--candidate", "impl", "--reports", tmp_path)
    errors = [line for line in err.splitlines() if line.startswith("conformance: error:")]
    assert code == 2 and errors == ["conformance: error: the candidate crashed on case toy_prefill (and 1 more "
                                    "case(s)): OSError while loading the candidate: libtoy_kernels.so: cannot open "
                                    "shared object file: No such file or directory"]  # fmt: skip
    summary, _markdown, junit, page = reports_of(tmp_path)
    assert summary["candidate"] == "impl (failed to load)"
    assert [(c["verdict"], c["error"]["stage"]) for c in summary["cases"]] == [("error", "load")] * 2
    assert len(junit.findall("testsuite/testcase/error")) == 2 and page.count('data-stage="load"') == 2


def test_check_help_and_readme_state_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli_main(["check", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "0 conform (or partial with --allow-partial)" in text
    assert "1 a divergence beyond policy, or golden tensors not covered or met with an interface mismatch" in text
    assert "2 bad input or usage" in text and "a candidate that crashed while loading or running a case" in text
    readme = " ".join((Path(__file__).resolve().parents[2] / "README.md").read_text().split())
    assert "**2** bad input or usage, or a candidate that crashed" in readme
