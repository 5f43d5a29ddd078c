"""Interface mismatches and name maps for Python candidates, on the toy's NumPy port changed the way a third party
would: its attention takes the mask as `attn_mask` (and nothing it does not name), its MLPs live at `layers.N.ffn`.
Checked through `conformance check` in-process.

A renamed keyword is an `interface_mismatch` in isolated mode (not a numeric failure: chained mode still judges the
numbers); a moved module is not covered; `--map` with [modules] and [[kwargs]] makes both pass; a TypeError raised
inside a module's own code is a crash.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")

from conformance.compare.candidate import InterfaceMismatch, check_call
from conformance.compare.results import ERROR, INTERFACE, NOT_COVERED, PASS
from tests import toy_subject
from tests.conftest import ToyGoldens
from tests.ports.conftest import Outcome
from tests.ports.conftest import cli as cli  # the in-process `conformance` runner fixture
from tests.toy_subject import ToyImpl

ROOT = Path(__file__).resolve().parents[2]
ATTENTION = "layers.{}.self_attn"
KWARGS = '[[kwargs]]\nmodules = "layers.*.self_attn"\nnames = { attention_mask = "attn_mask" }\n'
MODULES = '[modules]\n"layers.0.mlp" = "layers.0.ffn"\n"layers.1.mlp" = "layers.1.ffn"\n'


def rename_keyword(model: Any) -> None:
    """Every attention takes the mask as `attn_mask`, and its block passes it so."""
    for layer in model.layers:
        attention = type(layer.self_attn)

        def forward(self: Any, hidden_states: np.ndarray, attn_mask: np.ndarray | None = None,
                    attention: Any = attention) -> np.ndarray:  # fmt: skip
            return attention.forward(self, hidden_states, attention_mask=attn_mask)

        layer.self_attn.__class__ = type("MaskAttention", (attention,), {"forward": forward})

        def block(hidden_states: np.ndarray, attention_mask: Any = None, layer: Any = layer) -> np.ndarray:
            hidden_states = hidden_states + layer.self_attn(layer.input_norm(hidden_states), attn_mask=attention_mask)
            return hidden_states + layer.mlp(layer.post_norm(hidden_states))

        layer.forward = block


def move_mlp(model: Any) -> None:
    """The MLPs live at `ffn`: nothing answers to `mlp` outside the block's forward (which still reaches it)."""
    for layer in model.layers:
        layer.ffn = vars(layer).pop("mlp")
        forward = layer.forward

        def forward_with_ffn(*args: Any, layer: Any = layer, forward: Any = forward, **kwargs: Any) -> Any:
            vars(layer)["mlp"] = layer.ffn
            try:
                return forward(*args, **kwargs)
            finally:
                del vars(layer)["mlp"]

        layer.forward = forward_with_ffn


def raise_inside_the_head(model: Any) -> None:
    """A bug inside the module's own code that happens to be a TypeError: a crash, not an interface mismatch."""
    model.lm_head.forward = lambda input: len(input.shape) + None  # type: ignore[operator]


def port(*edits: Callable[[Any], None]) -> type[ToyImpl]:
    """The NumPy toy after a third party's edits, applied once to the loaded model (then re-bound)."""

    def prepare(self: ToyImpl, store: Any, case: Any) -> None:
        ToyImpl.prepare(self, store, case)
        if not getattr(self.model, "ported", False):
            for edit in edits:
                edit(self.model)
            self.model.bind()
            self.model.ported = True

    return type("Port", (ToyImpl,), {"prepare": prepare})


def check(cli: Callable[..., Outcome], toy: ToyGoldens, tmp_path: Path, *extra: str | Path) -> tuple[Outcome, dict]:
    reports = tmp_path / "reports"
    outcome = cli("check", "--goldens", toy.golden, "--candidate", "impl", "--cases", "toy_prefill", "--policy",
                  ROOT / "conformance-policy.toml", "--reports", reports, "--no-html", *extra)  # fmt: skip
    summary = json.loads((reports / "summary.json").read_text()) if (reports / "summary.json").exists() else {}
    return outcome, summary


def tensors(summary: dict, mode: str, key: str, outputs: bool = True) -> list[dict]:
    return [t for case in summary["cases"] for t in case["tensors"]
            if t["mode"] == mode and t["key"] == key and t["role"].startswith("outputs") == outputs]  # fmt: skip


def write_map(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "port-map.toml"
    path.write_text(text)
    return path


def test_a_renamed_keyword_is_an_interface_mismatch_not_a_numeric_failure(cli, toy: ToyGoldens, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setattr(toy_subject, "ToyImpl", port(rename_keyword))
    outcome, summary = check(cli, toy, tmp_path)
    assert outcome.code == 1 and summary["verdict"] == "incomplete", outcome.err
    assert summary["counts"]["fail"] == summary["counts"]["error"] == 0
    for layer in (0, 1):
        isolated = tensors(summary, "isolated", ATTENTION.format(layer))
        assert isolated and all(t["status"] == INTERFACE for t in isolated)
        assert "candidate takes attn_mask, golden passes attention_mask" in isolated[0]["message"]
        chained = tensors(summary, "chained", ATTENTION.format(layer))  # the numbers are still judged
        assert chained and all(t["status"] == PASS for t in chained)
    assert summary["cases"][0]["blame"] == {"isolated": None, "chained": None}
    assert {f.get("type") for f in ET.parse(tmp_path / "reports" / "junit.xml").getroot().iter("failure")} == {
        INTERFACE
    }
    outcome, summary = check(cli, toy, tmp_path, "--allow-partial")
    assert outcome.code == 0 and summary["verdict"] == "partial"


def test_the_map_renames_the_keyword_and_moves_the_modules_in_both_modes(cli, toy: ToyGoldens, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setattr(toy_subject, "ToyImpl", port(rename_keyword, move_mlp))
    outcome, summary = check(cli, toy, tmp_path)
    for mode in ("isolated", "chained"):
        mlp = tensors(summary, mode, "layers.0.mlp")
        assert mlp and all(t["status"] == NOT_COVERED for t in mlp), mode
    outcome, summary = check(cli, toy, tmp_path, "--map", write_map(tmp_path, MODULES + "\n" + KWARGS))
    assert outcome.code == 0 and summary["verdict"] == "pass", outcome.err
    for mode in ("isolated", "chained"):
        mlp = tensors(summary, mode, "layers.1.mlp")
        assert mlp and all(t["status"] == PASS and t["metrics"] for t in mlp), mode
    masks = [t for t in tensors(summary, "chained", ATTENTION.format(0), outputs=False)
             if t["role"] == "kwargs/attention_mask"]  # fmt: skip
    assert masks and all(t["status"] == PASS for t in masks)  # the port's `attn_mask` judged as the golden's mask
    assert summary["candidate_provenance"]["map"].endswith("port-map.toml")


def test_a_type_error_inside_the_module_is_a_crash_not_an_interface_mismatch(cli, toy: ToyGoldens, tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setattr(toy_subject, "ToyImpl", port(raise_inside_the_head))
    outcome, summary = check(cli, toy, tmp_path, "--mode", "isolated")
    assert outcome.code == 2
    head = tensors(summary, "isolated", "lm_head")
    assert head and all(t["status"] == ERROR and "TypeError" in t["message"] for t in head)
    assert summary["counts"][INTERFACE] == 0


class Attention:
    """A module as torch and the impl have them: called through `__call__(*args, **kwargs)`, its forward says what
    it takes."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    def forward(self, hidden_states: Any, position_embeddings: Any, attention_mask: Any = None,
                pos_ids: Any = None) -> None:  # fmt: skip
        raise TypeError("inside the module")


def test_check_call_tells_arguments_that_do_not_bind_from_a_call_that_fails() -> None:
    def rotary(x: np.ndarray, position_ids: np.ndarray) -> None:
        raise TypeError("inside the module")

    check_call(rotary, [1, 2], {})  # binds: whatever the call does later is the module's own
    with pytest.raises(InterfaceMismatch, match="golden passes 3 positional arguments, candidate takes 2"):
        check_call(rotary, [1, 2, 3], {})
    with pytest.raises(InterfaceMismatch, match="candidate requires position_ids, which the golden does not pass"):
        check_call(rotary, [1], {})
    with pytest.raises(InterfaceMismatch, match="golden passes scale, which the candidate does not take"):
        check_call(rotary, [1, 2], {"scale": 3})
    with pytest.raises(InterfaceMismatch, match=r"candidate takes pos_ids, golden passes position_ids \(candidate "
                                                r"signature \(hidden_states, position_embeddings"):  # fmt: skip
        check_call(Attention(), [], {"hidden_states": 1, "position_embeddings": 2, "attention_mask": 3,
                                     "position_ids": 4})  # fmt: skip
