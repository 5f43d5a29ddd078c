"""Teacher forcing that tests the model: besides each logits head re-run on golden hidden states, every
whole-model generation step (`talker#f`, `talker.code_predictor#c`) is re-run on the golden history and its
top-1 classified. A talker whose second layer is wrong keeps its head-level "agree" but not its model-level one."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("torch")

from conformance.cli import main as cli_main
from conformance.compare import engine
from conformance.compare.policy import load_policy
from conformance.compare.results import RunResult
from conformance.store import GoldenStore
from conformance.subjects.qwen3_tts.impl_binding import ImplCandidate
from conformance.subjects.qwen3_tts.official_binding import OfficialCandidate
from conformance.subjects.qwen3_tts.subject import SUBJECT

POLICY = Path(__file__).resolve().parents[3] / "conformance-policy.toml"
CASE = "tts_custom_voice"
# the talker's second decoder layer with its MLP output zeroed (weight * (1 - 1))
SECOND_LAYER = "talker.model.layers.1.mlp.down_proj.weight"

pytestmark = pytest.mark.official


def teacher_forced(golden: Path, candidate: object) -> RunResult:
    policy = load_policy(POLICY)
    with GoldenStore(golden) as store:
        options = engine.CheckOptions(modes=("isolated",), cases=[CASE], subject=SUBJECT)
        return engine.check(store, candidate, policy, options)  # type: ignore[arg-type]


def by_level(run: RunResult) -> dict[str, list]:
    tokens = run.cases[0].tokens
    return {mode: [t for t in tokens if t.mode == mode] for mode in ("teacher_forced", "teacher_forced_model")}


def test_every_generated_token_is_teacher_forced_through_the_whole_model(golden_f32: Path) -> None:
    """One model-level finding per generated (frame, codebook), with the golden token its head-level twin has:
    talker#f chose codebook 0 of frame f, the code predictor's step c codebook 1 + c mod 3 of frame c div 3."""
    levels = by_level(teacher_forced(golden_f32, ImplCandidate()))
    heads, model = levels["teacher_forced"], levels["teacher_forced_model"]
    assert len(model) == len(heads) > 4 and {t.classification for t in model} == {"agree"}
    assert {t.key for t in model} == {"talker", "talker.code_predictor"}
    with GoldenStore(golden_f32) as store:
        case = store.case(CASE)
        head_tokens = {(t.key, t.call): t.golden_token for t in heads}
        for finding in model:
            at = SUBJECT.logits_for(case, tuple(finding.index))
            assert head_tokens[(at.key, at.call)] == finding.golden_token
    assert finding.axes == ["frame", "codebook"]
    assert sorted(tuple(t.index) for t in model) == sorted({tuple(t.index) for t in model})


def test_a_talker_wrong_before_its_head_disagrees_at_the_model_level(golden_f32: Path) -> None:
    levels = by_level(teacher_forced(golden_f32, OfficialCandidate("float32", perturb=SECOND_LAYER, scale=-1.0)))
    assert {t.classification for t in levels["teacher_forced"]} == {"agree"}  # its head is right
    disagree = [t for t in levels["teacher_forced_model"] if t.classification != "agree"]
    assert disagree and {t.key for t in disagree} == {"talker"} and {t.at("codebook") for t in disagree} == {0}
    assert all(t.classification in ("token_swap", "logit_drift", "near_tie") for t in disagree)


def test_the_reports_headline_the_model_level_count(golden_f32: Path, tmp_path: Path) -> None:
    code = cli_main(["check", "--goldens", str(golden_f32), "--cases", CASE, "--mode", "isolated", "-q",
                     "--candidate", f"official:float32:perturb={SECOND_LAYER}@-1", "--reports", str(tmp_path)])  # fmt: skip
    assert code == 1
    summary_md = (tmp_path / "summary.md").read_text()
    line = next(x for x in summary_md.splitlines() if x.startswith("Teacher-forced top-1 (whole model per step"))
    agree, total = (int(word) for word in line.split(":")[1].split()[:3:2])
    assert 0 < agree < total
    assert f"- {CASE}: {total - agree} of {total} steps disagree, first frame" in summary_md
    page = (tmp_path / "index.html").read_text()
    assert "whole model run for each step on the golden history" in page
    assert f"logits heads alone on golden hidden states: agree {total}" in page
    tokens = json.loads((tmp_path / "summary.json").read_text())["cases"][0]["tokens"]
    counts = Counter(t["classification"] for t in tokens if t["mode"] == "teacher_forced_model")
    assert counts["agree"] == agree and sum(counts.values()) == total
