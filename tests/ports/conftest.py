"""Fixtures for the ports tests: an export of the codec cases, synthetic dumps made from the goldens
themselves, and a runner of the `conformance` command that captures its exit code and output."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from conformance.cli import main as cli_main
from conformance.store import GoldenStore

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "foreign_port"
CODEC_CASES = ["codec_decode_short", "codec_decode_long"]


@dataclass
class Outcome:
    code: int
    out: str
    err: str

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., Outcome]:
    """Run `conformance ARGS...` in-process; returns its exit code and what it printed."""

    def run(*args: str | Path) -> Outcome:
        capsys.readouterr()
        try:
            code = cli_main([str(a) for a in args])
        except SystemExit as exc:  # argparse usage errors
            code = int(exc.code or 0)
        captured = capsys.readouterr()
        return Outcome(code, captured.out, captured.err)

    return run


@pytest.fixture(scope="session")
def export_dir(tmp_path_factory: pytest.TempPathFactory, golden_f32: Path) -> Path:
    """`conformance export` of the two codec decode cases (safetensors), shared by the session."""
    out = tmp_path_factory.mktemp("export")
    code = cli_main(["export", "--goldens", str(golden_f32), "--cases", *CODEC_CASES, "-o", str(out), "-q",
                     "--policy", str(ROOT / "conformance-policy.toml")])  # fmt: skip
    assert code == 0
    return out


@pytest.fixture(scope="session")
def store(golden_f32: Path) -> GoldenStore:
    with GoldenStore(golden_f32) as opened:
        yield opened


def write_safetensors(path: Path, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> Path:
    from safetensors.numpy import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path), metadata=metadata)
    return path


def golden_outputs(store: GoldenStore, case: str) -> dict[str, np.ndarray]:
    """Every golden output tensor of a case, by golden name: a dump of a port that is exactly right."""
    golden = store.case(case)
    return {
        leaf.name: golden.tensor(leaf) for leaf in golden.leaves() if leaf.is_tensor and leaf.role.startswith("outputs")
    }


FOREIGN_MAP = """
format = 1

[[ignore]]
match = 'scratch/.*'
reason = "the synthetic port's scratch buffers"

[[rename]]                       # fused q/k/v projections, concatenated on the last axis
match = 'p/(.+)\\.self_attn\\.qkv/(\\d+)'
to = ["{1}.self_attn.q_proj#{2}/outputs/0", "{1}.self_attn.k_proj#{2}/outputs/0", "{1}.self_attn.v_proj#{2}/outputs/0"]
split = -1

[[rename]]                       # channels-last copies of NCL tensors
match = 'p/(.+)/(\\d+)/nlc/(.+)'
to = "{1}#{2}/{3}"
layout = "NLC->NCL"

[[rename]]
match = 'p/(.+)/(\\d+)/(.+)'
to = "{1}#{2}/{3}"
"""


def foreign_dump(store: GoldenStore, case: str, perturb: dict[str, float] | None = None) -> dict[str, np.ndarray]:
    """The goldens of a case as a 'foreign port' would dump them, through the inverse of FOREIGN_MAP:
    renamed, NCL tensors channels-last, the attention's q/k/v projections fused, plus a scratch tensor.
    `perturb` scales chosen golden tensors (by golden name) before they are written."""
    from conformance.ports.export import infer_layouts

    golden = store.case(case)
    layouts = infer_layouts(golden)
    perturb = perturb or {}
    tensors: dict[str, np.ndarray] = {}
    fused: dict[tuple[str, int], dict[str, np.ndarray]] = {}
    for leaf in golden.leaves():
        if not leaf.is_tensor or not leaf.role.startswith("outputs"):
            continue
        value = golden.tensor(leaf) * perturb.get(leaf.name, 1)
        if leaf.key.endswith(("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")):
            fused.setdefault((leaf.key.rsplit(".", 1)[0], leaf.call), {})[leaf.key[-6]] = value
        elif layouts.get((leaf.key, leaf.call, leaf.role)) == "NCL":
            tensors[f"p/{leaf.key}/{leaf.call}/nlc/{leaf.role}"] = np.swapaxes(value, 1, 2)
        else:
            tensors[f"p/{leaf.key}/{leaf.call}/{leaf.role}"] = value
    for (attn, call), parts in fused.items():
        tensors[f"p/{attn}.qkv/{call}"] = np.concatenate([parts["q"], parts["k"], parts["v"]], axis=-1)
    tensors["scratch/workspace"] = np.zeros(4, np.float32)
    return tensors


def no_torch_env(tmp_path: Path) -> dict[str, str]:
    """An environment in which `import torch` fails: proves a subprocess never imports it."""
    blocker = tmp_path / "torch_blocker" / "torch"
    blocker.mkdir(parents=True, exist_ok=True)
    (blocker / "__init__.py").write_text(
        "raise ImportError('torch is blocked: the checking side must not import it')\n"
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(blocker.parent), str(ROOT), env.get("PYTHONPATH", "")])
    return env


def run_port(export_case: Path, output: Path, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(EXAMPLE / "port.py"), "--export", str(export_case), "-o", str(output),
                           *extra], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)  # fmt: skip


def run_conformance(args: list[str | Path], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "conformance.cli", *[str(a) for a in args]], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=300)  # fmt: skip
