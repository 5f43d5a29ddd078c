"""The pytest plugin (entry point pytest11): a Python port's own suite parametrizes over golden module calls
and asserts conformance in one line. Each test runs pytest in a subprocess on a generated test file."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT

pytestmark = pytest.mark.slow

PORT_TESTS = f"""
import os
from pathlib import Path

import numpy as np
import pytest

from impl.qwen3_tts.codec import load_codec

CHECKPOINT = Path({str(ROOT / "goldens/checkpoints/qwen3_tts-tiny/speech_tokenizer")!r})
SCALE = float(os.environ.get("PORT_SCALE", "1"))


@pytest.fixture(scope="session")
def port():
    return load_codec(CHECKPOINT, np.float32)


@pytest.mark.conformance(cases=["codec_decode_short"], modules=["speech_tokenizer.decoder.decoder.1*"])
def test_decoder_block(golden_call, conformance_check, port):
    args, kwargs = golden_call.inputs()
    module = port.get(golden_call.key.removeprefix("speech_tokenizer."))
    conformance_check(golden_call, module(*args, **kwargs) * SCALE)


@pytest.mark.conformance(cases="codec_decode_short", modules="*.pre_transformer.layers.*.self_attn", calls="first")
def test_weights_are_the_checkpoint_slice(golden_call, port):
    module = port.get(golden_call.key.removeprefix("speech_tokenizer."))
    weights = golden_call.weights()
    assert set(weights) == {{"q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight"}}
    np.testing.assert_array_equal(weights["q_proj.weight"], module.q_proj.weight)


def test_by_name(golden_store, conformance_check, port):
    key = "speech_tokenizer.decoder.pre_conv"
    args, kwargs = golden_store.case("codec_decode_short").call_inputs(key, 0)
    results = conformance_check(key + "#0", port.get("decoder.pre_conv")(*args) * SCALE, case="codec_decode_short")
    assert [r.status for r in results] == ["pass"]
"""


def run_pytest(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_port.py").write_text(PORT_TESTS)
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    environment.pop("CONFORMANCE_GOLDENS", None)
    environment.pop("PYTEST_ADDOPTS", None)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_port.py", *args],
                          cwd=tmp_path, capture_output=True, text=True, env={**environment, **(env or {})},
                          timeout=600)  # fmt: skip


def test_a_conforming_port_passes(tmp_path: Path, golden_f32: Path) -> None:
    done = run_pytest(tmp_path, f"--goldens={golden_f32}", f"--policy={ROOT / 'conformance-policy.toml'}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"\b28 passed\b", done.stdout), done.stdout  # 25 decoder calls, 2 attention layers, 1 by name
    listed = run_pytest(tmp_path, f"--goldens={golden_f32}", "--collect-only")
    assert (
        "test_port.py::test_decoder_block[codec_decode_short:speech_tokenizer.decoder.decoder.1.block.2.conv1#0]"
        in listed.stdout
    )


def test_a_diverging_port_fails_with_the_tensor_and_its_thresholds(tmp_path: Path, golden_f32: Path) -> None:
    done = run_pytest(tmp_path, f"--goldens={golden_f32}", f"--policy={ROOT / 'conformance-policy.toml'}",
                      env={"PORT_SCALE": "1.001"})  # fmt: skip
    assert done.returncode == 1
    assert re.search(r"\b26 failed, 2 passed\b", done.stdout), done.stdout  # the weights tests still pass
    assert (
        "codec_decode_short:speech_tokenizer.decoder.decoder.1.block.0#0: 1 of 1 output tensor(s) do not conform"
        in done.stdout
    )
    assert re.search(r"outputs/0: fail: rel_l2 [\d.e-]+ > [\d.e-]+.*\[rel_l2=.*calibrated", done.stdout)


def test_the_goldens_come_from_the_environment_or_the_test_fails(tmp_path: Path, golden_f32: Path) -> None:
    done = run_pytest(tmp_path, env={"CONFORMANCE_GOLDENS": str(golden_f32)})
    assert done.returncode == 0, done.stdout
    done = run_pytest(tmp_path)
    assert done.returncode == 1
    assert "no golden store: pass --goldens FILE" in done.stdout
    assert re.search(r"\b3 errors\b", done.stdout), done.stdout  # every test that needs the store


def test_the_plugin_imports_nothing_heavy() -> None:
    code = "import sys, conformance.pytest_plugin; print(sorted(m for m in ('numpy', 'h5py', 'torch') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr
