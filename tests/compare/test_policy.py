"""Tolerance policies: precedence, xfail, calibration, validation errors (exit 2 from the CLI)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conformance.compare.policy import Policy, load_policy, parse_policy
from conformance.errors import PolicyError
from tests.conftest import ToyGoldens

NOISE = {"rel_l2": 1e-7, "max_abs": 2e-7, "mean_abs": 1e-8, "max_rel": 1e-6, "cos_dist": 0.0, "max_ulp": 2.0}
SCALE = {"rel_l2": 1.0, "max_abs": 3.0, "mean_abs": 1.0}


def test_without_rules_a_float32_tensor_is_calibrated_on_its_noise() -> None:
    policy = Policy()
    resolved = policy.resolve("talker.model.norm", "outputs/0", "float32", "isolated", NOISE)
    assert resolved.calibrated
    final = resolved.final(SCALE)
    assert final["rel_l2"] == pytest.approx(20 * 1e-7)
    # floor: 8 float32 rounding units of the golden's scale (3.0) beats 20 * 2e-7
    assert final["max_abs"] == pytest.approx(max(20 * 2e-7, 8 * 2.0**-24 * 3.0))


def test_without_noise_the_dtype_default_applies() -> None:
    resolved = Policy().resolve("m", "outputs/0", "float32", "chained", None)
    assert not resolved.calibrated and resolved.thresholds == {"rtol": 1.3e-6, "atol": 1e-5}
    assert Policy().resolve("m", "outputs/0", "bfloat16", "chained", None).thresholds["rtol"] == 1.6e-2


POLICY = {
    "calibration": {"k": 10, "floor_eps": 0},
    "rule": [
        {"modules": "talker.*", "rel_l2": 1e-3},
        {"modules": "talker.model.layers.*", "rel_l2": 1e-4},
        {"modules": "talker.model.layers.1.mlp", "rel_l2": 1e-5},
        {"modules": "talker.model.layers.*", "role": "outputs/1", "rel_l2": 1e-6},
        {"modules": "talker.model.layers.*", "mode": "chained", "calibrated": True, "k": 50},
        {"modules": "speech_tokenizer.decoder.*", "xfail": "known drift in the decoder"},
        {"modules": "speech_tokenizer.decoder.pre_conv", "atol": 1e-4},
    ],
}


@pytest.mark.parametrize(
    ("key", "role", "mode", "expected"),
    [
        ("talker.codec_head", "outputs/0", "isolated", {"rel_l2": 1e-3}),  # the only match
        ("talker.model.layers.0.mlp", "outputs/0", "isolated", {"rel_l2": 1e-4}),  # longer literal prefix
        ("talker.model.layers.1.mlp", "outputs/0", "isolated", {"rel_l2": 1e-5}),  # most literal characters
        ("talker.model.layers.0.mlp", "outputs/1", "isolated", {"rel_l2": 1e-6}),  # naming a role is more specific
        ("talker.model.layers.0.mlp", "outputs/0", "chained", {"rel_l2": 50 * 1e-7, "max_abs": 50 * 2e-7}),
        ("speech_tokenizer.decoder.pre_conv", "outputs/0", "isolated", {"atol": 1e-4, "rtol": 0.0}),
    ],
)
def test_the_most_specific_rule_wins(key: str, role: str, mode: str, expected: dict[str, float]) -> None:
    resolved = parse_policy(POLICY).resolve(key, role, "float32", mode, NOISE)
    assert resolved.final(SCALE) == pytest.approx(expected)


def test_xfail_keeps_the_base_thresholds_and_carries_its_reason() -> None:
    resolved = parse_policy(POLICY).resolve(
        "speech_tokenizer.decoder.decoder.3", "outputs/0", "float32", "isolated", NOISE
    )
    assert resolved.xfail == "known drift in the decoder"
    assert resolved.calibrated and resolved.final(SCALE)["rel_l2"] == pytest.approx(10 * 1e-7)


def test_on_a_tie_the_later_rule_wins() -> None:
    policy = parse_policy({"rule": [{"modules": "a.*", "rel_l2": 1.0}, {"modules": "a.?", "rel_l2": 2.0}]})
    assert policy.resolve("a.b", "outputs/0", "float32", "isolated", None).thresholds == {"rel_l2": 2.0}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[rule]]\nmodules = 'a'\nrel_l2 = -1e-3\n", "negative"),
        ("[[rule]]\nmodules = 'a'\nrell2 = 1e-3\n", "unknown key 'rell2'"),
        ("[[rule]]\nmodules = 'a[b'\nrel_l2 = 1e-3\n", "bad glob"),
        ("[[rule]]\nmodules = 'a'\nxfail = ''\n", "needs a reason"),
        ("[[rule]]\nmodules = 'a'\nmode = 'sideways'\nrel_l2 = 1\n", "isolated or chained"),
        ("[[rule]]\nrel_l2 = 1\n", "no modules glob"),
        ("[[rule]]\nmodules = 'a'\n", "sets no threshold"),
        ("[calibration]\nk = 'ten'\n", "must be a number"),
        ("[calibration]\nmetrics = ['cosine']\n", "cannot be calibrated"),
        ("[frobnicate]\n", "unknown key 'frobnicate'"),
        ("this is = not toml [", "not valid TOML"),
    ],
)
def test_invalid_policies_give_clear_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(text)
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert message in str(caught.value) and str(path) in str(caught.value)


def test_pyproject_table_is_read(tmp_path: Path) -> None:
    path = tmp_path / "pyproject.toml"
    path.write_text(
        textwrap.dedent("""
        [project]
        name = "port"
        [tool.conformance.calibration]
        k = 5
        [[tool.conformance.rule]]
        modules = "x.*"
        rel_l2 = 0.5
    """)
    )
    policy = load_policy(path)
    assert policy.calibration.k == 5 and policy.rules[0].thresholds == {"rel_l2": 0.5}


def test_an_invalid_policy_exits_2_with_one_line(tmp_path: Path, toy: ToyGoldens) -> None:
    path = tmp_path / "policy.toml"
    path.write_text("[[rule]]\nmodules = 'talker.*'\nrel_l2 = -1\n")
    process = subprocess.run(
        [sys.executable, "-m", "conformance.cli", "check", "--goldens", str(toy.golden), "--policy", str(path),
         "--candidate", "impl", "--reports", str(tmp_path / "reports"), "-q"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert process.returncode == 2
    errors = [line for line in process.stderr.splitlines() if line.startswith("conformance: error")]
    assert len(errors) == 1 and "negative" in errors[0] and str(path) in errors[0]


# Values a TOML policy accepts that would switch a check off without a word: NaN compares false with
# everything (nothing ever exceeds it), inf is never exceeded, k = 0 calibrates every threshold to its floor.
VACUOUS = [
    ("[[rule]]\nmodules = 'a'\nrel_l2 = nan\n", "rule 1.rel_l2"),
    ("[[rule]]\nmodules = 'a'\nmax_abs = inf\n", "rule 1.max_abs"),
    ("[[rule]]\nmodules = 'a'\natol = 1e-5\nfrac_outside = nan\n", "rule 1.frac_outside"),
    ("[[rule]]\nmodules = 'a'\natol = 1e-5\nfrac_outside = 1\n", "rule 1.frac_outside"),
    ("[[rule]]\nmodules = 'a'\ncosine = -2\n", "rule 1.cosine"),
    ("[[rule]]\nmodules = 'a'\ncalibrated = true\nk = 0\n", "rule 1.k"),
    ("[[rule]]\nmodules = 'a'\ncalibrated = true\nfloor = { max_abs = nan }\n", "rule 1.floor.max_abs"),
    ("[defaults.float32]\nrtol = nan\natol = 1e-5\n", "defaults.float32.rtol"),
    ("[calibration]\nk = inf\n", "calibration.k"),
    ("[calibration]\nk = 0\n", "calibration.k"),
    ("[calibration]\nk = -20\n", "calibration.k"),
    ("[calibration]\nfloor_eps = nan\n", "calibration.floor_eps"),
    ("[calibration]\nfloor_eps = inf\n", "calibration.floor_eps"),
    ("[calibration.floor]\nrel_l2 = inf\n", "calibration.floor.rel_l2"),
    ("[tokens]\nnear_tie_margin = inf\n", "tokens.near_tie_margin"),
    ("[tokens]\nnear_tie_margin = nan\n", "tokens.near_tie_margin"),
    ("[tokens]\nallow_ties = 'no'\n", "tokens.allow_ties"),
    ("[masks]\nthreshold = nan\n", "masks.threshold"),
    ("[masks]\nthreshold = 0\n", "masks.threshold"),
]


@pytest.mark.parametrize(("text", "key"), VACUOUS)
def test_a_policy_that_would_pass_everything_exits_2_naming_the_file_and_key(
    tmp_path: Path, toy: ToyGoldens, capsys: pytest.CaptureFixture[str], text: str, key: str
) -> None:
    from conformance.cli import main

    path = tmp_path / "policy.toml"
    path.write_text(text)
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "summary.json").write_text("{}")  # the previous run's reports stay as they were
    code = main(["check", "--goldens", str(toy.golden), "--candidate", "impl", "--cases", "toy_greedy",
                 "--policy", str(path), "--reports", str(reports), "-q"])  # fmt: skip
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"conformance: error: {path}: {key}"), err[0]
    assert (reports / "summary.json").read_text() == "{}"
