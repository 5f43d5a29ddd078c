"""The Qwen3 causal LM's candidates against its committed goldens, judged by the product's engine and policy: the
official model replays its golden bit for bit and a perturbed weight is blamed on its module; a port that forgets
the padding mask passes prefill and single-sequence decoding, fails the padded batch only, in both modes, with the
first generated difference in the padded sequence; whole-model steps are classified row by row of the batch."""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import pytest

from conformance.compare import check_goldens
from conformance.compare.policy import load_policy
from conformance.compare.results import RunResult
from conformance.ports import CandidateSpec
from conformance.subjects.qwen3_lm.impl_binding import ImplCandidate

from ...conftest import GOLDENS, ROOT

GOLDEN = GOLDENS / "qwen3_lm-tiny-float32.h5"
POLICY = load_policy(ROOT / "conformance-policy.toml")


def by_case(run: RunResult) -> dict[str, Any]:
    return {case.case: case for case in run.cases}


def test_the_official_model_replays_its_golden_bit_for_bit() -> None:
    pytest.importorskip("transformers")
    run = check_goldens(GOLDEN, CandidateSpec("official"), POLICY)
    assert all(case.verdict == "pass" for case in run.cases)
    judged = [t for case in run.cases for t in case.tensors if t.metrics and "max_abs" in t.metrics]
    assert len(judged) > 2000 and all(t.metrics["max_abs"] == 0 for t in judged)
    assert run.candidate_provenance["package"]["distribution"] == "transformers"


@pytest.mark.parametrize("parameter", ["model.layers.1.self_attn.k_norm.weight", "model.layers.2.mlp.up_proj.weight"])
def test_a_perturbed_weight_is_blamed_on_its_module_in_both_modes(parameter: str) -> None:
    pytest.importorskip("transformers")
    run = check_goldens(GOLDEN, CandidateSpec(f"official:perturb={parameter}@1e-3"), POLICY)
    module = parameter.rsplit(".", 1)[0]
    for case in run.cases:
        assert case.verdict == "fail"
        assert {mode: blame.key for mode, blame in case.blame.items()} == {"isolated": module, "chained": module}


class ForgetsThePaddingMask(ImplCandidate):
    """A port whose model builds its causal mask without the padding mask it is given (an easy slip: the 2-D mask
    only matters once a batch is left-padded)."""

    def prepare(self, store: Any, case: Any) -> None:
        super().prepare(store, case)
        forward = type(self.model).forward

        def without_padding_mask(model: Any, *args: Any, attention_mask: Any = None, **kwargs: Any) -> Any:
            return forward(model, *args, **kwargs)

        self.model.forward = types.MethodType(without_padding_mask, self.model)


def test_a_port_that_forgets_the_padding_mask_fails_the_padded_batch_only() -> None:
    cases = by_case(check_goldens(GOLDEN, ForgetsThePaddingMask(), POLICY))
    assert [name for name, case in cases.items() if case.verdict == "fail"] == ["lm_padded_batch"]
    batch = cases["lm_padded_batch"]
    assert batch.blame["isolated"].key == "(root)" and batch.blame["chained"].key == "model"
    first = batch.first_divergence  # in the padded sequence, from the first generated position on
    assert (first["sequence"], first["position"], first["logits"]) == (1, 9, "lm_head#0")
    steps = [t for t in batch.tokens if t.mode == "teacher_forced_model"]
    assert {tuple(t.index) for t in steps} == {(row, 9 + k) for row in (0, 1) for k in range(8)}
    assert all(t.classification == "agree" for t in steps if t.index[0] == 0)  # the unpadded sequence is right
    assert any(t.classification != "agree" for t in steps if t.index[0] == 1)


def test_the_impl_computes_in_float64_against_the_float64_golden(tmp_path: Path) -> None:
    run = check_goldens(GOLDENS / "qwen3_lm-tiny-float64.h5", ImplCandidate(), POLICY)
    assert all(case.verdict == "pass" for case in run.cases)
    logits = [t for case in run.cases for t in case.tensors if t.key == "(root)" and t.role == "outputs/logits"]
    assert logits and max(t.metrics["rel_l2"] for t in logits) < 1e-12
