"""A module's inputs are judged by value: the same numbers in another integer/float dtype, or in a shape that
differs only by size-1 axes or broadcasting, pass with a note; other numbers, shapes that hold other values,
and every output keep the strict judgement. Judged on the committed golden's real tensors (numpy only)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from conformance.compare.engine import Judge, by_value_shape, integer_values
from conformance.compare.policy import load_policy
from conformance.compare.results import FAIL, PASS
from conformance.store import GoldenStore
from conformance.store.reader import Case

POLICY = Path(__file__).resolve().parents[3] / "conformance-policy.toml"
ROTARY = "talker.model.rotary_emb"  # args/1: float32 [3, 1, 15], the MRoPE grid (three equal rows for text)
ATTENTION = "talker.model.layers.0.self_attn"


@pytest.fixture(scope="module")
def case(golden_f32: Path) -> Iterator[Case]:
    with GoldenStore(golden_f32) as store:
        yield store.case("tts_custom_voice")


def judge(case: Case, key: str, role: str, value: object, mode: str = "chained"):
    leaf = case.leaf(key, 0, role)
    return Judge(load_policy(POLICY), case, None, mode).judge(leaf, value, (0, 0))


def test_int64_positions_of_shape_1_L_equal_the_float32_3_1_L_grid_by_value(case: Case) -> None:
    grid = case.tensor(ROTARY, 0, "args/1")
    assert grid.dtype == np.float32 and grid.shape == (3, 1, 15)
    result = judge(case, ROTARY, "args/1", grid[0].astype(np.int64))
    assert result.status == PASS, result.message
    assert "int64" in result.note and "float32" in result.note and "broadcasting" in result.note
    assert result.metrics is not None and result.metrics["exact"]


def test_positions_that_differ_by_value_still_fail_with_the_note_saying_how_they_were_compared(case: Case) -> None:
    positions = case.tensor(ROTARY, 0, "args/1")[0].astype(np.int64)
    positions[0, 5] += 1
    result = judge(case, ROTARY, "args/1", positions)
    assert result.status == FAIL and "3 of 45 values differ" in result.message  # once per broadcast row
    assert "broadcasting" in result.note


@pytest.mark.parametrize(
    ("reshape", "how"),
    [(lambda g: g.reshape(3, 15), "squeezing size-1 axes"),  # size-1 axis dropped
     (lambda g: g[0, 0], "broadcasting"),  # [15] broadcasts to [3, 1, 15]
     (lambda g: g[:1], "broadcasting")],  # [1, 1, 15]
)  # fmt: skip
def test_float_inputs_in_an_equivalent_shape_pass_by_value(case: Case, reshape, how: str) -> None:
    result = judge(case, ROTARY, "args/1", reshape(case.tensor(ROTARY, 0, "args/1")))
    assert result.status == PASS and how in result.note


def test_a_shape_that_only_broadcasts_to_a_third_shape_is_a_mismatch(case: Case) -> None:
    grid = case.tensor(ROTARY, 0, "args/1")
    result = judge(case, ROTARY, "args/1", np.concatenate([grid, grid])[:2])  # [2, 1, 15]
    assert result.status == FAIL and result.message.startswith("shape mismatch")


def test_a_candidate_larger_than_the_golden_passes_only_if_it_repeats_the_golden(case: Case) -> None:
    golden = case.tensor("talker", 0, "kwargs/position_ids")  # int64 [1, 15]
    assert golden.dtype == np.int64 and golden.shape == (1, 15)
    repeated = np.broadcast_to(golden.astype(np.float32), (3, 1, 15)).copy()
    assert judge(case, "talker", "kwargs/position_ids", repeated).status == PASS
    repeated[2, 0, 3] = 7.0
    assert judge(case, "talker", "kwargs/position_ids", repeated).status == FAIL


def test_integer_golden_against_float_candidate_needs_whole_numbers(case: Case) -> None:
    golden = case.tensor("talker", 0, "kwargs/position_ids")
    whole = judge(case, "talker", "kwargs/position_ids", golden.astype(np.float32))
    assert whole.status == PASS and "float32 vs the golden's int64" in whole.note
    fractional = judge(case, "talker", "kwargs/position_ids", golden.astype(np.float32) + 0.5)
    assert fractional.status == FAIL and "dtype mismatch" in fractional.message
    assert "candidate's float32 holds values that are not integers" in fractional.message


def test_an_integer_candidate_for_real_valued_golden_data_is_a_dtype_mismatch(case: Case) -> None:
    hidden = case.tensor(ATTENTION, 0, "kwargs/hidden_states")
    result = judge(case, ATTENTION, "kwargs/hidden_states", np.round(hidden).astype(np.int64))
    assert result.status == FAIL and "golden's float32 holds values that are not integers" in result.message


def test_a_squeezed_attention_mask_is_judged_by_its_pattern(case: Case) -> None:
    mask = case.tensor(ATTENTION, 0, "kwargs/attention_mask")  # [1, 1, 15, 15], additive
    passing = judge(case, ATTENTION, "kwargs/attention_mask", np.where(mask < 0, -np.inf, 0.0)[0])
    assert passing.status == PASS and passing.source.startswith("attention mask") and passing.note
    flipped = np.where(mask < 0, -np.inf, 0.0)[0]
    flipped[0, 3] = -np.inf
    assert judge(case, ATTENTION, "kwargs/attention_mask", flipped).status == FAIL


@pytest.mark.parametrize("mode", ["chained", "isolated"])
def test_outputs_keep_the_strict_judgement(case: Case, mode: str) -> None:
    cos = case.tensor(ROTARY, 0, "outputs/0")  # [3, 1, 15, 8]
    squeezed = judge(case, ROTARY, "outputs/0", cos[:, 0], mode)
    assert squeezed.status == FAIL and squeezed.message.startswith("shape mismatch") and not squeezed.note
    rounded = judge(case, "talker.codec_head", "outputs/0", np.zeros((1, 15, 3072), np.int64), mode)
    assert rounded.status == FAIL and rounded.message.startswith("dtype mismatch")


def test_same_form_inputs_are_judged_as_before_without_a_note(case: Case) -> None:
    result = judge(case, ROTARY, "args/1", case.tensor(ROTARY, 0, "args/1"))
    assert result.status == PASS and result.note == ""


def test_shape_and_integer_rules() -> None:
    assert by_value_shape((1, 15), (3, 1, 15)) == ("broadcasting", (3, 1, 15))
    assert by_value_shape((3, 1, 15), (1, 15)) == ("broadcasting", (3, 1, 15))
    assert by_value_shape((15, 1), (1, 15)) == ("squeezing size-1 axes", (1, 15))
    assert by_value_shape((3, 15), (3, 1, 15)) == ("squeezing size-1 axes", (3, 1, 15))
    assert by_value_shape((3, 1), (1, 4)) is None  # both broadcast to [3, 4]: different values
    assert by_value_shape((2, 15), (3, 15)) is None
    assert integer_values(np.array([1.0, -2.0, 3e6], np.float32)).tolist() == [1, -2, 3000000]
    assert integer_values(np.array([True, False])).tolist() == [1, 0]
    assert integer_values(np.array([0.5], np.float32)) is None
    assert integer_values(np.array([np.nan], np.float32)) is None
    assert integer_values(np.array([-3.4e38], np.float32)) is None  # a mask's minimum is not an id
