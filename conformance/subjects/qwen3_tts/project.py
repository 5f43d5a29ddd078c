"""The project's own conformance job (`nox -s conformance`): check the candidate against every committed
golden with the project policy, write the reports, and exit with the worst exit code.

`python -m conformance.subjects.qwen3_tts.project [--policy FILE] [--reports DIR] [--candidate SPEC]`
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ...cli import main as cli_main

GOLDENS = Path("goldens")
# (golden, sub-folder of the reports). The float32 golden is calibrated on its own noise records and its
# float64 reference; the float64 golden holds a float64 candidate to the float64 defaults of the policy.
RUNS = (("qwen3_tts-tiny-float32.h5", ""), ("qwen3_tts-tiny-float64.h5", "float64"))
DEFAULT_CANDIDATE = "impl"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m conformance.subjects.qwen3_tts.project",
                                     description="Run the project's conformance job on the committed goldens.")  # fmt: skip
    parser.add_argument("--policy", type=Path, default=Path("conformance-policy.toml"))
    parser.add_argument("--reports", type=Path, default=Path("reports"))
    parser.add_argument("--candidate", default=DEFAULT_CANDIDATE)
    parser.add_argument("--goldens", type=Path, default=GOLDENS)
    parser.add_argument("-q", "--quiet", action="store_true")
    args = parser.parse_args(argv)
    worst = 0
    for name, folder in RUNS:
        candidate = args.candidate
        if candidate.startswith("official") and name.endswith("float64.h5"):
            continue  # the official model against its own float64 golden is the oracle itself
        reports = args.reports / folder if folder else args.reports
        command = ["check", "--goldens", str(args.goldens / name), "--candidate", candidate, "--mode", "both",
                   "--policy", str(args.policy), "--reports", str(reports)] + (["-q"] if args.quiet else [])  # fmt: skip
        code = cli_main(command)
        worst = max(worst, code)
    return worst


if __name__ == "__main__":
    sys.exit(main())
