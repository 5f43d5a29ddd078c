"""The port contract for the Qwen3 causal LM: `conformance export` gives a port in any language the prompt ids, the
padding mask and the number of tokens to generate, every golden tensor and a replay bundle per call (weights
included, from the committed checkpoint); `conformance dump` writes the installed transformers' run as a dump,
which checks clean; a dump with one module's output doctored and one generated token changed is blamed on that
module and reports that token as the first generated difference."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from conformance.cli import main
from conformance.ports.manifest import validate_export
from conformance.store import GoldenStore

from ...conftest import GOLDENS, ROOT

GOLDEN = GOLDENS / "qwen3_lm-tiny-float32.h5"
POLICY = ROOT / "conformance-policy.toml"


def test_the_export_holds_what_a_port_needs(tmp_path: Path) -> None:
    out = tmp_path / "export"
    assert main(["export", "--goldens", str(GOLDEN), "--cases", "lm_padded_batch", "-o", str(out)]) == 0
    assert validate_export(out) == []
    case = out / "lm_padded_batch"
    manifest = json.loads((case / "manifest.json").read_text())
    assert manifest["input_values"] == {"max_new_tokens": 8} and manifest["checkpoint_problems"] == []
    inputs = load_file(str(case / "inputs.safetensors"))
    with GoldenStore(GOLDEN) as store:
        golden = store.case("lm_padded_batch")
        np.testing.assert_array_equal(inputs["attention_mask"], golden.input("attention_mask"))
        np.testing.assert_array_equal(load_file(str(case / "goldens.safetensors"))[":generate#0/outputs/0"],
                                      golden.output("sequences"))  # fmt: skip
    bundle = load_file(str(case / "replay" / "model.layers.0.self_attn.q_norm#3.safetensors"))
    assert set(bundle) == {"args/0", "outputs/0", "weights/weight"} and bundle["args/0"].shape[-1] == 16


@pytest.fixture(scope="module")
def dumps(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("transformers")
    out = tmp_path_factory.mktemp("lm_dumps")
    code = main(["dump", "--goldens", str(GOLDEN), "--cases", "lm_greedy", "lm_padded_batch", "-o", str(out), "-q"])
    assert code == 0
    return out


def test_a_dump_of_the_installed_transformers_checks_clean(dumps: Path, tmp_path: Path) -> None:
    code = main(["check", "--goldens", str(GOLDEN), "--cases", "lm_greedy", "lm_padded_batch", "--candidate",
                 f"dump:{dumps}", "--policy", str(POLICY), "--reports", str(tmp_path), "-q"])  # fmt: skip
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert code == 0 and summary["verdict"] == "pass" and summary["counts"]["not_covered"] == 0


def test_a_doctored_dump_is_blamed_on_its_module_and_its_token_found(dumps: Path, tmp_path: Path) -> None:
    doctored = tmp_path / "doctored"
    doctored.mkdir()
    path = dumps / "lm_padded_batch.safetensors"
    from safetensors import safe_open

    with safe_open(str(path), "np") as handle:
        metadata = handle.metadata()
    tensors = load_file(str(path))
    for name in tensors:
        if name.startswith("model.layers.1.mlp#") and name.endswith("/outputs/0"):
            tensors[name] = tensors[name] * np.float32(1.01)
    tensors[":generate#0/outputs/0"][1, 12] += 1
    save_file(tensors, str(doctored / path.name), metadata=metadata)
    code = main(["check", "--goldens", str(GOLDEN), "--cases", "lm_padded_batch", "--candidate", f"dump:{doctored}",
                 "--policy", str(POLICY), "--reports", str(tmp_path / "reports"), "-q"])  # fmt: skip
    case = json.loads((tmp_path / "reports" / "summary.json").read_text())["cases"][0]
    assert code == 1 and case["blame"]["chained"]["key"] == "model.layers.1.mlp"
    assert case["first_divergence"]["index"] == [1, 12]
