"""The check engine on the toy subject (tests/toy_subject.py), through the product's own engine and project policy:
bit-exact replays, blame of a perturbed weight in both modes, calibrated thresholds that pass the official float64
model and fail below its noise, a NumPy port that conforms, 1-D tokens (the first divergent position, ties,
whole-model teacher forcing), and each case dispatched to its subject from the golden."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")

from conformance import subjects
from conformance.compare import engine
from conformance.compare.parallel import run_subject
from conformance.compare.policy import Calibration, load_policy
from conformance.compare.results import FAIL, PASS, RunResult
from conformance.errors import UsageError
from conformance.store import GoldenStore
from tests.conftest import ToyGoldens
from tests.toy_subject import NAME, SUBJECT, ToyImpl, ToyOfficial

POLICY = Path(__file__).resolve().parents[2] / "conformance-policy.toml"
BOTH = ("isolated", "chained")


def run(toy: ToyGoldens, candidate: Any, cases: list[str] | None = None, policy: Any = None,
        modes: tuple[str, ...] = BOTH) -> RunResult:  # fmt: skip
    """A check as the command line runs it: no subject given, each case's found from its golden."""
    with GoldenStore(toy.golden) as store, GoldenStore(toy.reference) as reference:
        options = engine.CheckOptions(modes=modes, cases=cases, reference=reference)
        return engine.check(store, candidate, policy or load_policy(POLICY), options)


def test_the_official_float32_model_replays_its_golden_bit_for_bit(toy: ToyGoldens) -> None:
    result = run(toy, ToyOfficial("float32"))
    assert result.verdict == PASS and result.exit_code == 0
    outputs = [t for case in result.cases for t in case.outputs()]
    assert len(outputs) > 100 and {t.mode for t in outputs} == set(BOTH)
    floats = [t for t in outputs if t.metrics and "max_abs" in t.metrics]
    assert floats and all(t.metrics["exact"] for t in floats), [t.name for t in floats if not t.metrics["exact"]][:5]
    tokens = [t for case in result.cases for t in case.tokens]
    assert {t.mode for t in tokens} == {"teacher_forced", "teacher_forced_model"}
    assert all(t.classification == "agree" for t in tokens)


@pytest.mark.parametrize("owner", ["layers.1.mlp.down_proj", "layers.0.self_attn.o_proj", "embed_positions"])
def test_a_perturbed_weight_is_blamed_on_exactly_its_module(toy: ToyGoldens, owner: str) -> None:
    result = run(toy, ToyOfficial("float32", perturb=f"{owner}.weight", scale=1e-3), ["toy_greedy"])
    assert result.exit_code == 1
    outcome = result.cases[0]
    for mode in BOTH:
        blamed = outcome.blame[mode]
        assert blamed is not None and blamed.key == owner and blamed.kind == "module", (mode, blamed)
        earlier = [t for t in outcome.tensors if t.mode == mode and t.seq_end < blamed.seq_end]
        assert earlier and all(t.status == PASS for t in earlier), [t.name for t in earlier if t.status != PASS][:5]


def test_calibrated_thresholds_pass_the_official_float64_model_and_fail_below_its_noise(toy: ToyGoldens) -> None:
    passing = run(toy, ToyOfficial("float64"))
    assert passing.verdict == PASS
    calibrated = [t for c in passing.cases for t in c.outputs() if t.source.startswith("calibrated")]
    assert len(calibrated) > 50 and {t.mode for t in calibrated} == set(BOTH)
    tight = load_policy(POLICY)
    tight = replace(tight, calibration=Calibration(k=0.25, metrics=("rel_l2", "max_abs"), floor_eps=0.0))
    failing = run(toy, ToyOfficial("float64"), policy=tight)
    assert failing.exit_code == 1 and failing.counts()[FAIL] > 20


def test_a_numpy_port_conforms_in_both_modes_with_every_token_agreeing(toy: ToyGoldens) -> None:
    result = run(toy, ToyImpl())
    failing = [f"{t.name} {t.mode}: {t.message}" for case in result.cases for t in case.tensors if t.status != PASS]
    assert not failing and result.verdict == PASS, failing[:10]
    greedy = next(case for case in result.cases if case.case == "toy_greedy")
    assert greedy.first_divergence is None and greedy.blame == {"isolated": None, "chained": None}
    model_level = [t for t in greedy.tokens if t.mode == "teacher_forced_model"]
    assert [t.index for t in model_level] == [[p] for p in range(6)] and all(
        t.axes == ["position"] for t in model_level
    )
    codes = [t for t in greedy.tensors if (t.mode, t.key, t.role) == ("chained", ":generate", "outputs/0")]
    assert len(codes) == 1 and codes[0].metrics["exact"]


def test_each_case_is_checked_with_its_subject_found_in_the_golden(toy: ToyGoldens) -> None:
    """No subject is given: the engine reads it from each case's provenance and records it for the report."""
    outcome = {case.case: case for case in run(toy, ToyImpl(), modes=("chained",)).cases}
    assert {name: case.subject for name, case in outcome.items()} == {"toy_prefill": NAME, "toy_greedy": NAME}
    assert outcome["toy_greedy"].token_layout == {"location": [":generate", 0, "outputs/0"], "axes": ["position"],
                                                  "step_axis": 0}  # fmt: skip
    assert outcome["toy_prefill"].token_layout is None
    assert outcome["toy_greedy"].signals == [] and outcome["toy_greedy"].to_json()["subject"] == NAME


def test_a_golden_of_a_subject_not_installed_is_judged_tensor_by_tensor_and_says_so(toy: ToyGoldens,
                                                                                    tmp_path: Path) -> None:  # fmt: skip
    """A port's CI may check a dump without the subject's package: the tensors are judged, the tokens are not, and
    the case's note says why; a Python candidate, which only a subject can build, is refused."""
    from conformance.ports import make_candidate

    subjects.unregister(NAME)
    try:
        outcome = run(toy, ToyImpl(), ["toy_greedy"], modes=("chained",)).cases[0]
        with GoldenStore(toy.golden) as store, pytest.raises(UsageError, match="name no one installed subject"):
            make_candidate("impl", run_subject(store, ["toy_greedy"]))
    finally:
        subjects.register(SUBJECT)
    assert outcome.verdict == PASS and outcome.subject is None and not outcome.tokens
    assert outcome.notes[0].startswith(f"no subject {NAME!r} is installed") and "tensor by tensor" in outcome.notes[0]


# -- tokens: one axis, "position" ---------------------------------------------------------------------------------

# the second block's MLP output zeroed (weight * (1 - 1)): positions 0 and 1 still agree, position 2 is a swap
ZEROED_MLP = {"perturb": "layers.1.mlp.down_proj.weight", "scale": -1.0}


def test_free_running_reports_the_first_divergent_position_classified_by_the_golden_margin(toy: ToyGoldens) -> None:
    outcome = run(toy, ToyOfficial("float32", **ZEROED_MLP), ["toy_greedy"], modes=("chained",)).cases[0]
    first = outcome.first_divergence
    assert first is not None and (first["axes"], first["index"], first["position"]) == (["position"], [2], 2), first
    assert first["classification"] == "token_swap" and first["candidate_token"] == first["golden_second"]
    assert first["logits"] == "lm_head#2"
    (found,) = [t for t in outcome.tokens if t.mode == "free_running"]
    assert (found.key, found.call, found.index, found.at("position")) == ("lm_head", 2, [2], 2)


def test_after_a_tie_broken_token_later_chained_failures_are_skipped_not_failed(toy: ToyGoldens,
                                                                                 monkeypatch: Any) -> None:  # fmt: skip
    from conformance.compare import tokens

    real = tokens.classify
    monkeypatch.setattr(engine, "classify", lambda *a, **k: replace(real(*a, **k), classification="near_tie"))
    outcome = run(toy, ToyOfficial("float32", **ZEROED_MLP), ["toy_greedy"], modes=("chained",)).cases[0]
    seq = outcome.first_divergence["seq_end"]
    skipped = [t for t in outcome.tensors if t.status == "skipped"]
    assert skipped and all(t.seq_end > seq and "near_tie at position 2" in t.message for t in skipped)
    assert not [t for t in outcome.tensors if t.status == FAIL and t.seq_end > seq]


def test_a_model_wrong_before_its_head_disagrees_when_teacher_forced_whole(toy: ToyGoldens) -> None:
    """The head re-run on golden hidden states agrees (it is right); the whole model re-run on the golden history
    at each step (the forward call that chose each position) does not."""
    outcome = run(toy, ToyOfficial("float32", perturb="layers.0.mlp.down_proj.weight", scale=-3.0), ["toy_greedy"],
                  modes=("isolated",)).cases[0]  # fmt: skip
    levels = Counter((t.mode, t.classification == "agree") for t in outcome.tokens)
    assert levels == {("teacher_forced", True): 6, ("teacher_forced_model", False): 6}
    assert {t.key for t in outcome.tokens if t.mode == "teacher_forced_model"} == {"(root)"}


def test_the_policy_scopes_token_heads_and_rules_to_a_subject(toy: ToyGoldens, tmp_path: Path) -> None:
    """[tokens.<subject>] replaces the subject's own heads; a rule scoped to another subject does not apply."""
    other = next(name for name in subjects.names() if name != NAME)
    policy = tmp_path / "policy.toml"
    policy.write_text(f'[tokens.{NAME}]\nlogits = ["nothing.here"]\n\n'
                      f'[[rule]]\nmodules = "*"\nsubject = "{other}"\nrel_l2 = 0.0\nmax_abs = 0.0\n')  # fmt: skip
    outcome = run(toy, ToyOfficial("float64"), ["toy_greedy"], policy=load_policy(policy), modes=("isolated",))
    assert outcome.verdict == PASS  # the zero thresholds belong to the other subject
    assert {t.mode for t in outcome.cases[0].tokens} == {"teacher_forced_model"}  # no head is lm_head now
