"""Malformed dumps and maps: each is bad input (exit 2) reported on one line naming the file and the tensor,
before anything is judged."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest

from conformance.store import GoldenStore

from .conftest import FOREIGN_MAP, Outcome, foreign_dump, golden_outputs, write_safetensors

CASE = "codec_decode_short"
PRE_CONV = "speech_tokenizer.decoder.pre_conv#0/outputs/0"  # float32 [1, 16, 3], NCL


def check(cli: Callable[..., Outcome], golden: Path, dump: Path, tmp_path: Path, mapping: Path | None = None,
          cases: tuple[str, ...] = (CASE,)) -> Outcome:  # fmt: skip
    args: list[str | Path] = ["check", "--goldens", golden, "--candidate", f"dump:{dump}", "--reports",
                              tmp_path / "reports", "--no-html", "-q", "--cases", *cases]  # fmt: skip
    if mapping is not None:
        args += ["--map", mapping]
    return cli(*args)


def assert_one_line(outcome: Outcome, *needles: str) -> str:
    assert outcome.code == 2, outcome.out + outcome.err
    assert len(outcome.error_lines) == 1, outcome.err
    line = outcome.error_lines[0]
    assert line.startswith("conformance: error: ")
    for needle in needles:
        assert needle in line, line
    return line


@pytest.fixture(scope="module")
def outputs(store: GoldenStore) -> dict[str, np.ndarray]:
    return golden_outputs(store, CASE)


def map_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "map.toml"
    path.write_text(text)
    return path


# -- malformed dumps ----------------------------------------------------------------------------------------


def test_truncated_safetensors(cli, golden_f32: Path, tmp_path: Path, outputs: dict[str, np.ndarray]) -> None:
    dump = write_safetensors(tmp_path / "dump.safetensors", outputs, {"case": CASE})
    data = dump.read_bytes()
    dump.write_bytes(data[: len(data) - 100])  # the last tensors' bytes are gone
    line = assert_one_line(check(cli, golden_f32, dump, tmp_path), str(dump), "truncated safetensors file")
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    last = max((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][1])
    assert last in line  # the tensor whose bytes are missing
    assert not (tmp_path / "reports" / "summary.json").exists()


def test_safetensors_cut_inside_its_header(
    cli, golden_f32: Path, tmp_path: Path, outputs: dict[str, np.ndarray]
) -> None:
    dump = write_safetensors(tmp_path / "dump.safetensors", outputs)
    dump.write_bytes(dump.read_bytes()[:200])
    assert_one_line(check(cli, golden_f32, dump, tmp_path), str(dump), "truncated safetensors file")


def test_wrong_dtype_for_the_golden(cli, golden_f32: Path, tmp_path: Path, outputs: dict[str, np.ndarray]) -> None:
    dump = write_safetensors(tmp_path / "dump.safetensors", {**outputs, PRE_CONV: outputs[PRE_CONV].astype(np.int32)})
    assert_one_line(check(cli, golden_f32, dump, tmp_path), str(dump), PRE_CONV, "wrong dtype: int32", "float32")


def test_unsupported_dtype_code(cli, golden_f32: Path, tmp_path: Path) -> None:
    header = json.dumps({"x#0/outputs/0": {"dtype": "F8_E4M3", "shape": [2], "data_offsets": [0, 2]}}).encode()
    dump = tmp_path / "dump.safetensors"
    dump.write_bytes(struct.pack("<Q", len(header)) + header + b"\0\0")
    assert_one_line(check(cli, golden_f32, dump, tmp_path), str(dump), "x#0/outputs/0", "wrong dtype", "F8_E4M3")


def test_npz_with_a_non_numeric_array(cli, golden_f32: Path, tmp_path: Path) -> None:
    dump = tmp_path / "dump.npz"
    np.savez(dump, **{"labels": np.array(["a", "b"])})
    assert_one_line(check(cli, golden_f32, dump, tmp_path), str(dump), "labels", "wrong dtype")


def test_shape_no_transform_explains(cli, golden_f32: Path, tmp_path: Path, outputs: dict[str, np.ndarray]) -> None:
    dump = write_safetensors(tmp_path / "dump.safetensors", {**outputs, PRE_CONV: outputs[PRE_CONV][..., :2]})
    assert_one_line(check(cli, golden_f32, dump, tmp_path), str(dump), PRE_CONV, "[1, 16, 2]", "[1, 16, 3]",
                    "no permute, split or reshape explains it")  # fmt: skip


def test_a_layout_the_map_does_not_undo_is_named(cli, golden_f32: Path, tmp_path: Path,
                                                 outputs: dict[str, np.ndarray]) -> None:  # fmt: skip
    dump = write_safetensors(tmp_path / "dump.safetensors", {**outputs, PRE_CONV: np.swapaxes(outputs[PRE_CONV], 1, 2)})
    assert_one_line(check(cli, golden_f32, dump, tmp_path), str(dump), PRE_CONV, "permute = [0, 2, 1] would explain it")


def test_a_split_that_does_not_divide(cli, golden_f32: Path, tmp_path: Path, store: GoldenStore) -> None:
    tensors = foreign_dump(store, CASE)
    name = "p/speech_tokenizer.decoder.pre_transformer.layers.0.self_attn.qkv/0"
    tensors[name] = tensors[name][..., :-1]
    dump = write_safetensors(tmp_path / "dump.safetensors", tensors)
    assert_one_line(check(cli, golden_f32, dump, tmp_path, map_file(tmp_path, FOREIGN_MAP)), str(dump), name,
                    "does not split into 3 equal parts")  # fmt: skip


def test_corrupt_hdf5_and_npz(cli, golden_f32: Path, tmp_path: Path, outputs: dict[str, np.ndarray]) -> None:
    h5 = tmp_path / "dump.h5"
    with h5py.File(h5, "w") as handle:
        for name, value in outputs.items():
            handle[name] = value
    h5.write_bytes(h5.read_bytes()[:1000])
    assert_one_line(check(cli, golden_f32, h5, tmp_path), str(h5), "not a readable HDF5 file")
    npz = tmp_path / "dump.npz"
    np.savez(npz, **{k.replace("/", "|"): v for k, v in list(outputs.items())[:3]})
    npz.write_bytes(npz.read_bytes()[:-30])
    assert_one_line(check(cli, golden_f32, npz, tmp_path), str(npz), "not a readable npz file")


def test_missing_dump_and_undeclared_case(
    cli, golden_f32: Path, tmp_path: Path, outputs: dict[str, np.ndarray]
) -> None:
    assert_one_line(check(cli, golden_f32, tmp_path / "nowhere", tmp_path), str(tmp_path / "nowhere"), "no such file")
    dump = write_safetensors(tmp_path / "anonymous.safetensors", outputs)  # names no case
    line = assert_one_line(check(cli, golden_f32, dump, tmp_path, cases=(CASE, "codec_decode_long")), str(dump),
                           "does not say which case")  # fmt: skip
    assert "--cases" in line


def test_a_tensor_in_two_files(cli, golden_f32: Path, tmp_path: Path, outputs: dict[str, np.ndarray]) -> None:
    folder = tmp_path / "dump"
    write_safetensors(folder / "a.safetensors", outputs)
    write_safetensors(folder / "b.safetensors", {PRE_CONV: outputs[PRE_CONV]})
    assert_one_line(check(cli, golden_f32, folder, tmp_path), PRE_CONV, "a.safetensors", "b.safetensors")


# -- malformed maps -------------------------------------------------------------------------------------------


def test_a_regex_that_matches_nothing(cli, golden_f32: Path, tmp_path: Path, outputs: dict[str, np.ndarray]) -> None:
    dump = write_safetensors(tmp_path / "dump.safetensors", outputs)
    mapping = map_file(
        tmp_path, "[[rename]]\nmatch = 'enc\\.blocks\\.(\\d+)'\nto = 'speech_tokenizer.encoder.{1}#0/outputs/0'\n"
    )
    assert_one_line(check(cli, golden_f32, dump, tmp_path, mapping), str(mapping), "rename rule 1",
                    "matches no tensor of the dump")  # fmt: skip
    optional = map_file(tmp_path, mapping.read_text() + "optional = true\n")
    assert check(cli, golden_f32, dump, tmp_path, optional).code == 0


def test_duplicate_targets(cli, golden_f32: Path, tmp_path: Path, outputs: dict[str, np.ndarray]) -> None:
    dump = write_safetensors(tmp_path / "dump.safetensors", {**outputs, "pre_conv_copy": outputs[PRE_CONV]})
    mapping = map_file(tmp_path, f'[names]\n"pre_conv_copy" = "{PRE_CONV}"\n')
    assert_one_line(check(cli, golden_f32, dump, tmp_path, mapping), str(mapping), "duplicate target", PRE_CONV,
                    "pre_conv_copy")  # fmt: skip


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[[ignore]]\nmatch = 'debug.*'\n", "ignore rule 1 needs a reason"),
        ("[[ignore]]\nmatch = 'debug.*'\nreason = '  '\n", "ignore rule 1 needs a reason"),
        ("[[rename]]\nmatch = 'a(('\nto = 'x#0/outputs/0'\n", "bad regex"),
        ("[[rename]]\nmatch = 'a(\\d)'\nto = 'x.{2}#0/outputs/0'\n", "refers to group 2 but the regex has 1"),
        ("[[rename]]\nmatch = 'a(\\d)'\nto = 'x.{1:nope}#0/outputs/0'\n", "[tables.nope]"),
        ("[[rename]]\nmatch = 'a(\\d)'\nto = 'x.{1**2}#0/outputs/0'\n", "may only use"),
        ("[[rename]]\nmatch = 'a'\nto = ['x#0/outputs/0', 'y#0/outputs/0']\n", "need split"),
        ("[[rename]]\nmatch = 'a'\nto = 'x#0/outputs/0'\npermute = [0, 0, 1]\n", "not a permutation"),
        ("[[rename]]\nmatch = 'a'\nto = 'x#0/outputs/0'\nlayout = 'NLC->NCT'\n", "same distinct axes"),
        ("[[rename]]\nmatch = 'a'\nto = 'x#0/outputs/0'\ndtype = 'float128'\n", "dtype 'float128'"),
        ("[[rename]]\nmatch = 'a'\nto = 'x#0/outputs/0'\nflip = true\n", "unknown key 'flip'"),
        ("[names]\nwave = 'not a golden name'\n", "not a golden tensor name"),
        ("renames = []\n", "unknown key 'renames'"),
        ("[[rename]\n", "not valid TOML"),
    ],
)
def test_malformed_map(cli, golden_f32: Path, tmp_path: Path, outputs: dict[str, np.ndarray], text: str,
                       needle: str) -> None:  # fmt: skip
    dump = write_safetensors(tmp_path / "dump.safetensors", outputs)
    mapping = map_file(tmp_path, text)
    assert_one_line(check(cli, golden_f32, dump, tmp_path, mapping), str(mapping), needle)


def test_a_template_rendering_no_golden_name(
    cli, golden_f32: Path, tmp_path: Path, outputs: dict[str, np.ndarray]
) -> None:
    dump = write_safetensors(tmp_path / "dump.safetensors", {**outputs, "wave": outputs[PRE_CONV]})
    mapping = map_file(tmp_path, "[[rename]]\nmatch = 'wa(v)e'\nto = 'speech_tokenizer{1}'\n")
    assert_one_line(check(cli, golden_f32, dump, tmp_path, mapping), str(mapping), "'wave'", "'speech_tokenizerv'",
                    "not a golden tensor name")  # fmt: skip


def test_arithmetic_on_a_non_integer_group(
    cli, golden_f32: Path, tmp_path: Path, outputs: dict[str, np.ndarray]
) -> None:
    dump = write_safetensors(tmp_path / "dump.safetensors", {**outputs, "stage.x": outputs[PRE_CONV]})
    mapping = map_file(
        tmp_path, "[[rename]]\nmatch = 'stage\\.(\\w)'\nto = 'speech_tokenizer.decoder.decoder.{1+1}#0/outputs/0'\n"
    )
    assert_one_line(check(cli, golden_f32, dump, tmp_path, mapping), "'stage.x'", "not an integer")
