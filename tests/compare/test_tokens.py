"""Teacher-forced token classes on constructed logits: agree, exact tie, near tie, swap, drift."""

from __future__ import annotations

import numpy as np
import pytest

from conformance.compare.tokens import classify, last_position, top2


@pytest.mark.parametrize(
    ("golden", "candidate", "expected"),
    [
        ([0.0, 5.0, 1.0, 2.0], [0.0, 4.9, 1.0, 2.0], "agree"),
        ([0.0, 5.0, 5.0, 2.0], [0.0, 5.0, 5.1, 2.0], "exact_tie"),  # golden's two best are equal
        ([0.0, 5.0, 4.99999, 2.0], [0.0, 5.0, 5.00001, 2.0], "near_tie"),  # margin 1e-5 < 1e-4
        ([0.0, 5.0, 4.0, 2.0], [0.0, 5.0, 5.5, 2.0], "token_swap"),  # clear margin, second choice picked
        ([0.0, 5.0, 4.0, 2.0], [9.0, 5.0, 4.0, 2.0], "logit_drift"),  # picked something further down
    ],
)
def test_each_disagreement_class(golden: list[float], candidate: list[float], expected: str) -> None:
    result = classify(np.array(golden), np.array(candidate), near_tie_margin=1e-4)
    assert result.classification == expected
    assert result.golden_token == 1


def test_a_near_tie_needs_the_second_choice() -> None:
    # tiny golden margin, but the candidate picked the third token: its logits are wrong, not close
    result = classify(np.array([5.0, 4.99999, 1.0]), np.array([0.0, 0.0, 9.0]), near_tie_margin=1e-4)
    assert result.classification == "logit_drift"


def test_a_generated_token_can_be_classified_without_candidate_logits() -> None:
    result = classify(np.array([1.0, 3.0, 2.9]), None, near_tie_margin=0.5, candidate_token=2)
    assert result.classification == "near_tie" and result.margin == pytest.approx(0.1)


def test_top2_and_last_position() -> None:
    assert top2(np.array([1.0, 7.0, 3.0, 7.0])) == (1, 3, 0.0)
    logits = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    assert np.array_equal(last_position(logits), logits[:, -1, :])


def test_the_first_generated_difference_is_the_earliest_step_of_any_sequence() -> None:
    """In a batch of sequences the first difference is found in generation order: sequence 1 diverging at position
    3 comes before sequence 0 diverging at position 5 (reading the tensor row by row would name sequence 0)."""
    from conformance.compare.engine import free_running
    from conformance.compare.policy import parse_policy
    from conformance.compare.results import CaseResult
    from conformance.subjects import Subject, TokenLayout

    golden = np.arange(12, dtype=np.int64).reshape(2, 6)
    mine = golden.copy()
    mine[0, 5], mine[1, 3] = 99, 98

    class Generated:
        name = "batch"

        def tensor(self, key: str, call: int, role: str) -> np.ndarray:
            return golden

    class Batched(Subject):
        def tokens(self, case: object) -> TokenLayout:
            return TokenLayout(("gen", 0, "outputs/0"), ("sequence", "position"), step_axis=1, batch_axis=0)

    result = CaseResult("batch", "generation", "float32", ["chained"])
    free_running(Generated(), {("gen", 0): {"outputs/0": mine}}, parse_policy({}, "p.toml"), result, Batched())  # type: ignore[arg-type]
    assert result.first_divergence is not None
    assert (result.first_divergence["index"], result.first_divergence["candidate_token"]) == ([1, 3], 98)
