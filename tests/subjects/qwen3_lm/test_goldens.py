"""The Qwen3 causal LM's committed goldens and checkpoint: what the manifest says they are, rebuilt bit for bit from
the official config class, every parameter random, saved as the published Qwen3 checkpoints are, recorded
deterministically with the same CPU kernels as every other subject, small, and passed by the impl through the
project's own job (`nox -s conformance`)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from conformance import project
from conformance.store import GoldenStore, manifest
from conformance.subjects import get
from conformance.subjects.qwen3_lm.cases import CASES
from conformance.subjects.torch_model import file_sha256, weights_hashes
from tests.toy_subject import NAME as TOY

from ...conftest import GOLDENS, ROOT, ToyGoldens

NAME = "qwen3_lm"
POLICY = ROOT / "conformance-policy.toml"


def entry() -> dict:
    return json.loads((GOLDENS / "manifest.json").read_text())["subjects"][NAME]


def test_the_manifest_lists_the_pair_with_their_hashes_and_the_checkpoint() -> None:
    listed = entry()
    assert [(s["path"], s["dtype"]) for s in listed["stores"]] == [
        ("qwen3_lm-tiny-float32.h5", "float32"), ("qwen3_lm-tiny-float64.h5", "float64")]  # fmt: skip
    assert listed["stores"][0]["float64_reference"] == "qwen3_lm-tiny-float64.h5"
    for store in listed["stores"]:
        assert file_sha256(GOLDENS / store["path"]) == store["sha256"]
        assert store["cases"] == [case.name for case in CASES]
    assert weights_hashes(GOLDENS / listed["checkpoint"]["path"]) == listed["checkpoint"]["files"]
    assert sum(s["bytes"] for s in listed["stores"]) < 8e6
    total = sum(p.stat().st_size for p in GOLDENS.rglob("*") if p.is_file() and not p.is_symlink())
    assert total < 60e6, f"goldens/ holds {total / 1e6:.1f} MB"


def test_every_subject_is_recorded_with_the_same_cpu_kernels() -> None:
    """The tests pin torch's kernels to the ones the goldens were recorded with (tests/conftest.py), which they can
    do only when every subject of the manifest agrees: else the official models stop replaying bit for bit."""
    subjects = json.loads((GOLDENS / "manifest.json").read_text())["subjects"]
    found = {name: listed["software"]["torch_cpu_capability"] for name, listed in subjects.items()}
    assert NAME in found and len(set(found.values())) == 1, found


def test_the_checkpoint_is_rebuilt_bit_for_bit_from_the_official_config(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from safetensors import safe_open

    listed = entry()["checkpoint"]
    folder = get(NAME).checkpoints(tmp_path / "rebuilt", size=listed["size"], seed=listed["seed"])
    assert weights_hashes(folder) == listed["files"]
    config = transformers.AutoConfig.from_pretrained(folder)
    assert type(config) is transformers.Qwen3Config and config.architectures == ["Qwen3ForCausalLM"]
    # the traps a port meets: grouped-query attention, a head width that is not hidden / heads, an untied head
    assert config.num_key_value_heads < config.num_attention_heads
    assert config.head_dim * config.num_attention_heads != config.hidden_size
    generation = json.loads((folder / "generation_config.json").read_text())
    assert generation["do_sample"] is True and generation["eos_token_id"] == [3, 2] and generation["pad_token_id"] == 2
    with safe_open(str(folder / "model.safetensors"), "np") as tensors:
        names = list(tensors.keys())
        assert {tensors.get_slice(name).get_dtype() for name in names} == {"BF16"}  # as published
    fresh = transformers.Qwen3ForCausalLM(config)
    assert sorted(names) == sorted(name for name, _ in fresh.named_parameters())  # lm_head included: untied
    model = get(NAME).load(folder, "float32")
    for name, parameter in model.named_parameters():  # each drawn by its rule, none left at the official init
        values = parameter.detach().numpy().astype(np.float64)
        if name.endswith("norm.weight"):  # 1 + 0.3 N(0, 1): no identity norm
            assert abs(values.mean() - 1) < 0.3 and 0.15 < values.std() < 0.45, name
        else:  # N(0, 1) embeddings, N(0, 1 / fan_in) projections, N(0, 16 / fan_in) head; the init is N(0, 0.02^2)
            gain = 1.0 if "embed_tokens" in name else (4 if name == "lm_head.weight" else 1) / values.shape[1] ** 0.5
            assert abs(values.mean()) < 0.2 * gain and 0.8 < values.std() / gain < 1.2, name


def test_the_goldens_are_deterministic_and_generate_context_dependent_tokens() -> None:
    with GoldenStore(GOLDENS / "qwen3_lm-tiny-float32.h5") as store, \
            GoldenStore(GOLDENS / "qwen3_lm-tiny-float64.h5") as reference:  # fmt: skip
        assert store.cases == [case.name for case in CASES]
        for case in store:
            assert case.provenance["subject"] == NAME and case.provenance["determinism"]["bitwise_identical"]
            assert case.provenance["official_package"] == "transformers"
            assert case.provenance["checkpoint"] == {"lm": "checkpoints/qwen3_lm-tiny"}
            assert case.provenance["oracle"] == "isolated-float64" and not case.provenance.get("oracle_failures")
        sequences = store.case("lm_padded_batch").output("sequences")
        width = store.case("lm_padded_batch").input("input_ids").shape[1]
        assert sequences.shape == (2, width + 8)
        generated = sequences[:, width:]
        assert len(set(generated[0].tolist())) >= 4 and not np.array_equal(generated[0], generated[1])
        assert np.array_equal(store.case("lm_greedy").output("sequences")[0], sequences[0])  # padding changes nothing
        for name in ("lm_greedy", "lm_padded_batch"):  # the float64 reference generated the same tokens
            assert np.array_equal(reference.case(name).output("sequences"), store.case(name).output("sequences"))


def test_the_project_job_checks_the_impl_against_both_stores_and_passes(tmp_path: Path) -> None:
    """`nox -s conformance` for this subject: the impl against the float32 golden (calibrated on its float64 pair:
    no fallback note) and against the float64 golden, each passing; teacher forcing agrees at every step."""
    assert {e.subject for e in manifest.stores(GOLDENS)} >= {NAME, "qwen3_tts"}
    assert project.check(GOLDENS, POLICY, tmp_path, only=NAME, quiet=True) == 0
    for folder in (tmp_path / NAME, tmp_path / NAME / "float64"):
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["verdict"] == "pass" and summary["counts"]["fail"] == 0, folder
        assert all(not case["notes"] for case in summary["cases"]), [case["notes"] for case in summary["cases"]]
    summary = json.loads((tmp_path / NAME / "summary.json").read_text())
    steps = [t for case in summary["cases"] for t in case["tokens"] if t["mode"] == "teacher_forced_model"]
    assert len(steps) == 8 + 2 * 8 and all(t["classification"] == "agree" for t in steps)


def test_the_project_index_shows_every_subject(toy: ToyGoldens, tmp_path: Path) -> None:
    """Two subjects in one goldens folder (the toy's pair beside this subject's committed pair): the job checks each
    store with its subject's candidate and indexes every run, with its verdict, token agreement and report."""
    goldens = tmp_path / "goldens"
    shutil.copytree(GOLDENS / "checkpoints" / "qwen3_lm-tiny", goldens / "checkpoints" / "qwen3_lm-tiny")
    for path in (toy.golden, toy.reference, *(GOLDENS / s["path"] for s in entry()["stores"])):
        shutil.copy(path, goldens / path.name)
    manifest.update_subject(goldens, NAME, entry())
    manifest.update_subject(goldens, TOY, {"stores": [
        {"path": toy.golden.name, "dtype": "float32", "float64_reference": toy.reference.name},
        {"path": toy.reference.name, "dtype": "float64"}]})  # fmt: skip
    assert project.check(goldens, POLICY, tmp_path / "reports", quiet=True) == 0
    index = (tmp_path / "reports" / "summary.md").read_text()
    rows = [line for line in index.splitlines() if line.startswith(f"| {NAME} ") or line.startswith(f"| {TOY} ")]
    assert len(rows) == 4 and all("✅ pass" in row for row in rows)
    assert f"| {NAME} | `qwen3_lm-tiny-float32.h5` |" in index and "| 24 of 24 |" in index
    page = (tmp_path / "reports" / "index.html").read_text()
    for link in re.findall(r"href='([^']+)'", page):
        assert (tmp_path / "reports" / link).is_file()
    assert page.count("href=") == 4
