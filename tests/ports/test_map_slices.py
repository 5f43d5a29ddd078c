"""Map slicing and casts (issue 15 point 8): a port that dumps the logits of the last position only, and the generated
codes as float32, is checked through `slice = "[:, -1:, :]"` (the golden side is sliced to what the port dumped)
and `dtype = "int64"` rename rules; a bad slice is bad input on one line naming the map and the rule."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conformance.ports.mapping import Transform, parse_mapping
from conformance.store import GoldenStore

from .conftest import Outcome, write_safetensors
from .test_errors import assert_one_line

CASE = "tts_custom_voice"
PREFILL_LOGITS = "talker.codec_head#0/outputs/0"  # [1, L, 3072]: every prompt position
CODES = ":generate#0/outputs/0/0"  # int64 [frames, codebooks]
MAP = f"""
case = "{CASE}"

[[rename]]
match = 'head/prefill'
to = "{PREFILL_LOGITS}"
slice = "[:, -1:, :]"

[[rename]]
match = 'codes'
to = "{CODES}"
dtype = "int64"
"""


def port_dump(store: GoldenStore, folder: Path, position: int = -1, scale: float = 1.0) -> Path:
    """What the port writes: the prefill's logits at one position only (a port computes the head on the last
    position), and the generated codes as float32 (its tensor library has no int64)."""
    case = store.case(CASE)
    logits = case.tensor("talker.codec_head", 0, "outputs/0")
    codes = case.tensor(":generate", 0, "outputs/0/0")
    tensors = {"head/prefill": logits[:, position:][:, :1] * scale, "codes": codes.astype(np.float32)}
    return write_safetensors(folder / f"{CASE}.safetensors", tensors)


def run_check(cli: Callable[..., Outcome], golden: Path, dump: Path, mapping: Path, tmp_path: Path) -> Outcome:
    return cli("check", "--goldens", golden, "--candidate", f"dump:{dump.parent}", "--map", mapping, "--cases", CASE,
               "--allow-partial", "--reports", tmp_path / "reports", "--no-html", "-q")  # fmt: skip


def verdicts(tmp_path: Path) -> dict[str, dict[str, Any]]:
    summary = json.loads((tmp_path / "reports" / "summary.json").read_text())
    (case,) = summary["cases"]
    return {f"{t['key']}#{t['call']}/{t['role']}": t for t in case["tensors"] if t["mode"] == "chained"}


def test_parse_slices_and_casts() -> None:
    mapping = parse_mapping({"rename": [{"match": "a", "to": PREFILL_LOGITS, "slice": "[..., -1 :, ::2]"},
                                        {"match": "b", "to": CODES, "dtype": "int64", "slice": "[0]"}]})  # fmt: skip
    first, second = (rule.transform for rule in mapping.rules)
    assert first.golden_index == (Ellipsis, slice(-1, None), slice(None, None, 2))
    assert first.golden_shape((1, 7, 6)) == (1, 1, 3) and "against golden[..., -1 :, ::2]" in first.describe()
    assert second.golden_index == (0,) and second.golden_shape((3, 4)) == (4,) and second.dtype == "int64"
    assert Transform().golden_shape((2, 3)) == (2, 3)


def test_a_port_dumping_the_last_position_and_float_codes_conforms(cli, golden_f32: Path, store: GoldenStore,
                                                                   tmp_path: Path) -> None:  # fmt: skip
    dump = port_dump(store, tmp_path / "dump")
    mapping = tmp_path / "map.toml"
    mapping.write_text(MAP)
    outcome = run_check(cli, golden_f32, dump, mapping, tmp_path)
    assert outcome.code == 0, outcome.out + outcome.err
    found = verdicts(tmp_path)
    logits, codes = found[PREFILL_LOGITS], found[CODES]
    assert logits["status"] == "pass" and "[:, -1:, :]" in logits["note"], logits
    assert codes["status"] == "pass", codes


@pytest.mark.parametrize(("position", "scale"), [(-1, 1.01), (0, 1.0)])
def test_a_slice_is_judged_against_that_part_of_the_golden(cli, golden_f32: Path, store: GoldenStore, tmp_path: Path,
                                                           position: int, scale: float) -> None:  # fmt: skip
    """Scaled logits fail; so do the right logits of the wrong position (the slice is what is compared)."""
    dump = port_dump(store, tmp_path / "dump", position=position, scale=scale)
    mapping = tmp_path / "map.toml"
    mapping.write_text(MAP)
    outcome = run_check(cli, golden_f32, dump, mapping, tmp_path)
    assert outcome.code == 1, outcome.out + outcome.err
    assert verdicts(tmp_path)[PREFILL_LOGITS]["status"] == "fail"


@pytest.mark.parametrize(
    ("slice_text", "needles"),
    [
        ("[:, -1:", ["rule 1", "slice must be an index in brackets"]),
        ("[:, a, :]", ["rule 1", "'a' is not an integer"]),
        ("[:, ::0, :]", ["rule 1", "a step of 0"]),
        ("[..., ..., 0]", ["rule 1", "more than one ..."]),
    ],
)
def test_bad_slice_syntax_is_one_line_naming_the_map_and_rule(cli, golden_f32: Path, store: GoldenStore,
                                                              tmp_path: Path, slice_text: str,
                                                              needles: list[str]) -> None:  # fmt: skip
    dump = port_dump(store, tmp_path / "dump")
    mapping = tmp_path / "map.toml"
    mapping.write_text(MAP.replace('"[:, -1:, :]"', json.dumps(slice_text)))
    assert_one_line(run_check(cli, golden_f32, dump, mapping, tmp_path), str(mapping), *needles)


@pytest.mark.parametrize(
    ("slice_text", "needles"),
    [
        ("[:, :, :, 0]", ["head/prefill", PREFILL_LOGITS, "does not apply to a tensor of shape"]),
        ("[:, -2:, :]", ["head/prefill", f"{PREFILL_LOGITS}[:, -2:, :] is [1, 2, 3072]"]),
        ("[:, 100:, :]", ["head/prefill", "selects nothing"]),
    ],
)
def test_a_slice_that_does_not_fit_the_dump_is_bad_input(cli, golden_f32: Path, store: GoldenStore, tmp_path: Path,
                                                         slice_text: str, needles: list[str]) -> None:  # fmt: skip
    dump = port_dump(store, tmp_path / "dump")
    mapping = tmp_path / "map.toml"
    mapping.write_text(MAP.replace('"[:, -1:, :]"', json.dumps(slice_text)))
    assert_one_line(run_check(cli, golden_f32, dump, mapping, tmp_path), str(dump), *needles)
