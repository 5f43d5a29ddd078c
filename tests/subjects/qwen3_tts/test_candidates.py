"""Qwen3-TTS's candidates where they cannot run: the official one without torch is a usage error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_the_official_candidate_without_torch_exits_2_with_one_line(tmp_path: Path, golden_f32: Path) -> None:
    """A port's CI has no torch: asking for the official candidate there is a usage error, not a traceback."""
    script = (
        "import sys; sys.modules['torch'] = None\n"  # any `import torch` now fails, as where it is not installed
        "from conformance.cli import main\n"
        f"sys.exit(main(['check', '--goldens', {str(golden_f32)!r}, '--candidate', 'official',"
        f" '--reports', {str(tmp_path / 'reports')!r}, '-q']))\n"
    )
    process = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert process.returncode == 2, process.stderr
    errors = [line for line in process.stderr.splitlines() if line.startswith("conformance: error")]
    assert len(errors) == 1 and "needs torch" in errors[0]
