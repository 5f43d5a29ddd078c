"""Ingest of dumps made from the goldens themselves (a port that is exactly right), through an inverse
mapping: formats, folders, coverage, notes, blame through golden producers."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from conformance.compare.results import FAIL, PASS, CaseResult, TensorResult
from conformance.ports.blame import dump_blame, producers
from conformance.store import GoldenStore

from .conftest import FOREIGN_MAP, Outcome, foreign_dump, golden_outputs, write_safetensors

CASE = "codec_decode_short"
ACT1 = "speech_tokenizer.decoder.decoder.2.block.2.act1"


def run(cli: Callable[..., Outcome], golden: Path, dump: Path, tmp_path: Path, *extra: str | Path,
        mapping: str | None = None, cases: tuple[str, ...] = (CASE,)) -> tuple[Outcome, dict[str, Any]]:  # fmt: skip
    args: list[str | Path] = ["check", "--goldens", golden, "--candidate", f"dump:{dump}", "--reports",
                              tmp_path / "reports", "--no-html", "-q", "--cases", *cases, *extra]  # fmt: skip
    if mapping is not None:
        (tmp_path / "map.toml").write_text(mapping)
        args += ["--map", tmp_path / "map.toml"]
    outcome = cli(*args)
    summary_path = tmp_path / "reports" / "summary.json"
    return outcome, (json.loads(summary_path.read_text()) if summary_path.exists() else {})


def by_case(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {case["case"]: case for case in summary["cases"]}


def test_a_dump_under_golden_names_needs_no_map(cli, golden_f32: Path, tmp_path: Path, store: GoldenStore) -> None:
    outputs = golden_outputs(store, CASE)
    dump = write_safetensors(tmp_path / "dump.safetensors", outputs)
    outcome, summary = run(cli, golden_f32, dump, tmp_path)
    assert outcome.code == 0, outcome.err
    case = by_case(summary)[CASE]
    assert summary["modes"] == ["chained"]  # a dump has no isolated mode: it is not run by default
    assert case["counts"]["pass"] == len(outputs) and case["counts"]["not_covered"] == 0


@pytest.mark.parametrize("fmt", ["safetensors", "npz", "hdf5", "folder"])
def test_a_foreign_dump_passes_through_its_map(
    cli, golden_f32: Path, tmp_path: Path, store: GoldenStore, fmt: str
) -> None:
    tensors = foreign_dump(store, CASE)
    if fmt == "safetensors":
        dump = write_safetensors(tmp_path / "dump.safetensors", tensors)
    elif fmt == "npz":
        dump = tmp_path / "dump.npz"
        np.savez(dump, **tensors)
    elif fmt == "hdf5":
        dump = tmp_path / "dump.h5"
        with h5py.File(dump, "w") as handle:  # '/' in names becomes groups: read back as the same names
            for name, value in tensors.items():
                handle[name] = value
    else:
        dump = tmp_path / "dump"
        names = sorted(tensors)
        for i in range(3):
            write_safetensors(dump / f"part{i}.safetensors", {n: tensors[n] for n in names[i::3]})
    outcome, summary = run(cli, golden_f32, dump, tmp_path, mapping=FOREIGN_MAP)
    assert outcome.code == 0, outcome.err
    case = by_case(summary)[CASE]
    assert case["counts"]["fail"] == case["counts"]["not_covered"] == 0 and case["counts"]["pass"] > 180
    notes = " ".join(case["notes"])
    assert "1 ignored, 0 matched nothing" in notes and "scratch/workspace" in notes


def test_bfloat16_and_cast_dumps_are_read_and_judged(cli, golden_f32: Path, tmp_path: Path, store: GoldenStore) -> None:
    import struct

    outputs = golden_outputs(store, CASE)
    name = "speech_tokenizer.decoder.pre_conv#0/outputs/0"
    # a bfloat16 tensor (as Candle dumps it): read, widened, judged (bf16 rounding is far beyond float32 noise)
    bits = (outputs[name].astype(np.float32).view(np.uint32) >> 16).astype("<u2")
    rest = write_safetensors(tmp_path / "rest.safetensors", {k: v for k, v in outputs.items() if k != name})
    header = json.dumps({name: {"dtype": "BF16", "shape": list(bits.shape), "data_offsets": [0, bits.nbytes]}}).encode()
    folder = tmp_path / "dump"
    folder.mkdir()
    rest.rename(folder / "rest.safetensors")
    (folder / "bf16.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + bits.tobytes())
    outcome, summary = run(cli, golden_f32, folder, tmp_path)
    assert outcome.code == 1, outcome.err  # judged, not rejected
    failing = [t for t in by_case(summary)[CASE]["tensors"] if t["status"] == "fail"]
    assert failing[0]["key"] + "#0/" + failing[0]["role"] == name
    assert failing[0]["metrics"]["rel_l2"] < 1e-2
    # a float16 dump with a dtype cast in its rule
    casted = write_safetensors(tmp_path / "f16.safetensors",
                               {**{k: v for k, v in outputs.items() if k != name}, "pre": outputs[name].astype(np.float16)})  # fmt: skip
    outcome, summary = run(cli, golden_f32, casted, tmp_path,
                           mapping=f'[[rename]]\nmatch = "pre"\nto = "{name}"\ndtype = "float32"\n')  # fmt: skip
    assert outcome.code == 1
    assert by_case(summary)[CASE]["blame"]["chained"]["key"] == "speech_tokenizer.decoder.pre_conv"


def test_what_the_dump_lacks_and_what_matched_nothing_are_listed(cli, golden_f32: Path, tmp_path: Path,
                                                                 store: GoldenStore) -> None:  # fmt: skip
    outputs = golden_outputs(store, CASE)
    dropped = [n for n in outputs if n.startswith("speech_tokenizer.decoder.upsample.1.")]
    extra = {"junk": np.zeros(3, np.float32),
             "speech_tokenizer.decoder#5/outputs/0": np.zeros(3, np.float32),
             "nope#0/outputs/0": np.zeros(3, np.float32),
             "speech_tokenizer.decoder#0/outputs/7": np.zeros(3, np.float32),
             "speech_tokenizer.decoder.pre_transformer.layers.0.self_attn#0/kwargs/use_cache": np.zeros(1)}  # fmt: skip
    dump = write_safetensors(
        tmp_path / "dump.safetensors", {**{k: v for k, v in outputs.items() if k not in dropped}, **extra}
    )
    outcome, summary = run(cli, golden_f32, dump, tmp_path)
    assert outcome.code == 1 and summary["verdict"] == "incomplete"
    case = by_case(summary)[CASE]
    lacking = {f"{t['key']}#{t['call']}/{t['role']}" for t in case["tensors"] if t["status"] == "not_covered"
               and t["role"].startswith("outputs")}  # fmt: skip
    assert lacking == set(dropped)
    unmatched = {item["name"]: item["reason"] for item in case["unmatched"]}  # listed, not buried in notes
    assert set(unmatched) == set(extra)
    reasons = "\n".join(unmatched.values())
    assert "no rule of the map takes it" in reasons and "only 1 call(s)" in reasons and "no module 'nope'" in reasons
    assert "no tensor 'outputs/7'" in reasons and "not a tensor" in reasons
    notes = "\n".join(case["notes"])
    assert "5 matched nothing (listed as unmatched)" in notes and "junk" not in notes
    assert f"the dump lacks {len(dropped)} golden output tensor(s)" in notes
    markdown = (tmp_path / "reports" / "summary.md").read_text()
    assert f"- {CASE}: 5, first `" in markdown
    from conformance.report.html import render_report

    page = render_report(summary, tmp_path / "index.html").read_text()  # run() passes --no-html: rendered here
    assert "5 candidate tensor(s) matched no golden tensor" in page
    for name in extra:
        assert f"<code>{name}</code>" in page
    outcome, summary = run(cli, golden_f32, dump, tmp_path, "--allow-partial")
    assert outcome.code == 0 and by_case(summary)[CASE]["counts"]["not_covered"] == len(dropped)
    # let through the gate, but never reported as a pass of the whole
    assert summary["verdict"] == "partial" and by_case(summary)[CASE]["verdict"] == "incomplete"
    assert "conformance: partial" in (tmp_path / "reports" / "summary.md").read_text()


@pytest.mark.parametrize("allow_partial", [False, True])
def test_a_dump_that_matches_no_golden_tensor_is_bad_input(cli, golden_f32: Path, tmp_path: Path, store: GoldenStore,
                                                           allow_partial: bool) -> None:  # fmt: skip
    """A foreign port's dump checked without its map: not a port that covers nothing (exit 1, "not covered"),
    but a mistake to name (exit 2), even when --allow-partial would let a partial port through."""
    dump = write_safetensors(tmp_path / "dump.safetensors", foreign_dump(store, CASE))
    extra = ("--allow-partial",) if allow_partial else ()
    outcome, summary = run(cli, golden_f32, dump, tmp_path, *extra)
    assert outcome.code == 2 and len(outcome.error_lines) == 1, outcome.err
    line = outcome.error_lines[0]
    assert line.startswith(f"conformance: error: {dump}: the dump matches no golden tensor of case {CASE}: wrong "
                           "case or missing map?"), line  # fmt: skip
    assert "matched nothing (first: p/" in line and not summary
    # everything ignored by the map is the same mistake
    outcome, _ = run(cli, golden_f32, dump, tmp_path, *extra, mapping="[[ignore]]\nmatch = '.*'\nreason = 'all'\n")
    assert outcome.code == 2 and "matches no golden tensor" in outcome.error_lines[0]
    assert "ignored by the map" in outcome.error_lines[0]


def test_isolated_mode_is_not_covered_by_a_dump(cli, golden_f32: Path, tmp_path: Path, store: GoldenStore) -> None:
    dump = write_safetensors(tmp_path / "dump.safetensors", golden_outputs(store, CASE))
    outcome, summary = run(cli, golden_f32, dump, tmp_path, "--mode", "both")
    assert outcome.code == 1 and summary["verdict"] == "incomplete"
    isolated = [t for t in by_case(summary)[CASE]["tensors"] if t["mode"] == "isolated"]
    assert isolated and all(t["status"] == "not_covered" for t in isolated)


def test_one_dump_per_case_in_a_folder(cli, golden_f32: Path, tmp_path: Path, store: GoldenStore) -> None:
    dump = tmp_path / "dumps"
    write_safetensors(dump / CASE / "all.safetensors", foreign_dump(store, CASE))
    tensors = foreign_dump(store, "codec_decode_long")
    names = sorted(tensors)
    write_safetensors(dump / "codec_decode_long" / "a.safetensors", {n: tensors[n] for n in names[::2]})
    write_safetensors(dump / "codec_decode_long" / "b.safetensors", {n: tensors[n] for n in names[1::2]})
    outcome, summary = run(cli, golden_f32, dump, tmp_path, mapping=FOREIGN_MAP,
                           cases=(CASE, "codec_decode_long", "codec_chunked_decode"))  # fmt: skip
    cases = by_case(summary)
    assert cases[CASE]["verdict"] == cases["codec_decode_long"]["verdict"] == "pass"
    assert cases["codec_chunked_decode"]["verdict"] == "incomplete"  # no dump for it: never a pass
    assert outcome.code == 1


def test_metadata_names_the_case(cli, golden_f32: Path, tmp_path: Path, store: GoldenStore) -> None:
    dump = write_safetensors(tmp_path / "port.safetensors", golden_outputs(store, "codec_decode_long"),
                             {"case": "codec_decode_long"})  # fmt: skip
    outcome, summary = run(cli, golden_f32, dump, tmp_path, cases=(CASE, "codec_decode_long"))
    cases = by_case(summary)
    assert cases["codec_decode_long"]["verdict"] == "pass" and cases[CASE]["verdict"] == "incomplete"
    assert outcome.code == 1


def test_blame_is_the_perturbed_module_and_names_its_bundle(cli, golden_f32: Path, tmp_path: Path,
                                                            store: GoldenStore) -> None:  # fmt: skip
    # only the perturbed module's output is off (a synthetic dump does not propagate the error)
    tensors = foreign_dump(store, CASE, perturb={f"{ACT1}#0/outputs/0": 1.01})
    dump = write_safetensors(tmp_path / "dump.safetensors", tensors)
    outcome, summary = run(cli, golden_f32, dump, tmp_path, mapping=FOREIGN_MAP)
    assert outcome.code == 1
    blame = by_case(summary)[CASE]["blame"]["chained"]
    assert (blame["key"], blame["call"]) == (ACT1, 0)
    assert blame["inputs"] == ["speech_tokenizer.decoder.decoder.2.block.1#0/outputs/0"]  # its producer, which passes
    assert blame["replay_bundle"] == f"{CASE}/replay/{ACT1}#0.safetensors"
    assert f"replay bundle: {CASE}/replay/{ACT1}#0.safetensors" in outcome.out


# -- producers and blame, on the golden's own structure ------------------------------------------------------


def test_producers_come_from_shared_storage(store: GoldenStore) -> None:
    graph = producers(store.case(CASE))
    layer = "speech_tokenizer.decoder.pre_transformer.layers.0"
    names = {leaf.name for leaf in graph[(f"{layer}.input_layernorm", 0, "args/0")]}
    assert names == {"speech_tokenizer.decoder.pre_transformer.input_proj#0/outputs/0"}
    names = {leaf.name for leaf in graph[(f"{layer}.self_attn", 0, "kwargs/position_embeddings/1")]}
    assert names == {"speech_tokenizer.decoder.pre_transformer.rotary_emb#0/outputs/1"}
    # a tensor computed between modules (a transpose, a pad) has no recorded producer
    assert ("speech_tokenizer.decoder.pre_transformer", 0, "kwargs/inputs_embeds") not in graph
    # producers always return before their consumer starts
    case = store.case(CASE)
    for (key, call, _), leaves in graph.items():
        start = case.get_call(key, call).seq_start
        assert all(case.get_call(p.key, p.call).seq_end < start for p in leaves)


def _result(case_name: str, statuses: dict[str, str], store: GoldenStore) -> CaseResult:
    case = store.case(case_name)
    result = CaseResult(case_name, "", "float32", ["chained"])
    for leaf in case.leaves():
        if leaf.is_tensor and leaf.role.startswith("outputs"):
            call = case.get_call(leaf.key, leaf.call)
            result.tensors.append(TensorResult(case_name, "chained", leaf.key, leaf.call, leaf.role,
                                               statuses.get(leaf.name, PASS), seq_start=call.seq_start,
                                               seq_end=call.seq_end, message="off"))  # fmt: skip
    return result


def test_a_module_whose_input_producer_fails_is_not_blamed(store: GoldenStore) -> None:
    ln = "speech_tokenizer.decoder.pre_transformer.layers.0.input_layernorm#0/outputs/0"
    proj = "speech_tokenizer.decoder.pre_transformer.input_proj#0/outputs/0"
    result = _result(CASE, {ln: FAIL, proj: FAIL}, store)
    assert dump_blame(store.case(CASE), result).key == "speech_tokenizer.decoder.pre_transformer.input_proj"
    # the layer norm's own input was dumped and fails: it is not blamed even when its producer passes
    result = _result(CASE, {ln: FAIL}, store)
    result.tensors.append(TensorResult(CASE, "chained", ln.split("#")[0], 0, "args/0", FAIL))
    assert dump_blame(store.case(CASE), result) is None
    result = _result(CASE, {ln: FAIL}, store)
    blame = dump_blame(store.case(CASE), result)
    assert blame is not None and blame.key == ln.split("#")[0] and blame.inputs == [proj]


def test_a_dump_is_described_by_its_metadata_and_file_hashes(cli, golden_f32: Path, tmp_path: Path,
                                                             store: GoldenStore) -> None:  # fmt: skip
    """What a dump says about itself (safetensors __metadata__, HDF5 root attributes) and the sha256 of every file
    the check read; a declared official version other than the golden's is called out."""
    import hashlib
    import xml.etree.ElementTree as ET

    outputs = golden_outputs(store, CASE)
    names = sorted(outputs)
    folder = tmp_path / "dump"
    write_safetensors(folder / "a.safetensors", {n: outputs[n] for n in names[::2]},
                      metadata={"case": CASE, "producer": "candle-port 0.4.1", "official_version": "0.1.2"})  # fmt: skip
    with h5py.File(folder / "b.h5", "w") as handle:
        handle.attrs["producer"] = "candle-port 0.4.1 (decoder half)"
        handle.attrs["transformers_version"] = "4.57.3"
        for name in names[1::2]:
            handle[name] = outputs[name]
    outcome, summary = run(cli, golden_f32, folder, tmp_path)
    assert outcome.code == 0, outcome.err
    provenance = summary["candidate_provenance"]
    assert provenance["kind"] == "dump" and provenance["path"] == str(folder)
    assert provenance["metadata"] == {"case": CASE, "producer": "candle-port 0.4.1", "official_version": "0.1.2",
                                      "transformers_version": "4.57.3"}  # fmt: skip
    files = {Path(info["path"]).name: info for info in provenance["files"]}
    assert set(files) == {"a.safetensors", "b.h5"} and files["b.h5"]["format"] == "hdf5"
    for name, info in files.items():
        assert info["sha256"] == hashlib.sha256((folder / name).read_bytes()).hexdigest()
        assert info["bytes"] == (folder / name).stat().st_size
    # the dump states an official version other than the recording's (and the same transformers)
    assert summary["provenance_differences"] == [{"field": "official_version", "golden": "0.1.1", "candidate": "0.1.2"}]
    markdown = (tmp_path / "reports" / "summary.md").read_text()
    assert f"`{files['a.safetensors']['sha256']}`" in markdown
    assert "> - official_version: the golden was recorded with 0.1.1, the candidate ran 0.1.2" in markdown
    properties = {p.get("name"): p.get("value") for p in ET.parse(tmp_path / "reports" / "junit.xml").iter("property")}
    assert properties["candidate.metadata.producer"] == "candle-port 0.4.1"
    assert properties["candidate.files.1.sha256"] == files["b.h5"]["sha256"]
