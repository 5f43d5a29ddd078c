"""The calibration fallback's own parts (numpy only): the policy's fallback_factor, the run-wide notes naming
the cases that fell back, and the summary.md that shows them."""

from __future__ import annotations

from pathlib import Path

import pytest

from conformance.compare.engine import calibration_notes, fallback_note
from conformance.compare.policy import FALLBACK_FACTOR, load_policy, parse_policy
from conformance.compare.results import CaseResult, RunResult
from conformance.errors import PolicyError
from conformance.report.writers import write_markdown
from tests.conftest import ToyGoldens

ROOT = Path(__file__).resolve().parents[2]


def test_the_project_policy_and_the_built_in_one_share_the_measured_factor() -> None:
    assert load_policy(ROOT / "conformance-policy.toml").calibration.fallback_factor == FALLBACK_FACTOR
    assert load_policy(None).calibration.fallback_factor == FALLBACK_FACTOR
    assert parse_policy({"calibration": {"fallback_factor": 40}}).calibration.fallback_factor == 40.0


@pytest.mark.parametrize("value", [0.5, 0, -3, float("nan"), float("inf"), "16", True])
def test_a_fallback_factor_that_would_tighten_or_switch_off_the_check_is_refused(value: object) -> None:
    with pytest.raises(PolicyError, match="fallback_factor") as caught:
        parse_policy({"calibration": {"fallback_factor": value}}, "p.toml")
    assert str(caught.value).startswith("p.toml: ") and "\n" not in str(caught.value)


def _case(name: str, *notes: str) -> CaseResult:
    return CaseResult(name, "family", "float32", ["chained"], notes=list(notes))


def test_run_notes_name_the_cases_that_fell_back_once_per_reason() -> None:
    policy = load_policy(None)
    missing, codes = (
        fallback_note("no reference", policy),
        fallback_note("the float64 reference generated different codes", policy),
    )
    cases = [_case("a", missing, "an unrelated note"), _case("b", missing), _case("c", codes), _case("d")]
    assert calibration_notes(cases) == [f"{missing} (2 case(s): a, b)", f"{codes} (1 case(s): c)"]
    assert calibration_notes(cases[:2]) == [f"{missing} (every case)"]
    assert calibration_notes([_case("d", "an unrelated note")]) == []


def test_summary_md_shows_the_run_notes(tmp_path: Path) -> None:
    run = RunResult("impl", "g.h5", {}, "", "", 0.0, {}, cases=[_case("a")], modes=["chained"])
    run.notes = [fallback_note("no reference", load_policy(None))]
    text = write_markdown(run.to_json(), tmp_path / "summary.md", None)
    assert f"> **Note:** {run.notes[0]}" in text


def test_a_float64_reference_that_generated_other_tokens_is_not_used_and_the_case_says_so(toy: ToyGoldens) -> None:
    """Chained noise between two runs whose generated tokens differ is not noise: the case falls back."""
    import numpy as np

    from conformance.compare.engine import reference_case
    from conformance.store import GoldenStore

    class OtherCodes:  # a float64 reference whose generation took another token somewhere
        def __init__(self, case: object) -> None:
            self.case_ = case

        def output(self, name: str) -> object:
            value = self.case_.output(name)
            return value + 1 if isinstance(value, np.ndarray) and value.dtype.kind in "iu" else value

    class Reference:
        path = Path("ref.h5")

        def __init__(self, case: object) -> None:
            self.cases, self.wrapped = [case.name], OtherCodes(case)

        def case(self, name: str) -> object:
            return self.wrapped

    policy = load_policy(None)
    with GoldenStore(toy.golden) as store:
        case = store.case("toy_greedy")
        result = _case("toy_greedy")
        assert reference_case(Reference(case), case, policy, result.notes) is None
    (note,) = result.notes
    assert note == fallback_note("the float64 reference generated different tokens", policy)
