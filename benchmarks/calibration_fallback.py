"""Measure the calibration fallback: chained thresholds without a float64 reference.

For each seed, record every case of the tiny model (float32 with its float64 twin, as `conformance record`
does), then check the NumPy impl (a correct candidate) three ways:

* with the twin: the calibrated chained thresholds (k x chained float32-vs-float64 noise; chained mode: the
  twin changes nothing in isolated mode but the few calls the oracle does not re-run);
* without it, at fallback factor 1: what the check did before the fallback existed (isolated noise alone);
* without it, at the policy's fallback factor (or --factor).

It reports the false alarms (failing output tensors) of each, the factor each seed needed (the largest
ratio, over the chained output tensors, of the impl's error to k x isolated noise, where the error exceeds
the floor), and checks that a real perturbation (one weight scaled by 1 + 1e-3, the official model in
chained mode only, as a port's dump is checked) still fails at that factor and is blamed on its module.

    python benchmarks/calibration_fallback.py --seeds 1-20 --work /tmp/fallback -o fallback.json

Recordings are kept in --work and reused. Results feed FALLBACK_FACTOR (conformance/compare/policy.py) and
docs/policy.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
POLICY = ROOT / "conformance-policy.toml"
# (case, parameter scaled by 1 + 1e-3, the module that owns it): one per family of modules
PERTURBATIONS = (
    ("codec_decode_long", "speech_tokenizer.decoder.pre_transformer.layers.1.mlp.up_proj.weight",
     "speech_tokenizer.decoder.pre_transformer.layers.1.mlp.up_proj"),
    ("codec_decode_short", "speech_tokenizer.decoder.decoder.4.block.2.conv1.conv.weight",
     "speech_tokenizer.decoder.decoder.4.block.2.conv1.conv"),
    ("codec_encode", "speech_tokenizer.encoder.encoder_transformer.layers.0.self_attn.o_proj.weight",
     "speech_tokenizer.encoder.encoder_transformer.layers.0.self_attn.o_proj"),
    ("tts_custom_voice", "talker.model.layers.1.mlp.down_proj.weight", "talker.model.layers.1.mlp.down_proj"),
    ("speaker_encoder", "speaker_encoder.blocks.2.tdnn1.conv.weight", "speaker_encoder.blocks.2.tdnn1.conv"),
)  # fmt: skip


def seeds(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        out += list(range(int(first), int(last or first) + 1))
    return out


def check(golden: Path, candidate: Any, policy: Any, reference: Path | None, modes: tuple[str, ...],
          cases: list[str] | None = None) -> Any:  # fmt: skip
    from conformance.compare import engine
    from conformance.store import GoldenStore
    from conformance.subjects.qwen3_tts.subject import SUBJECT

    with GoldenStore(golden) as store:
        ref = GoldenStore(reference) if reference else None
        try:
            options = engine.CheckOptions(modes=modes, cases=cases, reference=ref, subject=SUBJECT, keep_failing=0)
            return engine.check(store, candidate, policy, options)
        finally:
            if ref is not None:
                ref.close()


def needed_factor(run: Any, policy: Any) -> tuple[float, str]:
    """The smallest fallback factor at which every chained output tensor of `run` (checked at factor 1) passes."""
    k = policy.calibration.k
    worst, where = 1.0, ""
    for case in run.cases:
        for tensor in case.outputs("chained"):
            if "fallback:" not in tensor.source or not tensor.noise:
                continue
            for metric, limit in tensor.thresholds.items():
                value, noise = (tensor.metrics or {}).get(metric), tensor.noise.get(metric)
                if not isinstance(value, (int, float)) or not noise or value <= limit:
                    continue
                factor = value / (k * noise)
                if factor > worst:
                    worst, where = factor, f"{case.case}: {tensor.name} ({metric})"
    return worst, where


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="1-20")
    parser.add_argument("--work", type=Path, default=Path("/tmp/conformance-fallback"))
    parser.add_argument("--factor", type=float, help="fallback factor to verify (default: the policy's)")
    parser.add_argument("--cases", nargs="+", help="cases to record and check (default: all)")
    parser.add_argument(
        "--perturb-every",
        type=int,
        default=1,
        metavar="N",
        help="check the perturbations on every N-th seed only (they take as long as the rest)",
    )
    parser.add_argument("-o", "--output", type=Path)
    args = parser.parse_args(argv)

    from conformance.capture.session import reference64_path
    from conformance.compare.policy import load_policy
    from conformance.compare.results import FAIL
    from conformance.subjects.qwen3_tts import cases as case_registry
    from conformance.subjects.qwen3_tts import record
    from conformance.subjects.qwen3_tts.impl_binding import ImplCandidate
    from conformance.subjects.qwen3_tts.official_binding import OfficialCandidate

    policy = load_policy(POLICY)
    factor = args.factor or policy.calibration.fallback_factor
    before = replace(policy, calibration=replace(policy.calibration, fallback_factor=1.0))
    after = replace(policy, calibration=replace(policy.calibration, fallback_factor=factor))
    selected = case_registry.select(args.cases)
    args.work.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in seeds(args.seeds):
        started = time.time()
        golden = args.work / f"seed{seed}.h5"
        if not golden.exists():
            record.record(golden, selected, seed=seed, command=f"calibration_fallback seed {seed}")
        twin = reference64_path(golden)

        def fails(run: Any) -> int:
            return sum(1 for case in run.cases for t in case.outputs() if t.status == FAIL)

        with_twin = check(golden, ImplCandidate(None, None), policy, twin, ("chained",))
        unscaled = check(golden, ImplCandidate(None, None), before, None, ("chained",))
        scaled = check(golden, ImplCandidate(None, None), after, None, ("chained",))
        need, where = needed_factor(unscaled, policy)
        caught = []
        for case, parameter, owner in PERTURBATIONS if seed % args.perturb_every == 0 else ():
            if args.cases and case not in args.cases:
                continue
            run = check(golden, OfficialCandidate("float32", perturb=parameter, scale=1e-3), after, None, ("chained",),
                        [case])  # fmt: skip
            blamed = run.cases[0].blame.get("chained")
            caught.append({"case": case, "owner": owner, "exit": run.exit_code,
                           "blamed": f"{blamed.key}#{blamed.call}" if blamed else None,
                           "blamed_right": blamed is not None and blamed.key == owner})  # fmt: skip
        row = {"seed": seed, "false_alarms_with_twin": fails(with_twin), "false_alarms_isolated_noise": fails(unscaled),
               f"false_alarms_factor_{factor:g}": fails(scaled), "needed_factor": round(need, 2), "needed_at": where,
               "perturbations": caught, "seconds": round(time.time() - started, 1)}  # fmt: skip
        rows.append(row)
        print(json.dumps(row), flush=True)
    summary = {
        "factor": factor,
        "seeds": len(rows),
        "false_alarms_with_twin": sum(r["false_alarms_with_twin"] for r in rows),
        "false_alarms_isolated_noise": sum(r["false_alarms_isolated_noise"] for r in rows),
        "seeds_failing_isolated_noise": sum(1 for r in rows if r["false_alarms_isolated_noise"]),
        f"false_alarms_factor_{factor:g}": sum(r[f"false_alarms_factor_{factor:g}"] for r in rows),
        "needed_factor_max": max((r["needed_factor"] for r in rows), default=None),
        "perturbations_failing": sum(p["exit"] == 1 for r in rows for p in r["perturbations"]),
        "perturbations_blamed_right": sum(p["blamed_right"] for r in rows for p in r["perturbations"]),
        "perturbations": sum(len(r["perturbations"]) for r in rows),
    }
    print(json.dumps(summary, indent=2))
    if args.output:
        args.output.write_text(json.dumps({"summary": summary, "seeds": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
