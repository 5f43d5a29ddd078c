"""Interface mismatches and name maps for Python candidates, on a NumPy port built from the impl the way a
third party would change it: its talker attention takes the positions as `pos_ids` (and nothing it does not
name), its rotary embedding lives at `talker.model.rope`. Checked through `conformance check` in-process.

A renamed keyword is an `interface_mismatch` in isolated mode (not a numeric failure: chained mode still
judges the numbers); a moved module is not covered; `--map` with [modules] and [[kwargs]] makes both pass.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conformance.compare import engine
from conformance.compare.policy import load_policy
from conformance.compare.results import ERROR, FAIL, INTERFACE, NOT_COVERED, PASS
from conformance.ports.mapped import MappedCandidate
from conformance.ports.mapping import parse_mapping
from conformance.store import GoldenStore
from conformance.subjects.qwen3_tts import impl_binding
from conformance.subjects.qwen3_tts.impl_binding import ImplCandidate
from conformance.subjects.qwen3_tts.subject import SUBJECT
from impl.qwen3_tts import decoder as impl_decoder
from impl.qwen3_tts import talker as impl_talker
from tests.ports import conftest as ports_conftest
from tests.ports.conftest import Outcome

cli = ports_conftest.cli  # the in-process `conformance` runner fixture

ROOT = Path(__file__).resolve().parents[3]
POLICY = ROOT / "conformance-policy.toml"
CASE = "tts_custom_voice"
ATTENTION = "talker.model.layers.{}.self_attn"
MAP = """
[modules]
"talker.model.rotary_emb" = "talker.model.rope"

[[kwargs]]
modules = "talker.model.layers.*.self_attn"
names = { position_ids = "pos_ids" }
"""


# -- the port ------------------------------------------------------------------------------------------------


class PosIdsAttention(impl_decoder.Qwen3TTSAttention):
    """The talker attention of the port: positions as `pos_ids`, no catch-all keywords."""

    def forward(self, hidden_states: np.ndarray, position_embeddings: tuple[np.ndarray, np.ndarray],
                attention_mask: np.ndarray | None, past_key_values: dict | None = None,
                cache_position: np.ndarray | None = None, pos_ids: np.ndarray | None = None,
                output_attentions: bool = False, use_cache: bool = False) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        return super().forward(hidden_states, position_embeddings, attention_mask, past_key_values, cache_position)


class PosIdsDecoderLayer(impl_decoder.Qwen3TTSDecoderLayer):
    """Its decoder layer, which passes the positions under the attention's name for them."""

    def forward(self, hidden_states: np.ndarray, attention_mask: np.ndarray | None = None, position_ids: Any = None,
                past_key_values: dict | None = None, output_attentions: bool | None = False,
                use_cache: bool | None = False, cache_position: np.ndarray | None = None,
                position_embeddings: tuple[np.ndarray, np.ndarray] | None = None, **kwargs: Any) -> tuple:  # fmt: skip
        attended, weights = self.self_attn(hidden_states=self.input_layernorm(hidden_states),
                                           position_embeddings=position_embeddings, attention_mask=attention_mask,
                                           past_key_values=past_key_values, cache_position=cache_position,
                                           pos_ids=position_ids, output_attentions=output_attentions,
                                           use_cache=use_cache)  # fmt: skip
        hidden_states = hidden_states + attended
        hidden_states = hidden_states + self.mlp(self.post_attention_layernorm(hidden_states))
        return (hidden_states, weights) if output_attentions else (hidden_states,)


class RopeTalkerModel(impl_talker.TalkerModel):
    """Its talker model, which keeps the rotary embedding as `rope` (nothing answers to `rotary_emb` outside
    its forward, which is the impl's and so looks the module up under the official name while it runs)."""

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        vars(self)["rotary_emb"] = self.rope
        try:
            return super().forward(*args, **kwargs)
        finally:
            del vars(self)["rotary_emb"]


def rename_keyword(tts: Any) -> None:
    for layer in tts.talker.model.layers:
        layer.__class__ = PosIdsDecoderLayer
        layer.self_attn.__class__ = PosIdsAttention


def move_rotary(tts: Any) -> None:
    model = tts.talker.model
    model.rope = vars(model).pop("rotary_emb")
    model.__class__ = RopeTalkerModel


def raise_inside_rotary(tts: Any) -> None:
    """A bug inside the module's code that happens to be a TypeError: a crash, not an interface mismatch."""

    def forward(x: np.ndarray, position_ids: np.ndarray, **kwargs: Any) -> Any:
        return len(position_ids.shape) + None  # type: ignore[operator]

    tts.talker.model.rotary_emb.forward = forward


class NumpyPort(ImplCandidate):
    """The impl after a third party's edits (applied once to the loaded model, which is then re-bound)."""

    edits: tuple[Callable[[Any], None], ...] = ()

    def prepare(self, store: GoldenStore, case: Any) -> None:
        super().prepare(store, case)
        tts = self.roots.get("")
        if tts is not None and not getattr(tts, "ported", False):
            for edit in self.edits:
                edit(tts)
            tts.bind("")
            tts.ported = True


def port(*edits: Callable[[Any], None]) -> type[NumpyPort]:
    return type("Port", (NumpyPort,), {"edits": edits})


def check(cli: Callable[..., Outcome], tmp_path: Path, *extra: str | Path, golden: Path,
          quiet: bool = True) -> tuple[Outcome, dict]:  # fmt: skip
    reports = tmp_path / "reports"
    outcome = cli("check", "--goldens", golden, "--candidate", "impl", "--cases", CASE, "--policy", POLICY,
                  "--reports", reports, "--no-html", *(["-q"] if quiet else []), *extra)  # fmt: skip
    summary = json.loads((reports / "summary.json").read_text()) if (reports / "summary.json").exists() else {}
    return outcome, summary


def tensors(summary: dict, mode: str, key: str, outputs: bool = True) -> list[dict]:
    return [t for case in summary["cases"] for t in case["tensors"]
            if t["mode"] == mode and t["key"] == key and t["role"].startswith("outputs") == outputs]  # fmt: skip


def write_map(tmp_path: Path, text: str = MAP) -> Path:
    path = tmp_path / "port-map.toml"
    path.write_text(text)
    return path


# -- interface mismatch ---------------------------------------------------------------------------------------


def test_a_renamed_keyword_is_an_interface_mismatch_not_a_numeric_failure(cli, tmp_path: Path, golden_f32: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setattr(impl_binding, "ImplCandidate", port(rename_keyword))
    outcome, summary = check(cli, tmp_path, golden=golden_f32, quiet=False)
    assert outcome.code == 1 and summary["verdict"] == "incomplete", outcome.err
    assert summary["counts"]["fail"] == summary["counts"]["error"] == 0
    for layer in (0, 1):
        isolated = tensors(summary, "isolated", ATTENTION.format(layer))
        assert isolated and all(t["status"] == INTERFACE for t in isolated)
        assert "candidate takes pos_ids, golden passes position_ids" in isolated[0]["message"]
        chained = tensors(summary, "chained", ATTENTION.format(layer))  # the numbers are still judged
        assert chained and all(t["status"] == PASS for t in chained)
    assert summary["counts"][INTERFACE] == sum(len(tensors(summary, "isolated", ATTENTION.format(i))) for i in (0, 1))
    case = summary["cases"][0]
    assert case["blame"]["isolated"] is None and case["blame"]["chained"] is None
    markdown = (tmp_path / "reports" / "summary.md").read_text()
    assert "| interface mismatch |" in markdown and "candidate takes pos_ids, golden passes position_ids" in markdown
    junit = ET.parse(tmp_path / "reports" / "junit.xml").getroot()
    failures = {f.get("type") for f in junit.iter("failure")}
    assert failures == {INTERFACE}, failures  # reported apart from numeric divergence
    assert f"{summary['counts'][INTERFACE]} interface mismatch" in " ".join(outcome.err.split())  # console counts


def test_allow_partial_lets_an_interface_mismatch_through_as_partial(cli, tmp_path: Path, golden_f32: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setattr(impl_binding, "ImplCandidate", port(rename_keyword))
    outcome, summary = check(cli, tmp_path, "--allow-partial", golden=golden_f32)
    assert outcome.code == 0 and summary["verdict"] == "partial"
    junit = ET.parse(tmp_path / "reports" / "junit.xml").getroot()
    assert not list(junit.iter("failure"))
    assert any("interface mismatch" in (s.get("message") or "") for s in junit.iter("skipped"))


def test_the_map_renames_the_keyword_in_both_modes(cli, tmp_path: Path, golden_f32: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setattr(impl_binding, "ImplCandidate", port(rename_keyword))
    text = MAP.replace('[modules]\n"talker.model.rotary_emb" = "talker.model.rope"\n', "")
    outcome, summary = check(cli, tmp_path, "--map", write_map(tmp_path, text), golden=golden_f32)
    assert outcome.code == 0 and summary["verdict"] == "pass", outcome.err
    for layer in (0, 1):  # chained: the port's `pos_ids` is judged as the golden's position_ids
        inputs = [t for t in tensors(summary, "chained", ATTENTION.format(layer), outputs=False)
                  if t["role"] == "kwargs/position_ids"]  # fmt: skip
        assert inputs and all(t["status"] == PASS for t in inputs)
    assert summary["candidate_provenance"]["map"].endswith("port-map.toml")


def test_a_type_error_inside_the_module_is_a_crash_not_an_interface_mismatch(cli, tmp_path: Path, golden_f32: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setattr(impl_binding, "ImplCandidate", port(raise_inside_rotary))
    outcome, summary = check(cli, tmp_path, "--mode", "isolated", golden=golden_f32)
    assert outcome.code == 2
    rotary = tensors(summary, "isolated", "talker.model.rotary_emb")
    assert rotary and all(t["status"] == ERROR and "TypeError" in t["message"] for t in rotary)
    assert summary["counts"][INTERFACE] == 0


# -- moved modules ----------------------------------------------------------------------------------------------


def test_a_moved_module_is_not_covered_without_the_map_and_passes_with_it(cli, tmp_path: Path, golden_f32: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setattr(impl_binding, "ImplCandidate", port(move_rotary))
    outcome, summary = check(cli, tmp_path, golden=golden_f32)
    assert outcome.code == 1 and summary["verdict"] == "incomplete"
    for mode in ("isolated", "chained"):
        rotary = tensors(summary, mode, "talker.model.rotary_emb")
        assert rotary and all(t["status"] == NOT_COVERED for t in rotary), mode
    assert summary["counts"]["fail"] == 0
    outcome, summary = check(cli, tmp_path, "--map", write_map(tmp_path, MAP.split("[[kwargs]]")[0]),
                             golden=golden_f32)  # fmt: skip
    assert outcome.code == 0 and summary["verdict"] == "pass", outcome.err
    for mode in ("isolated", "chained"):
        rotary = tensors(summary, mode, "talker.model.rotary_emb")
        assert rotary and all(t["status"] == PASS for t in rotary), mode


def test_one_map_for_a_port_with_both_changes_through_the_engine(golden_f32: Path) -> None:
    candidate = MappedCandidate(port(rename_keyword, move_rotary)(), parse_mapping(__import__("tomllib").loads(MAP)))
    with GoldenStore(golden_f32) as store:
        options = engine.CheckOptions(cases=[CASE], subject=SUBJECT)
        run = engine.check(store, candidate, load_policy(POLICY), options)
    assert run.verdict == PASS, [t.name for t in run.cases[0].tensors if t.status != PASS][:5]
    # the rotary embedding was really reached at its new path (not skipped): its outputs were judged
    rotary = [t for t in run.cases[0].tensors if t.key == "talker.model.rotary_emb" and not t.is_input]
    assert {t.mode for t in rotary} == {"isolated", "chained"} and all(t.metrics for t in rotary)
    assert not any(t.status == FAIL for t in run.cases[0].tensors)
