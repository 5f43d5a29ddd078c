"""The report's building blocks on synthetic inputs (no model, no torch): audio measures, WAV encoding,
heatmap pooling and layout, per-module aggregation for the tree, history growth flags, number format."""

from __future__ import annotations

import base64
import io
import math
import wave

import numpy as np
import pytest

from conformance.report import audio, figures, view


def test_snr_is_the_signal_to_error_energy_ratio_in_db() -> None:
    rng = np.random.default_rng(0)
    golden = rng.standard_normal(4000)
    noise = rng.standard_normal(4000)
    noise *= np.sqrt(np.sum(golden**2) / np.sum(noise**2)) / 100  # error energy 1e-4 of the signal's: 40 dB
    assert audio.snr_db(golden, golden + noise) == pytest.approx(40.0, abs=1e-9)
    assert audio.snr_db(golden, golden) == math.inf


def test_log_mel_distance_is_zero_for_identical_audio_and_grows_with_a_gain_change() -> None:
    noise = 0.1 * np.random.default_rng(2).standard_normal(24000)  # energy in every mel band
    assert audio.compare_audio(noise, noise, 24000).log_mel_distance_db == 0.0
    louder = audio.compare_audio(noise, noise * 2, 24000)  # +6.02 dB in every band
    assert louder.log_mel_distance_db == pytest.approx(20 * math.log10(2), rel=1e-6)
    assert louder.golden_mel.shape == louder.candidate_mel.shape
    assert louder.n_fft == 1024 and louder.hop == 256


def test_short_signals_get_a_shorter_stft_and_still_a_spectrogram() -> None:
    n_fft, hop = audio.stft_params(576)  # the tiny goldens: 3 frames of 192 samples
    assert n_fft * 4 <= 576 and hop == n_fft // 4
    mel = audio.log_mel(np.random.default_rng(1).standard_normal(576), 24000, n_fft, hop)
    assert mel.shape[1] == 1 + 576 // hop and np.isfinite(mel).all()


def test_the_mel_filterbank_has_no_empty_filters_and_peaks_at_one() -> None:
    bank = audio.mel_filterbank(24000, 256, 64)
    assert (bank.sum(axis=1) > 0).all() and bank.max() <= 1.0 + 1e-12


def test_wav_encoding_round_trips_to_16_bit_samples() -> None:
    samples = np.array([0.0, 0.5, -0.5, 1.0, -1.0, 2.0])
    uri = audio.wav_data_uri(samples, 16000)
    assert uri.startswith("data:audio/wav;base64,")
    with wave.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2)
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    assert pcm.tolist() == [0, 16384, -16384, 32767, -32767, 32767]  # clipped at full scale


def test_heatmaps_are_max_pooled_so_no_peak_is_lost() -> None:
    error = np.zeros((300, 5000))
    error[123, 4567] = -7.0
    pooled = figures.pool_abs(error, rows=96, cols=480)
    assert pooled.shape[0] <= 96 and pooled.shape[1] <= 480
    assert pooled.max() == 7.0 and np.count_nonzero(pooled) == 1
    small = np.arange(6.0).reshape(2, 3)
    assert np.array_equal(figures.pool_abs(small), small)


def test_channels_time_layout_follows_the_module_kind() -> None:
    conv = np.zeros((1, 4, 480))  # (batch, channels, time)
    picture, rows, cols = view.channels_time(conv, "decoder.decoder.2.block.3.conv1.conv")
    assert picture.shape == (4, 480) and rows.startswith("channels") and cols.startswith("time")
    hidden = np.zeros((1, 7, 32))  # (batch, time, hidden)
    picture, rows, cols = view.channels_time(hidden, "talker.model.layers.0.mlp")
    assert picture.shape == (32, 7)
    assert view.channels_time(np.zeros(5), "x")[0].shape == (1, 5)


def tensor(key: str, mode: str, status: str, rel: float, margin: float, call: int = 0, seq: int = 0,
           role: str = "outputs/0") -> dict:  # fmt: skip
    return {"case": "c", "mode": mode, "key": key, "call": call, "role": role, "status": status, "dtype": "float32",
            "shape": [2], "metrics": {"rel_l2": rel, "max_abs": rel * 2}, "thresholds": {"rel_l2": rel / margin if margin else 1.0},
            "min_tolerance": {"rel_l2": rel, "max_abs": rel * 2}, "margin": margin, "source": "", "message": "",
            "seq_start": seq, "seq_end": seq, "tier": "full", "xfail": None, "noise": None}  # fmt: skip


def summary_with(tensors: list[dict], started: str = "t1") -> dict:
    case = {"case": "c", "family": "f", "modes": ["isolated", "chained"], "verdict": "pass", "counts": {},
            "blame": {}, "tensors": tensors, "tokens": [], "growth": []}  # fmt: skip
    return {"cases": [case], "goldens": "g.h5", "started_utc": started, "candidate": "impl", "verdict": "pass",
            "counts": {"pass": len(tensors)}}  # fmt: skip


def test_the_tree_rows_aggregate_calls_and_outputs_per_module_with_the_minimum_passing_tolerance() -> None:
    tensors = [tensor("m.a", "chained", "pass", 1e-6, 0.2, call=0, seq=3), tensor("m.a", "chained", "fail", 1e-3, 4.0, call=1, seq=9),
               tensor("m.a", "chained", "pass", 1e-5, 0.5, call=1, seq=9, role="outputs/1"),
               tensor("m.a", "isolated", "pass", 1e-7, 0.1), tensor("m.a", "chained", "pass", 0.0, 0.0, role="args/0")]  # fmt: skip
    data = view.tree_data(summary_with(tensors))
    rows = {(data["modes"][r[1]], data["keys"][r[2]]): dict(zip(data["columns"], r)) for r in data["rows"]}
    chained = rows[("chained", "m.a")]
    assert data["statuses"][chained["status"]] == "fail"
    assert chained["margin"] == 4.0 and chained["rel_l2"] == 1e-3 and chained["min_tol_rel_l2"] == 1e-3
    assert (chained["calls"], chained["tensors"], chained["fails"], chained["seq"]) == (2, 3, 1, 3)
    assert chained["worst"] == "#1/outputs/0"
    assert rows[("isolated", "m.a")]["margin"] == 0.1


def test_the_drift_points_follow_execution_order_and_keep_the_worst_output_per_call() -> None:
    tensors = [tensor("late", "chained", "pass", 1e-5, 0.5, seq=20), tensor("early", "chained", "fail", 1e-2, 3.0, seq=5),
               tensor("early", "isolated", "pass", 1e-8, 0.01, seq=5), tensor("early", "chained", "pass", 1e-1, 0.2, seq=5, role="outputs/1")]  # fmt: skip
    points = view.drift_points(summary_with(tensors)["cases"][0])
    assert [p["key"] for p in points] == ["early", "late"] and [p["x"] for p in points] == [0, 1]
    early = points[0]["chained"]
    # the worst output by share of its tolerance, not the largest raw value
    assert early["fail"] and early["rel"] == 1e-2 and early["rel_thr"] == pytest.approx(1e-2 / 3.0)
    assert points[0]["isolated"]["rel"] == 1e-8 and "isolated" not in points[1]


def entry(started: str, worst: dict) -> dict:
    return {"started_utc": started, "candidate": "impl", "goldens": "g.h5", "worst_rel_l2": worst, "verdict": "pass",
            "counts": {}, "time_utc": started}  # fmt: skip


def test_history_flags_modules_that_got_worse_than_the_previous_run_only() -> None:
    summary = summary_with([tensor("m.a", "chained", "pass", 1e-4, 0.5), tensor("m.b", "chained", "pass", 1e-6, 0.5),
                            tensor("m.c", "chained", "pass", 2e-6, 0.5)], started="t3")  # fmt: skip
    older = entry("t1", {"c/chained": {"m.a": 1e-9, "m.b": 1e-9, "m.c": 1e-9}})
    previous = entry("t2", {"c/chained": {"m.a": 1e-5, "m.b": 1e-6, "m.c": 1.9e-6}})
    current = entry("t3", view.current_worst(summary))
    other = {**entry("t9", {"c/chained": {"m.a": 1.0}}), "goldens": "other.h5"}  # other goldens: not comparable
    rival = {**entry("t2b", {"c/chained": {"m.a": 1e-12}}), "candidate": "official:float64"}  # nor other candidates
    result = view.history_view(summary, [older, previous, other, rival, current])
    assert [f["key"] for f in result["flags"]] == ["m.a"]  # x10; m.b equal, m.c within the 10 % allowance
    assert result["flags"][0]["ratio"] == "10" and result["runs"] == 3
    trend = next(t for t in result["trends"] if t["group"] == "c/chained")
    assert trend["flagged"] and trend["spark"].startswith("<svg") and trend["spark"].count("<circle") == 3
    first_run = view.history_view(summary, [current])
    assert not first_run["previous"] and not first_run["flags"]


@pytest.mark.parametrize(("value", "text"), [(None, "—"), (0, "0"), ("inf", "∞"), (0.000123456, "1.23e-04"),
                                             (12.3456, "12.3"), (7, "7"), ("nan", "NaN"), (1234567.0, "1.23e+06"), (123456.0, "123456")])  # fmt: skip
def test_numbers_are_shown_short(value: object, text: str) -> None:
    assert view.fmt(value) == text


def test_script_json_cannot_close_its_script_element() -> None:
    text = view.json_for_script({"key": "</script><script>alert(1)</script>"})
    assert "</" not in text and view.json.loads(text)["key"] == "</script><script>alert(1)</script>"


def test_the_token_grid_headlines_whole_model_steps_over_logits_heads() -> None:
    """Model-level findings (whole model on the golden history) fill the teacher-forced grid at their own
    (codebook, frame) and give its counts; the heads' counts are kept beside them, not in the headline."""

    def finding(mode: str, key: str, call: int, cls: str, frame: int | None = None, codebook: int | None = None):
        index = [frame, codebook] if frame is not None else None
        return {"mode": mode, "key": key, "call": call, "classification": cls, "golden_token": 5, "candidate_token": 5,
                "golden_second": 6, "margin": 0.5, "index": index, "axes": ["frame", "codebook"] if index else []}  # fmt: skip

    tokens = [finding("teacher_forced", "talker.codec_head", f, "agree") for f in range(2)]
    tokens += [finding("teacher_forced", "talker.code_predictor.lm_head.0", f, "agree") for f in range(2)]
    tokens += [finding("teacher_forced_model", "talker", 0, "agree", 0, 0),
               finding("teacher_forced_model", "talker", 1, "logit_drift", 1, 0),
               finding("teacher_forced_model", "talker.code_predictor", 0, "agree", 0, 1),
               finding("teacher_forced_model", "talker.code_predictor", 1, "agree", 1, 1)]  # fmt: skip
    shown = view.token_view({"case": "c", "tokens": tokens}, view.Context(), 0.01)
    assert shown is not None and shown["tf_level"] == "model"
    assert shown["tf_counts"] == {"agree": 3, "logit_drift": 1} and shown["tf_head_counts"] == {"agree": 4}
    assert shown["heads"] == ["talker", "talker.code_predictor"]
    assert shown["tf"][0][1]["cls"] == "logit_drift" and shown["tf"][1][1]["cls"] == "agree"
    heads_only = view.token_view({"case": "c", "tokens": tokens[:4]}, view.Context(), 0.01)
    assert heads_only is not None and heads_only["tf_level"] == "head" and heads_only["tf_counts"] == {"agree": 4}
