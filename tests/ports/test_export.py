"""`conformance export`: files that load with the safetensors numpy API, manifests that validate and say what
the check will enforce, replay bundles holding a module's inputs, weights and outputs."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import load_file

from conformance.ports.manifest import validate_case, validate_export, validate_index
from conformance.store import GoldenStore
from impl.common.weights import load_safetensors

from .conftest import CODEC_CASES, ROOT, Outcome, golden_outputs, write_safetensors

CASE = "codec_decode_short"
ATTN = "speech_tokenizer.decoder.pre_transformer.layers.0.self_attn"


@pytest.fixture(scope="module")
def manifest(export_dir: Path) -> dict[str, Any]:
    return json.loads((export_dir / CASE / "manifest.json").read_text())


def test_the_export_validates_and_every_file_loads_with_safetensors_numpy(export_dir: Path) -> None:
    index = json.loads((export_dir / "manifest.json").read_text())
    assert validate_index(index) == []
    assert [c["case"] for c in index["cases"]] == CODEC_CASES
    assert validate_export(export_dir) == []
    files = sorted(export_dir.rglob("*.safetensors"))
    assert len(files) == 2 * 3 + sum(c["bundles"] for c in index["cases"])
    for path in files:
        assert load_file(str(path))  # the official numpy API reads every file the export writes


def test_goldens_and_inputs_are_the_golden_store_s(
    export_dir: Path, manifest: dict[str, Any], store: GoldenStore
) -> None:
    case = store.case(CASE)
    assert validate_case(manifest) == []
    goldens = load_file(str(export_dir / CASE / "goldens.safetensors"))
    full = {leaf.name for leaf in case.leaves() if leaf.is_tensor and leaf.tier == "full"}
    assert set(goldens) == full
    for name in sorted(full)[::7]:
        key, _, rest = name.partition("#")
        call, _, role = rest.partition("/")
        np.testing.assert_array_equal(goldens[name], case.tensor(key, int(call), role))
    inputs = load_file(str(export_dir / CASE / "inputs.safetensors"))
    np.testing.assert_array_equal(inputs["codes"], case.input("codes"))
    outputs = load_file(str(export_dir / CASE / "outputs.safetensors"))
    np.testing.assert_array_equal(outputs["waveform"], case.output("waveform"))
    assert manifest["output_values"] == {"sample_rate": 24000}
    assert manifest["config"] == case.provenance["config"]
    orders = [c["order"] for c in manifest["calls"]]
    assert orders == sorted(orders) and len(manifest["calls"]) == len(case.calls())


def test_the_manifest_says_layouts_and_producers(manifest: dict[str, Any]) -> None:
    tensors = {t["name"]: t for call in manifest["calls"] for t in call["tensors"]}
    classes = {t["name"]: call["class"] for call in manifest["calls"] for t in call["tensors"]}
    conv = [n for n, c in classes.items() if c == "Conv1d"]
    linear = [n for n, c in classes.items() if c == "Linear"]
    assert conv and all(tensors[n]["layout"] == "NCL" for n in conv)
    assert linear and all(tensors[n]["layout"] == "NLC" for n in linear)
    assert (
        tensors["speech_tokenizer.decoder.decoder.2.block.2.act1#0/outputs/0"]["layout"] == "NCL"
    )  # spread to SnakeBeta
    assert tensors[f"{ATTN}#0/kwargs/hidden_states"]["producers"] == [
        "speech_tokenizer.decoder.pre_transformer.layers.0.input_layernorm#0/outputs/0"
    ]


def test_tolerances_are_the_ones_the_check_applies(cli: Callable[..., Outcome], manifest: dict[str, Any],
                                                   golden_f32: Path, store: GoldenStore, tmp_path: Path) -> None:  # fmt: skip
    dump = write_safetensors(tmp_path / "dump.safetensors", golden_outputs(store, CASE))
    outcome = cli("check", "--goldens", golden_f32, "--candidate", f"dump:{dump}", "--cases", CASE, "--reports",
                  tmp_path / "r", "--no-html", "-q", "--policy", ROOT / "conformance-policy.toml")  # fmt: skip
    assert outcome.code == 0
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    applied = {
        f"{t['key']}#{t['call']}/{t['role']}": t for t in summary["cases"][0]["tensors"] if t["status"] == "pass"
    }
    exported = {t["name"]: t["tolerance"]["chained"] for call in manifest["calls"] for t in call["tensors"]}
    assert len(applied) > 180
    for name, verdict in applied.items():
        assert exported[name]["source"] == verdict["source"]
        assert exported[name]["thresholds"] == pytest.approx(verdict["thresholds"], rel=1e-12), name


def test_a_replay_bundle_holds_inputs_weights_and_outputs(export_dir: Path, manifest: dict[str, Any],
                                                          store: GoldenStore) -> None:  # fmt: skip
    call = next(c for c in manifest["calls"] if c["key"] == ATTN)
    bundle = export_dir / CASE / call["replay_bundle"]
    assert bundle.name == f"{ATTN}#0.safetensors"
    tensors = load_file(str(bundle))
    case = store.case(CASE)
    for leaf in case.leaves(ATTN, 0):
        if leaf.is_tensor:
            np.testing.assert_array_equal(tensors[leaf.role], case.tensor(leaf))
    checkpoint = load_safetensors(ROOT / "goldens/checkpoints/qwen3_tts-tiny/speech_tokenizer/model.safetensors")
    prefix = "decoder.pre_transformer.layers.0.self_attn."
    expected = {k[len(prefix) :]: v for k, v in checkpoint.items() if k.startswith(prefix)}
    assert {k.removeprefix("weights/") for k in tensors if k.startswith("weights/")} == set(expected)
    for name, value in expected.items():
        np.testing.assert_array_equal(tensors[f"weights/{name}"], value)
    with safe_open(str(bundle), "np") as handle:
        meta = handle.metadata()
    assert (meta["key"], meta["call"], meta["case"]) == (ATTN, "0", CASE)
    assert json.loads(meta["weights"])["prefix"] == prefix
    # eager attention returns (output, weights): a tolerance for each float output
    assert set(json.loads(meta["tolerance"])) == {"outputs/0", "outputs/1"}
    assert json.loads(meta["structure"])["kwargs"]["dict"]["hidden_states"] == {"leaf": "kwargs/hidden_states"}
    method = next(c for c in manifest["calls"] if c["key"] == "speech_tokenizer:decode")
    assert method["replay_bundle"] == "replay/speech_tokenizer@decode#0.safetensors"


def test_npz_export_and_weight_limit(
    cli: Callable[..., Outcome], golden_f32: Path, tmp_path: Path, export_dir: Path
) -> None:
    out = tmp_path / "npz"
    outcome = cli("export", "--goldens", golden_f32, "--cases", CASE, "--format", "npz", "-o", out, "-q",
                  "--bundle-weight-limit", "0", "--modules", "speech_tokenizer.decoder.decoder.*")  # fmt: skip
    assert outcome.code == 0, outcome.err
    assert validate_export(out) == []
    manifest = json.loads((out / CASE / "manifest.json").read_text())
    goldens = np.load(out / CASE / "goldens.npz")
    reference = load_file(str(export_dir / CASE / "goldens.safetensors"))
    assert set(goldens.files) == {n for n in reference if n.startswith("speech_tokenizer.decoder.decoder.")}
    for name in goldens.files[::9]:
        np.testing.assert_array_equal(goldens[name], reference[name])
    bundles = [c for c in manifest["calls"] if c["replay_bundle"]]
    assert bundles and all(c["key"].startswith("speech_tokenizer.decoder.decoder.") for c in bundles)
    with_weights = [c for c in bundles if c["weights"]["mode"] != "none"]
    assert with_weights and all(c["weights"]["mode"] == "by-reference" and c["weights"]["names"] for c in with_weights)
    for call in with_weights[:5]:
        assert not [n for n in np.load(out / CASE / call["replay_bundle"]).files if n.startswith("weights/")]


def test_export_of_an_unknown_case_is_bad_input(cli: Callable[..., Outcome], golden_f32: Path, tmp_path: Path) -> None:
    outcome = cli("export", "--goldens", golden_f32, "--cases", "nope", "-o", tmp_path / "x")
    assert outcome.code == 2 and len(outcome.error_lines) == 1 and "no case 'nope'" in outcome.error_lines[0]


def _mutations(manifest: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    out = []

    def mutate(label: str, change: Callable[[dict[str, Any]], None]) -> None:
        copied = copy.deepcopy(manifest)
        change(copied)
        out.append((label, copied))

    mutate("missing 'calls'", lambda m: m.pop("calls"))
    mutate("'case' must be str", lambda m: m.__setitem__("case", 3))
    mutate("dtype 'float8'", lambda m: m["calls"][0]["tensors"][0].__setitem__("dtype", "float8"))
    mutate("shape", lambda m: m["calls"][0]["tensors"][0].__setitem__("shape", [1, -3]))
    mutate("is not key#call/role", lambda m: m["calls"][0]["tensors"][0].__setitem__("name", "nonsense"))
    mutate("does not match its call and role", lambda m: m["calls"][1]["tensors"][0].__setitem__("role", "outputs/9"))
    mutate("duplicate tensor", lambda m: m["calls"][1]["tensors"].append(m["calls"][1]["tensors"][0]))
    mutate("threshold rel_l2 must be a non-negative number",
           lambda m: next(t for c in m["calls"] for t in c["tensors"] if "rel_l2" in t["tolerance"]["chained"]["thresholds"])
           ["tolerance"]["chained"]["thresholds"].__setitem__("rel_l2", -1))  # fmt: skip
    mutate("weights.mode", lambda m: m["calls"][0]["weights"].__setitem__("mode", "sometimes"))
    mutate(
        "producers must be golden tensor names",
        lambda m: next(t for c in m["calls"] for t in c["tensors"] if "producers" in t).__setitem__("producers", ["x"]),
    )
    return out


def test_the_validator_rejects_broken_manifests(manifest: dict[str, Any]) -> None:
    for needle, broken in _mutations(manifest):
        problems = validate_case(broken)
        assert problems and any(needle in p for p in problems), (needle, problems[:3])


def test_validate_export_checks_files_against_the_manifest(export_dir: Path, tmp_path: Path) -> None:
    import shutil

    copied = tmp_path / "export"
    shutil.copytree(export_dir, copied)
    goldens = load_file(str(copied / CASE / "goldens.safetensors"))
    name = f"{ATTN}#0/outputs/0"
    goldens[name] = goldens[name][..., :-1]
    write_safetensors(copied / CASE / "goldens.safetensors", goldens)
    (copied / CASE / "replay" / f"{ATTN}#0.safetensors").unlink()
    problems = validate_export(copied)
    assert any(name in p and "the manifest says float32[1, 3, 32]" in p for p in problems)
    assert any(f"{ATTN}#0.safetensors" in p and "no such file" in p for p in problems)
