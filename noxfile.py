"""Sessions: `nox -s conformance` (the main job), `nox -s tests` (the test suite, what CI runs),
`nox -s goldens` (regenerate committed goldens), `nox -s lint`, `nox -s benchmark`, `nox -s fuzz`,
`nox -s checking_side` (the checking side in a virtualenv without torch).

Every session builds its own virtualenv with pip (nox's default backend): pip finds the local CPU
torch wheel through this machine's pip configuration, and torch is pinned and installed first so no
dependency can pull a multi-GB CUDA build. The official `qwen-tts` is installed with --no-deps: its own
requirements pin gradio and a CUDA torchaudio; the dependencies it really needs are in the `record` extra.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import nox

nox.options.sessions = ["conformance"]
nox.options.reuse_existing_virtualenvs = False
nox.options.default_venv_backend = "virtualenv"

TORCH = "torch==2.13.0"
OFFICIAL = "qwen-tts==0.1.1"
GOLDENS = "goldens"
SYSTEM_TOOLS = {"h5ls": "hdf5-tools", "chromium": "chromium"}


def _install_recording_stack(session: nox.Session, extras: str) -> None:
    session.install(TORCH)
    session.install("-e", f".[{extras}]")
    session.install("--no-deps", OFFICIAL)


def _ensure_system_tools(session: nox.Session) -> None:
    """h5ls (the store must open in standard HDF5 tools) and Chromium (the HTML report is tested in a
    real browser) come from Debian; install them when missing and we may."""
    missing = sorted({pkg for tool, pkg in SYSTEM_TOOLS.items() if shutil.which(tool) is None})
    if not missing:
        return
    if shutil.which("apt-get") is None:
        session.warn(f"cannot install {missing}: no apt-get; tests that need them will fail in CI")
        return
    prefix = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    session.log(f"installing system packages: {' '.join(missing)}")
    try:
        subprocess.run([*prefix, "apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run([*prefix, "apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
                       check=True, env=env)  # fmt: skip
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        session.warn(f"could not install {missing}: {exc}")


@nox.session(python="3.11")
def tests(session: nox.Session) -> None:
    """The test suite (what CI runs)."""
    _ensure_system_tools(session)
    _install_recording_stack(session, "record,impl,test")
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    # two worker processes (CI has two cores); the suite's heavy parts are model loads and full case runs
    session.run("pytest", "--numprocesses=auto", "--maxprocesses=4", "--durations=20", *session.posargs, env=env)


@nox.session(python="3.11")
def conformance(session: nox.Session) -> None:
    """Check every subject's candidate against its committed goldens with the project policy; gate on the exit code
    (reports in reports/<subject>/)."""
    _install_recording_stack(session, "record,impl")
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    session.run("python", "-m", "conformance.project", "check", *session.posargs, env=env)


@nox.session(python="3.11")
def goldens(session: nox.Session) -> None:
    """Regenerate the committed goldens of every subject, or of one (`nox -s goldens -- --subject NAME`): only when
    a recorder or the cases change, each regeneration adds its full size to the repository's history."""
    _install_recording_stack(session, "record")
    session.run("python", "-m", "conformance.project", "goldens", "--goldens", GOLDENS, *session.posargs,
                env={"HF_HUB_OFFLINE": "1"})  # fmt: skip


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    """ruff check and format, mypy on the checking side (store, compare, report, ports)."""
    session.install("-e", ".[lint]")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy", "conformance/store", "conformance/compare", "conformance/report", "conformance/ports",
                "conformance/errors.py", "conformance/metrics.py", "conformance/precisions.py")  # fmt: skip


@nox.session(python="3.11")
def benchmark(session: nox.Session) -> None:
    """pytest-benchmark suites (full-size models, random weights); JSON results in reports/benchmarks/."""
    _install_recording_stack(session, "record,impl,test")
    os.makedirs("reports/benchmarks", exist_ok=True)
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    session.run("pytest", "benchmarks", "-p", "no:cacheprovider", "-s", "--benchmark-json",
                "reports/benchmarks/results.json", *session.posargs, env=env)  # fmt: skip
    session.run("python", "benchmarks/summarize.py", "reports/benchmarks/results.json", "-o",
                "reports/benchmarks/summary.md")  # fmt: skip


@nox.session(python="3.11")
def fuzz(session: nox.Session) -> None:
    """The property-based tests with a deep hypothesis profile (1000 examples each, 25 in CI)."""
    _install_recording_stack(session, "record,impl,test")
    env = {"HF_HUB_OFFLINE": "1", "HYPOTHESIS_PROFILE": "fuzz"}
    session.run("pytest", "tests/impl", "tests/store", "tests/compare/test_metrics.py", "-q", *session.posargs, env=env)


@nox.session(python="3.11")
def checking_side(session: nox.Session) -> None:
    """The checking side without torch, as a port's CI runs it: install the package alone (no extras), prove
    torch is absent, export the codec goldens, run the foreign-port example (examples/foreign_port), check
    its dump through its map (must pass), then check a dump with one perturbed layer (must fail, exit 1)."""
    session.install("-e", ".")
    session.run("python", "-m", "pip", "list", "--format=freeze")
    session.run("python", "-c", "import importlib.util, sys; sys.exit('torch is installed: the checking side must "
                "not need it' if importlib.util.find_spec('torch') else 0)")  # fmt: skip
    golden = f"{GOLDENS}/qwen3_tts-tiny-float32.h5"
    cases = ["codec_decode_short", "codec_decode_long"]
    work = session.create_tmp()
    export, dumps, bad = f"{work}/export", f"{work}/dumps", f"{work}/bad"
    session.run("conformance", "export", "--goldens", golden, "--cases", *cases, "-o", export)
    for case in cases:
        session.run("python", "examples/foreign_port/port.py", "--export", f"{export}/{case}", "-o",
                    f"{dumps}/{case}.safetensors")  # fmt: skip
    check = ["conformance", "check", "--goldens", golden, "--map", "examples/foreign_port/map.toml"]
    session.run(*check, "--cases", *cases, "--candidate", f"dump:{dumps}", "--reports", f"{work}/reports")
    session.run("python", "examples/foreign_port/port.py", "--export", f"{export}/codec_decode_short", "-o",
                f"{bad}/codec_decode_short.safetensors", "--perturb", "dec.stage1.res0.a1")  # fmt: skip
    session.run(*check, "--cases", "codec_decode_short", "--candidate", f"dump:{bad}", "--reports",
                f"{work}/reports-perturbed", env={"CONFORMANCE_EXPORT_DIR": export}, success_codes=[1])  # fmt: skip
