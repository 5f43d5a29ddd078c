"""The worked example: a standalone 'foreign port' (examples/foreign_port/port.py) with its own names, NLC
layouts and a fused qkv, run as a subprocess in an environment where torch cannot be imported, its
safetensors dump checked through examples/foreign_port/map.toml."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from conformance.store import GoldenStore

from .conftest import CODEC_CASES, EXAMPLE, no_torch_env, run_conformance, run_port

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return no_torch_env(tmp_path_factory.mktemp("env"))


@pytest.fixture(scope="module")
def dump_dir(tmp_path_factory: pytest.TempPathFactory, export_dir: Path, env: dict[str, str]) -> Path:
    """The port's dumps of both codec cases, one file per case (`<dir>/<case>.safetensors`)."""
    out = tmp_path_factory.mktemp("dumps")
    for case in CODEC_CASES:
        done = run_port(export_dir / case, out / f"{case}.safetensors", env)
        assert done.returncode == 0, done.stderr
    return out


def check(golden: Path, dump: Path, reports: Path, env: dict[str, str], *extra: str | Path) -> tuple[int, str, dict]:
    done = run_conformance(["check", "--goldens", golden, "--candidate", f"dump:{dump}", "--map",
                            EXAMPLE / "map.toml", "--reports", reports, "--no-html", "-q", *extra], env)  # fmt: skip
    summary = json.loads((reports / "summary.json").read_text()) if (reports / "summary.json").exists() else {}
    return done.returncode, done.stdout + done.stderr, summary


def test_the_port_names_and_lays_out_tensors_its_own_way(dump_dir: Path, store: GoldenStore) -> None:
    dump = load_file(str(dump_dir / "codec_decode_short.safetensors"))
    golden = store.case("codec_decode_short")
    assert not any("#" in name for name in dump), "the port must not use golden names"
    qkv = dump["dec.xf.0.attn.qkv.out@0"]
    q = golden.tensor("speech_tokenizer.decoder.pre_transformer.layers.0.self_attn.q_proj", 0, "outputs/0")
    assert qkv.shape[-1] == 3 * q.shape[-1]  # fused
    snake = dump["dec.stage1.res0.a1.out@0"]
    official = golden.tensor("speech_tokenizer.decoder.decoder.2.block.2.act1", 0, "outputs/0")
    assert snake.shape == (official.shape[0], official.shape[2], official.shape[1])  # NLC where official is NCL
    assert "debug.samples" in dump


def test_the_example_passes_through_its_mapping_file(dump_dir: Path, golden_f32: Path, tmp_path: Path,
                                                     env: dict[str, str]) -> None:  # fmt: skip
    code, output, summary = check(golden_f32, dump_dir, tmp_path / "reports", env, "--cases", *CODEC_CASES)
    assert code == 0, output
    assert summary["verdict"] == "pass" and summary["modes"] == ["chained"]
    for case in summary["cases"]:
        assert case["counts"]["pass"] > 180 and case["counts"]["fail"] == case["counts"]["not_covered"] == 0
        notes = " ".join(case["notes"])
        assert "0 matched nothing" in notes and "debug.samples" in notes  # the debug tensor is ignored, with reason
        assert case["blame"]["chained"] is None


def test_a_perturbed_layer_fails_and_is_blamed_with_its_replay_bundle(export_dir: Path, golden_f32: Path,
                                                                      tmp_path: Path, env: dict[str, str]) -> None:  # fmt: skip
    dump = tmp_path / "codec_decode_short.safetensors"
    done = run_port(export_dir / "codec_decode_short", dump, {**env, "FOREIGN_PORT_PERTURB": "dec.stage1.res0.a1"})
    assert done.returncode == 0, done.stderr
    mapping = tmp_path / "map.toml"  # the example's map, told where the export is
    mapping.write_text(f'export_dir = "{export_dir}"\n' + (EXAMPLE / "map.toml").read_text())
    done = run_conformance(["check", "--goldens", golden_f32, "--candidate", f"dump:{dump}", "--map", mapping,
                            "--reports", tmp_path / "reports", "-q"], env)  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    blamed = "speech_tokenizer.decoder.decoder.2.block.2.act1"  # the port's dec.stage1.res0.a1
    summary = json.loads((tmp_path / "reports" / "summary.json").read_text())
    case = summary["cases"][0]
    blame = case["blame"]["chained"]
    assert (blame["key"], blame["call"]) == (blamed, 0)
    # everything before the perturbed layer conforms; it and what follows it fail
    failing = [t for t in case["tensors"] if t["status"] == "fail"]
    assert failing and min(t["seq_end"] for t in failing) == blame["seq_end"]
    bundle = Path(blame["replay_bundle"])
    assert bundle == export_dir / "codec_decode_short" / "replay" / f"{blamed}#0.safetensors"
    assert re.search(rf"blame codec_decode_short \(chained\): {re.escape(blamed)}#0 — replay bundle: {re.escape(str(bundle))}",
                     done.stdout)  # fmt: skip
    # and where a CI job shows it: the step summary and the HTML report's first-divergence panel
    assert f"`{blamed}#0` → `{bundle}`" in (tmp_path / "reports" / "summary.md").read_text()
    assert f'<code class="replay-bundle">{bundle}</code>' in (tmp_path / "reports" / "index.html").read_text()
    # the bundle is what a port author needs to unit-test that layer alone
    tensors = load_file(str(bundle))
    with GoldenStore(golden_f32) as store:
        golden = store.case("codec_decode_short")
        np.testing.assert_array_equal(tensors["args/0"], golden.tensor(blamed, 0, "args/0"))
        np.testing.assert_array_equal(tensors["outputs/0"], golden.tensor(blamed, 0, "outputs/0"))
    assert {"weights/alpha", "weights/beta"} <= set(tensors)


def test_a_perturbed_transformer_layer_is_blamed_too(export_dir: Path, golden_f32: Path, tmp_path: Path,
                                                     env: dict[str, str]) -> None:  # fmt: skip
    dump = tmp_path / "codec_decode_long.safetensors"
    done = run_port(export_dir / "codec_decode_long", dump, env, "--perturb", "dec.xf.1.ffn.w2", "--scale", "1.01")
    assert done.returncode == 0, done.stderr
    code, output, summary = check(golden_f32, dump, tmp_path / "reports", env, "--cases", *CODEC_CASES)
    assert code == 1, output
    cases = {case["case"]: case for case in summary["cases"]}
    assert (
        cases["codec_decode_short"]["verdict"] == "incomplete"
    )  # the dump (named after its case) has only the long one
    blame = cases["codec_decode_long"]["blame"]["chained"]
    assert blame["key"] == "speech_tokenizer.decoder.pre_transformer.layers.1.mlp.down_proj"
    assert blame["replay_bundle"] == f"codec_decode_long/replay/{blame['key']}#0.safetensors"  # relative: no export_dir
    assert "replay bundle:" in output


def test_a_dump_missing_a_layer_is_incomplete_not_a_pass(dump_dir: Path, golden_f32: Path, tmp_path: Path,
                                                         env: dict[str, str]) -> None:  # fmt: skip
    tensors = load_file(str(dump_dir / "codec_decode_short.safetensors"))
    dropped = [name for name in tensors if name.startswith("dec.stage2.")]
    from safetensors.numpy import save_file

    partial = tmp_path / "codec_decode_short.safetensors"
    save_file(
        {k: v for k, v in tensors.items() if k not in dropped}, str(partial), metadata={"case": "codec_decode_short"}
    )
    code, output, summary = check(golden_f32, partial, tmp_path / "reports", env)
    assert code == 1, output
    assert summary["verdict"] == "incomplete"
    case = summary["cases"][0]
    missing = {t["key"] for t in case["tensors"] if t["status"] == "not_covered" and t["role"].startswith("outputs")}
    assert missing and all(k.startswith("speech_tokenizer.decoder.decoder.3") for k in missing)
    assert case["counts"]["fail"] == 0
