"""Tolerance policies: which thresholds a tensor must meet, from a TOML file (numpy-free, tomllib).

A policy is a TOML file (or the `[tool.conformance]` table of a pyproject.toml):

    [defaults.float32]              # per-dtype base thresholds; torch.testing's table is the anchor
    rtol = 1.3e-6
    atol = 1e-5

    [calibration]                   # thresholds from the official model's own float32-vs-float64 noise
    enabled = true
    k = 20                          # threshold = max(floor, k * noise), per metric
    metrics = ["rel_l2", "max_abs"]
    floor_eps = 8                   # floor in rounding units of the golden dtype, scaled like the metric

    [tokens]                        # for every subject
    near_tie_margin = 1e-4          # a top-1 margin below this is a near tie
    logits = ["lm_head"]            # globs over the module keys whose outputs are logits heads

    [tokens.my_subject]             # for the cases of one subject (its name in the goldens): replaces [tokens]
    logits = ["decoder.head.*"]

    [masks]                         # additive attention masks are compared by pattern, not value
    roles = ["kwargs/attention_mask"]
    threshold = -1e30               # values at or below this are "masked" (float32 min, float64 min, -inf)

    precision = "bfloat16"          # optional: the precision the candidate runs at (conformance/precisions.py):
                                    # calibrated thresholds scale that precision's own noise (its twin's)

    [[rule]]
    modules = "encoder.*"                    # glob, or a list of globs, over module keys
    subject = "my_subject"                   # optional: only the cases of this subject (or a list of them)
    role = "outputs/*"                       # optional glob over roles
    dtype = "float32"                        # optional
    mode = "chained"                         # optional: isolated or chained
    rel_l2 = 1e-4                            # explicit thresholds replace the base ones
    xfail = "why this is expected to fail"   # optional, the reason is mandatory
    precision = "f16-weights"                # optional: these modules run at another precision than the rest

Precedence: the base is the calibrated threshold when the tensor has a noise record and calibration is
on, else the dtype default. Of the rules that match a tensor, the most specific wins (the one whose
module glob has the most literal characters, then one that names a role, a dtype, a mode, a subject; on a tie
the later rule in the file). A winning rule with thresholds replaces the base; with `calibrated = true`
(and optional `k`, `floor`) it recalibrates; with only `xfail` it keeps the base and marks the tensor
as expected to fail.

Precision: a tensor is judged at the precision of the most specific matching rule that names one, else the
policy's (or `check --precision`); float32 (the default) is the golden's own noise. At another precision the
noise a calibrated threshold scales is that precision twin's noise for the tensor (isolated: its re-run of the call;
chained: its whole-case run, both against the float64 oracle), recorded by `record --precisions/--weights-quant`;
a tensor without such a record falls back to the precision's per-dtype defaults. Token near ties widen to the
precision's own noise on the logits (compare/engine.py).

Without any `logits` list for a subject (neither in its [tokens.<subject>] table nor in [tokens]), its cases use
the logits heads the subject itself declares (conformance.subjects.Subject.token_logits).
"""

from __future__ import annotations

import fnmatch
import math
import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .. import precisions, subjects
from ..errors import ConformanceError, PolicyError

# name -> (direction, description). "max": the metric must not exceed it; "min": must not fall below.
THRESHOLDS: dict[str, tuple[str, str]] = {
    "rel_l2": ("max", "relative L2 error |c - g| / |g|"),
    "max_abs": ("max", "largest absolute error"),
    "mean_abs": ("max", "mean absolute error"),
    "max_rel": ("max", "largest elementwise relative error"),
    "max_ulp": ("max", "largest error in units in the last place of the golden"),
    "cosine": ("min", "cosine similarity"),
    "snr_db": ("min", "signal-to-noise ratio in dB"),
    "atol": ("allclose", "elementwise |c - g| <= atol + rtol |g|"),
    "rtol": ("allclose", "elementwise |c - g| <= atol + rtol |g|"),
    "frac_outside": ("max", "fraction of elements allowed outside atol/rtol (default 0)"),
}
DTYPES = ("float16", "bfloat16", "float32", "float64")
MODES = ("isolated", "chained")
CALIBRATABLE = ("rel_l2", "max_abs", "mean_abs", "max_rel", "max_ulp")

# torch.testing.assert_close's defaults, the anchor of the per-dtype table.
TORCH_TESTING_DEFAULTS: dict[str, dict[str, float]] = {
    "float16": {"rtol": 1e-3, "atol": 1e-5},
    "bfloat16": {"rtol": 1.6e-2, "atol": 1e-5},
    "float32": {"rtol": 1.3e-6, "atol": 1e-5},
    "float64": {"rtol": 1e-7, "atol": 1e-7},
}

_RULE_KEYS = {"modules", "role", "dtype", "mode", "subject", "xfail", "calibrated", "k", "floor", "note", "precision",
              *THRESHOLDS}  # fmt: skip
_TOP_KEYS = {"defaults", "calibration", "tokens", "masks", "rule", "precision"}
_MASK_KEYS = {"roles", "threshold"}
_CALIBRATION_KEYS = {"enabled", "k", "metrics", "floor", "floor_eps", "fallback_factor"}
_TOKEN_KEYS = {"near_tie_margin", "logits", "allow_ties"}


# Chained error of a correct float32 candidate over the isolated noise carried to the same tensor: at most 9.7
# over 20 seeded tiny checkpoints x every case (benchmarks/calibration_fallback.py); perturbations were still
# blamed right at 64. Chosen with headroom on both sides.
FALLBACK_FACTOR = 16.0

# Unit roundoff of each dtype: the relative size of one rounding error.
UNIT_ROUNDOFF = {"float16": 2.0**-11, "bfloat16": 2.0**-8, "float32": 2.0**-24, "float64": 2.0**-53}


@dataclass(frozen=True)
class Calibration:
    """threshold = max(floor, k * noise) per metric. The floor is `floor_eps` rounding units of the golden's
    dtype, scaled like the metric (1 for rel_l2 and max_rel, max|golden| for max_abs, rms(golden) for
    mean_abs), or an absolute `floor` when given: a module whose official float32 result happens to be
    exact (noise 0) still gets a threshold a correct port can meet."""

    enabled: bool = True
    k: float = 20.0
    metrics: tuple[str, ...] = ("rel_l2", "max_abs")
    floor_eps: float = 8.0
    floor: dict[str, float] = field(default_factory=dict)
    # Chained thresholds without a float64 reference: the tensor's isolated noise times this factor
    # stands in for its chained noise (measured: docs/policy.md, benchmarks/calibration_fallback.py).
    fallback_factor: float = FALLBACK_FACTOR

    def thresholds(self, noise: dict[str, float], dtype: str, scale: dict[str, float], k: float | None = None,
                   floor: dict[str, float] | None = None) -> dict[str, float]:  # fmt: skip
        k = self.k if k is None else k
        absolute = {**self.floor, **(floor or {})}
        unit = UNIT_ROUNDOFF.get(dtype, UNIT_ROUNDOFF["float32"])
        out = {}
        for metric in self.metrics:
            value = noise.get(metric)
            if value is None or value != value:  # missing or NaN
                continue
            lowest = absolute.get(metric, self.floor_eps * unit * scale.get(metric, 1.0))
            out[metric] = max(lowest, k * value)
        return out


@dataclass(frozen=True)
class TokenPolicy:
    near_tie_margin: float = 1e-4
    logits: tuple[str, ...] = ()
    allow_ties: bool = True

    def is_logits(self, key: str) -> bool:
        return any(fnmatch.fnmatchcase(key, pattern) for pattern in self.logits)

    def describe(self) -> dict[str, Any]:
        return {"near_tie_margin": self.near_tie_margin, "logits": list(self.logits), "allow_ties": self.allow_ties}


@dataclass(frozen=True)
class Rule:
    index: int
    modules: tuple[str, ...]
    role: str | None = None
    dtype: str | None = None
    mode: str | None = None
    thresholds: dict[str, float] = field(default_factory=dict)
    calibrated: bool | None = None
    subjects: tuple[str, ...] = ()  # only the cases of these subjects (empty: every subject)
    k: float | None = None
    floor: dict[str, float] | None = None
    xfail: str | None = None
    precision: str | None = None  # these modules run at this precision (conformance/precisions.py)

    def matching_glob(self, key: str) -> str | None:
        best = None
        for pattern in self.modules:
            if fnmatch.fnmatchcase(key, pattern) and (best is None or _literal(pattern) > _literal(best)):
                best = pattern
        return best

    def matches(self, key: str, role: str, dtype: str, mode: str) -> bool:
        return (
            self.matching_glob(key) is not None
            and (self.role is None or fnmatch.fnmatchcase(role, self.role))
            and (self.dtype is None or self.dtype == dtype)
            and (self.mode is None or self.mode == mode)
        )

    def specificity(self, key: str) -> tuple[int, int, int, int, int, int]:
        glob = self.matching_glob(key) or ""
        return (_literal(glob), self.role is not None, self.dtype is not None, self.mode is not None,
                bool(self.subjects), self.index)  # fmt: skip

    @property
    def label(self) -> str:
        parts = [f"rule {self.index + 1}: modules={'|'.join(self.modules)}"]
        for name in ("role", "dtype", "mode"):
            if getattr(self, name):
                parts.append(f"{name}={getattr(self, name)}")
        if self.subjects:
            parts.append(f"subject={'|'.join(self.subjects)}")
        if self.precision:
            parts.append(f"precision={self.precision}")
        return " ".join(parts)


@dataclass(frozen=True)
class Resolved:
    """The thresholds one tensor must meet, and where they came from. Calibrated thresholds need the
    golden's scale for their floor: `final(scale)` completes them once the metrics are known."""

    thresholds: dict[str, float]
    source: str  # "calibrated (k=20)", "default float32", "rule 3: ..."
    xfail: str | None = None
    calibrated: bool = False
    noise: dict[str, float] | None = None
    calibration: Calibration | None = None
    dtype: str = "float32"
    k: float | None = None
    floor: dict[str, float] | None = None

    def final(self, scale: dict[str, float]) -> dict[str, float]:
        if not self.calibrated or self.calibration is None or self.noise is None:
            return dict(self.thresholds)
        return self.calibration.thresholds(self.noise, self.dtype, scale, self.k, self.floor)


def _literal(pattern: str) -> int:
    return len(re.sub(r"\[[^\]]*\]|[*?]", "", pattern))


@dataclass(frozen=True)
class Policy:
    path: str | None = None
    defaults: dict[str, dict[str, float]] = field(default_factory=lambda: dict(TORCH_TESTING_DEFAULTS))
    calibration: Calibration = field(default_factory=Calibration)
    tokens: TokenPolicy = field(default_factory=TokenPolicy)
    rules: tuple[Rule, ...] = ()
    mask_roles: tuple[str, ...] = ("kwargs/attention_mask", "kwargs/attention_mask/*")
    mask_threshold: float = -1e30
    # [tokens.<subject>]: what each subject's table sets, replacing the project-wide [tokens] for its cases
    subject_tokens: dict[str, dict[str, Any]] = field(default_factory=dict)
    precision: str | None = None  # the candidate's precision (None: float32, the golden's own)

    def at_precision(self, precision: str | None) -> Policy:
        """This policy judging a candidate that runs at `precision` (`check --precision` over the file's)."""
        if precision is None:
            return self
        precisions.get(precision)
        return replace(self, precision=None if precision == precisions.FLOAT32 else precision)

    def precisions_named(self) -> list[str]:
        """Every precision other than float32 this policy judges some tensor at (its own and its rules')."""
        named = [self.precision, *(rule.precision for rule in self.rules)]
        return list(dict.fromkeys(p for p in named if p and p != precisions.FLOAT32))

    def precision_for(self, key: str, role: str, dtype: str, mode: str) -> str | None:
        """The precision a tensor is judged at: the most specific matching rule naming one, else the policy's."""
        matching = [rule for rule in self.rules if rule.precision and rule.matches(key, role, dtype, mode)]
        chosen = max(matching, key=lambda rule: rule.specificity(key)).precision if matching else self.precision
        return None if chosen == precisions.FLOAT32 else chosen

    def for_subject(self, subject: str | None, token_logits: tuple[str, ...] | list[str] = ()) -> Policy:
        """The policy as it applies to the cases of one subject (None: cases that name no subject): rules scoped
        to other subjects left out, its [tokens.<subject>] table over [tokens], and the subject's own logits
        heads (`token_logits`) when neither lists any."""
        rules = tuple(rule for rule in self.rules if not rule.subjects or subject in rule.subjects)
        tokens = replace(self.tokens, **self.subject_tokens.get(subject or "", {}))
        if not tokens.logits and token_logits:
            tokens = replace(tokens, logits=tuple(token_logits))
        return replace(self, rules=rules, tokens=tokens)

    def is_mask(self, role: str) -> bool:
        """Roles holding additive attention masks, compared by their pattern (see [masks])."""
        return any(fnmatch.fnmatchcase(role, pattern) for pattern in self.mask_roles)

    def rule_for(self, key: str, role: str, dtype: str, mode: str) -> Rule | None:
        matching = [rule for rule in self.rules if rule.matches(key, role, dtype, mode)]
        return max(matching, key=lambda rule: rule.specificity(key)) if matching else None

    def resolve(self, key: str, role: str, dtype: str, mode: str, noise: dict[str, float] | None,
                precision: str | None = None) -> Resolved:  # fmt: skip
        """Thresholds for one float tensor. `noise` is its float32-vs-float64 noise record (at `precision`: that
        precision twin's noise), if any; without one, the defaults of the precision's dtype apply."""
        rule = self.rule_for(key, role, dtype, mode)
        xfail = rule.xfail if rule else None
        calibrate = self.calibration.enabled if rule is None or rule.calibrated is None else rule.calibrated
        if rule is not None and rule.thresholds and rule.calibrated is not True:
            return Resolved(dict(rule.thresholds), rule.label, xfail, False)
        if calibrate and noise and any(noise.get(m) == noise.get(m) for m in self.calibration.metrics):
            k = rule.k if rule else None
            source = f"calibrated (k={k or self.calibration.k})" + (f", {rule.label}" if rule else "")
            return Resolved(
                {}, source, xfail, True, dict(noise), self.calibration, dtype, k, rule.floor if rule else None
            )
        dtype = precisions.get(precision).defaults if precision else dtype
        base = self.defaults.get(dtype) or self.defaults.get("float32") or {}
        return Resolved(dict(base), f"default {dtype}" + (f", {rule.label}" if rule else ""), xfail, False)

    def describe(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "defaults": self.defaults,
            "calibration": {"enabled": self.calibration.enabled, "k": self.calibration.k,
                            "metrics": list(self.calibration.metrics), "floor_eps": self.calibration.floor_eps,
                            "floor": self.calibration.floor, "fallback_factor": self.calibration.fallback_factor},
            "tokens": {**self.tokens.describe(),
                       **({"subjects": {name: replace(self.tokens, **table).describe()
                                        for name, table in self.subject_tokens.items()}}
                          if self.subject_tokens else {})},
            "rules": [r.label + (f" xfail={r.xfail!r}" if r.xfail else "") for r in self.rules],
            "precision": self.precision or precisions.FLOAT32,
        }  # fmt: skip


# -- loading and validation ---------------------------------------------------------------------------------


def _number(value: Any, where: str, path: str, *, positive: bool = True, above_zero: bool = False) -> float:
    """A finite number: TOML's nan and inf would switch a check off without a word (every comparison with
    NaN is false, nothing exceeds inf), so they are rejected like any other malformed value."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PolicyError(f"{where} must be a number, not {value!r}", path=path)
    if not math.isfinite(value):
        raise PolicyError(f"{where} is {value}: thresholds must be finite numbers (nan or inf would make the "
                          "check pass everything)", path=path)  # fmt: skip
    if positive and value < 0:
        raise PolicyError(f"{where} is negative ({value}): tolerances must be >= 0", path=path)
    if above_zero and value <= 0:
        raise PolicyError(f"{where} is {value}: it must be above 0", path=path)
    return float(value)


def _fallback_factor(value: Any, path: str) -> float:
    factor = _number(value, "calibration.fallback_factor", path)
    if not math.isfinite(factor) or factor < 1:
        raise PolicyError(f"calibration.fallback_factor must be a finite number >= 1, not {value!r} (it scales the "
                          "isolated noise, a lower bound of the chained noise)", path=path)  # fmt: skip
    return factor


def _check_keys(table: Any, allowed: set[str], where: str, path: str) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise PolicyError(f"{where} must be a table", path=path)
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise PolicyError(f"unknown key {unknown[0]!r} in {where} (known: {', '.join(sorted(allowed))})", path=path)
    return table


def _glob(pattern: Any, where: str, path: str) -> str:
    if not isinstance(pattern, str) or not pattern:
        raise PolicyError(f"{where} must be a non-empty glob string", path=path)
    if pattern.count("[") != pattern.count("]"):
        raise PolicyError(f"bad glob {pattern!r} in {where} (unbalanced brackets)", path=path)
    try:
        re.compile(fnmatch.translate(pattern))
    except re.error as exc:
        raise PolicyError(f"bad glob {pattern!r} in {where} ({exc})", path=path) from None
    return pattern


def _thresholds(table: dict[str, Any], where: str, path: str) -> dict[str, float]:
    out = {}
    for name in THRESHOLDS:
        if name in table:
            value = _number(table[name], f"{where}.{name}", path)
            if name == "cosine" and value > 1:
                raise PolicyError(f"{where}.cosine must be at most 1", path=path)
            if name == "frac_outside" and value >= 1:
                raise PolicyError(f"{where}.frac_outside is {value}: it must be below 1 (with 1 every element may lie "
                                  "outside atol/rtol, a check that cannot fail)", path=path)  # fmt: skip
            out[name] = value
    return out


def _token_table(table: dict[str, Any], where: str, path: str) -> dict[str, Any]:
    """The TokenPolicy fields a [tokens] table (project-wide or one subject's) sets, validated."""
    _check_keys(table, _TOKEN_KEYS, f"[{where}]", path)
    out: dict[str, Any] = {}
    if "logits" in table:
        logits = table["logits"]
        if isinstance(logits, str) or not isinstance(logits, list):
            raise PolicyError(f"{where}.logits must be a list of globs", path=path)
        out["logits"] = tuple(_glob(g, f"{where}.logits", path) for g in logits)
    if "allow_ties" in table:
        if not isinstance(table["allow_ties"], bool):
            raise PolicyError(f"{where}.allow_ties must be true or false", path=path)
        out["allow_ties"] = table["allow_ties"]
    if "near_tie_margin" in table:
        out["near_tie_margin"] = _number(table["near_tie_margin"], f"{where}.near_tie_margin", path)
    return out


def _known_subject(name: str, where: str, path: str) -> None:
    """A subject a policy scopes something to must exist: a misspelt name would scope it to nothing, silently."""
    try:
        known = subjects.names()
    except ConformanceError:  # an unreadable entry point list: the check itself reports what it cannot load
        return
    if name not in known:
        raise PolicyError(f"{where} names the subject {name!r}, which is not installed (subjects: "
                          f"{', '.join(known) or 'none'})", path=path)  # fmt: skip


def parse_policy(data: dict[str, Any], path: str = "<policy>") -> Policy:
    """Validate a policy table (as read from TOML) and build the Policy."""
    _check_keys(data, _TOP_KEYS, "the policy", path)
    defaults = {k: dict(v) for k, v in TORCH_TESTING_DEFAULTS.items()}
    for dtype, table in _check_keys(data.get("defaults", {}), set(DTYPES), "[defaults]", path).items():
        _check_keys(table, set(THRESHOLDS), f"[defaults.{dtype}]", path)
        defaults[dtype] = _thresholds(table, f"defaults.{dtype}", path)
    cal = _check_keys(data.get("calibration", {}), _CALIBRATION_KEYS, "[calibration]", path)
    metrics = tuple(cal.get("metrics", Calibration().metrics))
    for metric in metrics:
        if metric not in CALIBRATABLE:
            raise PolicyError(f"calibration.metrics: {metric!r} cannot be calibrated ({', '.join(CALIBRATABLE)})",
                              path=path)  # fmt: skip
    floor = {}
    for name, value in _check_keys(cal.get("floor", {}), set(CALIBRATABLE), "[calibration.floor]", path).items():
        floor[name] = _number(value, f"calibration.floor.{name}", path)
    enabled = cal.get("enabled", True)
    if not isinstance(enabled, bool):
        raise PolicyError("calibration.enabled must be true or false", path=path)
    calibration_k = _number(cal.get("k", Calibration().k), "calibration.k", path, above_zero=True)
    calibration = Calibration(enabled, calibration_k, metrics,
                              _number(cal.get("floor_eps", Calibration().floor_eps), "calibration.floor_eps", path),
                              floor, _fallback_factor(cal.get("fallback_factor", FALLBACK_FACTOR), path))  # fmt: skip
    tok = data.get("tokens", {})
    if not isinstance(tok, dict):
        raise PolicyError("[tokens] must be a table", path=path)
    tables = {name: table for name, table in tok.items() if isinstance(table, dict)}
    project = _token_table({k: v for k, v in tok.items() if k not in tables}, "tokens", path)
    tokens = replace(TokenPolicy(), **project)
    subject_tokens = {}
    for name, table in tables.items():
        _known_subject(name, f"[tokens.{name}]", path)
        subject_tokens[name] = _token_table(table, f"tokens.{name}", path)
    masks = _check_keys(data.get("masks", {}), _MASK_KEYS, "[masks]", path)
    mask_roles = masks.get("roles", list(Policy().mask_roles))
    if isinstance(mask_roles, str) or not isinstance(mask_roles, list):
        raise PolicyError("masks.roles must be a list of globs", path=path)
    mask_threshold = _number(masks.get("threshold", Policy().mask_threshold), "masks.threshold", path, positive=False)
    if mask_threshold >= 0:  # allowed positions hold 0: a threshold at or above it would call every position masked
        raise PolicyError(f"masks.threshold is {mask_threshold}: it must be below 0 (additive masks hold 0 where "
                          "attention is allowed)", path=path)  # fmt: skip
    raw_rules = data.get("rule", [])
    if not isinstance(raw_rules, list):
        raise PolicyError("rule must be an array of tables ([[rule]])", path=path)
    rules = []
    for index, raw in enumerate(raw_rules):
        where = f"rule {index + 1}"
        _check_keys(raw, _RULE_KEYS, where, path)
        if "modules" not in raw:
            raise PolicyError(f"{where} has no modules glob", path=path)
        modules = raw["modules"] if isinstance(raw["modules"], list) else [raw["modules"]]
        globs = tuple(_glob(g, f"{where}.modules", path) for g in modules)
        role = _glob(raw["role"], f"{where}.role", path) if "role" in raw else None
        dtype = raw.get("dtype")
        if dtype is not None and dtype not in DTYPES:
            raise PolicyError(f"{where}.dtype must be one of {', '.join(DTYPES)}", path=path)
        mode = raw.get("mode")
        if mode is not None and mode not in MODES:
            raise PolicyError(f"{where}.mode must be isolated or chained", path=path)
        scoped = raw.get("subject", [])
        scoped = [scoped] if isinstance(scoped, str) else scoped
        if not isinstance(scoped, list) or not all(isinstance(name, str) and name for name in scoped):
            raise PolicyError(f"{where}.subject must be a subject name or a list of them", path=path)
        for name in scoped:
            _known_subject(name, f"{where}.subject", path)
        xfail = raw.get("xfail")
        if xfail is not None and (not isinstance(xfail, str) or not xfail.strip()):
            raise PolicyError(f"{where}.xfail needs a reason (a non-empty string)", path=path)
        calibrated = raw.get("calibrated")
        if calibrated is not None and not isinstance(calibrated, bool):
            raise PolicyError(f"{where}.calibrated must be true or false", path=path)
        rule_floor = None
        if "floor" in raw:
            rule_floor = {name: _number(v, f"{where}.floor.{name}", path)
                          for name, v in _check_keys(raw["floor"], set(CALIBRATABLE), f"{where}.floor", path).items()}  # fmt: skip
        thresholds = _thresholds(raw, where, path)
        if "atol" in thresholds or "rtol" in thresholds:  # allclose: the one not given is 0
            thresholds.setdefault("atol", 0.0)
            thresholds.setdefault("rtol", 0.0)
        k = _number(raw["k"], f"{where}.k", path, above_zero=True) if "k" in raw else None
        rule_precision = _precision(raw["precision"], f"{where}.precision", path) if "precision" in raw else None
        if not thresholds and calibrated is None and xfail is None and "k" not in raw and rule_precision is None:
            raise PolicyError(f"{where} sets no threshold, calibration, precision or xfail", path=path)
        rules.append(Rule(index, globs, role, dtype, mode, thresholds, calibrated, tuple(scoped), k, rule_floor, xfail,
                          rule_precision))  # fmt: skip
    top_precision = _precision(data["precision"], "precision", path) if "precision" in data else None
    return Policy(path, defaults, calibration, tokens, tuple(rules),
                  tuple(_glob(g, "masks.roles", path) for g in mask_roles), mask_threshold, subject_tokens,
                  None if top_precision == precisions.FLOAT32 else top_precision)  # fmt: skip


def _precision(value: Any, where: str, path: str) -> str:
    if not isinstance(value, str) or value not in precisions.PRECISIONS:
        raise PolicyError(f"{where} must be one of {', '.join(precisions.PRECISIONS)}, not {value!r}", path=path)
    return value


DEFAULT_POLICY_FILES = ("conformance-policy.toml", "pyproject.toml")


def find_policy(explicit: Path | None = None, folder: Path | None = None) -> Path | None:
    """The policy file to use: `explicit`, else ./conformance-policy.toml, else ./pyproject.toml when it has a
    [tool.conformance] table (in `folder`, default the working directory), else None (the built-in policy)."""
    if explicit is not None:
        return explicit
    for name in DEFAULT_POLICY_FILES:
        path = Path(folder) / name if folder is not None else Path(name)
        if path.exists():
            if name == "pyproject.toml":
                try:
                    if "conformance" not in tomllib.loads(path.read_text()).get("tool", {}):
                        continue
                except (OSError, tomllib.TOMLDecodeError):
                    continue
            return path
    return None


def load_policy(path: str | Path | None) -> Policy:
    """Load a policy file (TOML, or pyproject.toml's [tool.conformance]); None gives the built-in policy."""
    if path is None:
        return Policy()
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise PolicyError("policy file not found", path=path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"cannot read policy ({exc})", path=path) from None
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"not valid TOML ({exc})", path=path) from None
    if path.name == "pyproject.toml":
        data = data.get("tool", {}).get("conformance")
        if data is None:
            raise PolicyError("pyproject.toml has no [tool.conformance] table", path=path)
    return parse_policy(data, str(path))
