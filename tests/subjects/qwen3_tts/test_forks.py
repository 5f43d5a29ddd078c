"""Forks of the official package checked with `--candidate official`, as their authors would: a copy of
qwen_tts with its model code edited (forks.py), imported ahead of the installed one, in a fresh process.

* int64 text positions of shape [1, L] handed to the rotary embedding (the golden holds the float32
  [3, 1, L] grid): the same numbers, so the check passes, with notes;
* the same fork with an uninitialised `inv_freq`: exit 1, and both blames and summary.md name the rotary
  embedding, not the module that contains it;
* a talker attention taking `pos_ids` and a rotary embedding moved to `talker.model.rope`: an interface
  mismatch and a module not covered (exit 1, no numeric failure); the map makes the fork pass.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .forks import GARBAGE_ROPE, INT_POSITIONS, MOVED_ROTARY, RENAMED_KWARG, make_fork, run_check

pytest.importorskip("torch")
pytestmark = [pytest.mark.official, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[3]
CASE = "tts_custom_voice"
ROTARY = "talker.model.rotary_emb"


def check(fork: Path, golden: Path, reports: Path, *extra: str | Path) -> tuple[int, str, dict]:
    done = run_check(fork, "--goldens", golden, "--candidate", "official", "--cases", CASE, "--reports", reports,
                     "--policy", ROOT / "conformance-policy.toml", "--no-html", *extra)  # fmt: skip
    summary = json.loads((reports / "summary.json").read_text()) if (reports / "summary.json").exists() else {}
    return done.returncode, done.stdout + done.stderr, summary


def statuses(summary: dict, mode: str, key: str, outputs: bool = True) -> set[str]:
    return {t["status"] for case in summary["cases"] for t in case["tensors"]
            if t["mode"] == mode and t["key"] == key and t["role"].startswith("outputs") == outputs}  # fmt: skip


def test_int64_positions_of_another_shape_pass_with_notes(tmp_path: Path, golden_f32: Path) -> None:
    fork = make_fork(tmp_path / "fork", INT_POSITIONS)
    code, output, summary = check(fork, golden_f32, tmp_path / "reports")
    assert code == 0 and summary["verdict"] == "pass", output[-2000:]
    positions = [t for t in summary["cases"][0]["tensors"]
                 if t["mode"] == "chained" and t["key"] == ROTARY and t["role"] == "args/1"]  # fmt: skip
    assert len(positions) == 4 and all(t["status"] == "pass" for t in positions)
    assert all("int64 vs the golden's float32" in t["note"] and "broadcasting" in t["note"] for t in positions)
    assert any("equal the golden by value only" in note for note in summary["cases"][0]["notes"])


def test_an_uninitialised_rope_is_blamed_on_the_rotary_embedding_in_both_modes(tmp_path: Path,
                                                                               golden_f32: Path) -> None:  # fmt: skip
    fork = make_fork(tmp_path / "fork", INT_POSITIONS, GARBAGE_ROPE)
    code, output, summary = check(fork, golden_f32, tmp_path / "reports")
    assert code == 1 and summary["verdict"] == "fail", output[-2000:]
    blame = summary["cases"][0]["blame"]
    assert blame["isolated"]["key"] == ROTARY and blame["chained"]["key"] == ROTARY, blame
    assert f"`{ROTARY}#0`" in (tmp_path / "reports" / "summary.md").read_text()
    positions = [t for t in summary["cases"][0]["tensors"]
                 if t["mode"] == "chained" and t["key"] == ROTARY and t["role"] == "args/1"]  # fmt: skip
    assert positions and all(t["status"] == "pass" for t in positions)  # the blamed module's inputs conform


def test_a_renamed_keyword_and_a_moved_module_are_unjudged_until_mapped(tmp_path: Path, golden_f32: Path) -> None:
    fork = make_fork(tmp_path / "fork", RENAMED_KWARG, MOVED_ROTARY)
    code, output, summary = check(fork, golden_f32, tmp_path / "unmapped")
    assert code == 1 and summary["verdict"] == "incomplete", output[-2000:]
    assert summary["counts"]["fail"] == summary["counts"]["error"] == 0
    attention = "talker.model.layers.0.self_attn"
    assert statuses(summary, "isolated", attention) == {"interface_mismatch"}
    assert statuses(summary, "chained", attention) == {"pass"}  # chained mode still judges the numbers
    assert statuses(summary, "isolated", ROTARY) == statuses(summary, "chained", ROTARY) == {"not_covered"}
    messages = {
        t["message"] for case in summary["cases"] for t in case["tensors"] if t["status"] == "interface_mismatch"
    }
    assert any("candidate takes pos_ids, golden passes position_ids" in m for m in messages), messages

    port_map = tmp_path / "fork-map.toml"
    port_map.write_text('[modules]\n"talker.model.rotary_emb" = "talker.model.rope"\n\n'
                        '[[kwargs]]\nmodules = "talker.model.layers.*.self_attn"\nnames = { position_ids = "pos_ids" }\n')  # fmt: skip
    code, output, summary = check(fork, golden_f32, tmp_path / "mapped", "--map", port_map)
    assert code == 0 and summary["verdict"] == "pass", output[-2000:]
    assert statuses(summary, "isolated", attention) == statuses(summary, "isolated", ROTARY) == {"pass"}
    assert statuses(summary, "chained", attention, outputs=False) == {"pass"}
