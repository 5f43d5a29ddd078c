"""Record-time determinism: `record` runs each case a second time under a checksumming tap and stores in the
case provenance whether the official model computed every recorded tensor bit for bit the same again; `inspect`
shows it. Proven on the tiny official model as it is, and made nondeterministic by a module that adds unseeded
noise (a buffer of uninitialised memory)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conformance.cli import main as cli_main
from conformance.store import GoldenStore

torch = pytest.importorskip("torch")

from conformance.subjects.qwen3_tts import cases, record  # noqa: E402
from conformance.subjects.qwen3_tts.checkpoints import official  # noqa: E402

pytestmark = pytest.mark.official
CASE = "codec_decode_short"
NOISY_MLP = "speech_tokenizer.decoder.pre_transformer.layers.0.mlp"


def record_case(path: Path, checkpoint: Path, **options: object) -> GoldenStore:
    record.record(path, cases.select([CASE]), checkpoint=checkpoint, oracle=False, threads=1, command="test",
                  **options)  # type: ignore[arg-type]  # fmt: skip
    return GoldenStore(path)


def inspect_lines(path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    assert cli_main(["inspect", str(path), "--case", CASE]) == 0
    return capsys.readouterr().out


def test_the_official_model_is_recorded_as_bitwise_deterministic(tmp_path: Path, tiny_checkpoint: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    with record_case(tmp_path / "g.h5", tiny_checkpoint) as store:
        case = store.case(CASE)
        found = case.provenance["determinism"]
        tensors = [leaf for leaf in case.leaves() if leaf.is_tensor]
    assert found["runs"] == 2 and found["bitwise_identical"] is True, found
    assert found["tensors_compared"] == len(tensors) > 300 and found["differing"] == [] == found["extra_calls"]
    assert "determinism: bitwise identical over 2 runs" in inspect_lines(tmp_path / "g.h5", capsys)


def test_the_second_run_can_be_turned_off(tmp_path: Path, tiny_checkpoint: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    with record_case(tmp_path / "g.h5", tiny_checkpoint, determinism=False) as store:
        assert "determinism" not in store.case(CASE).provenance
    assert "determinism: not checked" in inspect_lines(tmp_path / "g.h5", capsys)


def test_a_nondeterministic_official_module_is_found_at_record_time(tmp_path: Path, tiny_checkpoint: Path,
                                                                    monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    mlp = official().codec_modeling.Qwen3TTSTokenizerV2DecoderMlp
    forward = mlp.forward

    def noisy(self: torch.nn.Module, *args: object, **kwargs: object) -> torch.Tensor:
        out = forward(self, *args, **kwargs)
        noise = np.random.default_rng().standard_normal(tuple(out.shape)).astype(np.float32) * 1e-3  # unseeded
        return out + torch.from_numpy(noise).to(out.dtype)

    monkeypatch.setattr(mlp, "forward", noisy)
    with record_case(tmp_path / "g.h5", tiny_checkpoint) as store:
        found = store.case(CASE).provenance["determinism"]
    assert found["bitwise_identical"] is False
    assert found["differing"][0] == f"{NOISY_MLP}#0/outputs/0", found["differing"][:3]
    assert "(case output) waveform" in found["differing"] or found["differing_count"] > len(found["differing"])
    out = inspect_lines(tmp_path / "g.h5", capsys)
    assert "not bitwise deterministic at record time: codec_decode_short" in out
    assert "NOT bitwise identical over 2 runs" in out and f"first {NOISY_MLP}#0/outputs/0" in out
