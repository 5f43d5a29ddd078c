"""`conformance`: record official goldens, inspect them, check candidates against them.

Exit codes: 0 all conform, 1 a divergence beyond policy, 2 bad input or usage (the message names the
file and tensor). This module only parses arguments and calls the rooms that do the work.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import ConformanceError, UsageError

EXIT_OK, EXIT_DIVERGED, EXIT_BAD_INPUT = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors with exit code 2 on one line (argparse's own convention)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT)


def _command_line(argv: Sequence[str]) -> str:
    return shlex.join(["conformance", *argv])


# -- record ------------------------------------------------------------------------------------------------


def _add_record(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "record",
        help="run the official model on named cases and record every module call into an HDF5 golden store",
        description=(
            "Load the official Qwen3-TTS (PyPI qwen-tts) through its own from_pretrained path, hook every "
            "module, run the cases and stream their args, kwargs and outputs into a golden store. Without "
            "--checkpoint, seeded random checkpoints of the chosen size are built (and cached). A float32 or "
            "bfloat16 recording also records the same cases in clean float64 beside it (<output>.float64.h5, "
            "named in the store), which `check` uses to calibrate chained thresholds. The output files are "
            "replaced only when the whole recording completes."
        ),
    )
    p.add_argument("-o", "--output", required=True, type=Path, help="golden store to write (.h5)")
    p.add_argument("--cases", nargs="+", metavar="CASE", help="cases to record (default: all; see list-cases)")
    p.add_argument("--dtype", default="float32", choices=("float32", "float64", "bfloat16"),
                   help="precision of the official model; float64 is the clean oracle (default float32)")  # fmt: skip
    p.add_argument("--size", default="tiny", choices=("tiny", "full"), help="seeded random model size (default tiny)")
    p.add_argument("--checkpoint", type=Path,
                   help="a local checkpoint folder (a real Qwen3-TTS model folder with speech_tokenizer/, a codec "
                        "folder, or a folder of base/custom_voice/voice_design built by this tool)")  # fmt: skip
    p.add_argument("--seed", type=int, default=None, help="seed of the random checkpoints (default 20260125)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads; results are bit-reproducible only at the same count (default 1)")  # fmt: skip
    p.add_argument("--modules", nargs="+", metavar="GLOB", help="record only modules whose path matches a glob")
    oracle = p.add_mutually_exclusive_group()
    oracle.add_argument("--oracle", dest="oracle", action="store_true", default=None,
                        help="re-run each call on a clean float64 twin to record its own noise (default for "
                             "float32/bfloat16 on tiny models)")  # fmt: skip
    oracle.add_argument("--no-oracle", dest="oracle", action="store_false", help="do not measure noise")
    p.add_argument("--no-determinism-check", dest="determinism", action="store_false",
                   help="skip the second run of each case that checks the official model computes every recorded "
                        "tensor bit for bit the same again (stored in the case provenance, shown by inspect); it "
                        "costs one unhooked-speed run per case")  # fmt: skip
    p.add_argument("--no-reference64", dest="reference64", action="store_false",
                   help="do not record the clean float64 twin (<output>.float64.h5) that float32 and bfloat16 "
                        "recordings get by default; without it a check calibrates chained thresholds on scaled "
                        "isolated noise (a looser fallback, reported as such)")  # fmt: skip
    p.add_argument("--attn-implementation", default="eager", choices=("eager", "sdpa"),
                   help="attention implementation of the official model (default eager: explicit masks)")  # fmt: skip
    p.add_argument("--compression", choices=("gzip", "lzf"), help="compress large (chunked) datasets")
    p.add_argument("--stats-above", type=int, metavar="BYTES", help="store tensors larger than this as statistics")
    p.add_argument("--hash-above", type=int, metavar="BYTES", help="store tensors larger than this as a hash only")
    p.set_defaults(func=_cmd_record)


def _cmd_record(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from .store.writer import StoragePolicy

    try:
        from .subjects.qwen3_tts import cases as case_registry
        from .subjects.qwen3_tts import record as recorder
    except ImportError as exc:
        raise UsageError(f"recording needs the official stack: {exc}") from None
    selected = case_registry.select(args.cases)
    storage = StoragePolicy(compression=args.compression, stats_above_bytes=args.stats_above,
                            hash_above_bytes=args.hash_above)  # fmt: skip
    oracle = args.oracle if args.oracle is not None else (args.size == "tiny" and args.checkpoint is None)
    console = Console(stderr=True)
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[status]}"), TimeElapsedColumn(), console=console) as progress:  # fmt: skip
        task = progress.add_task("loading official model", total=len(selected), status="")
        calls = {"n": 0}

        def on_case(case: case_registry.CaseSpec, index: int, total: int) -> None:
            progress.update(task, completed=index, total=total, description=case.name)

        def on_call(key: str) -> None:
            calls["n"] += 1
            if calls["n"] % 25 == 0:
                progress.update(task, status=f"{calls['n']} calls")

        def on_skip(case: case_registry.CaseSpec, why: str) -> None:
            console.print(f"[yellow]skipped {case.name}: {why}[/yellow]")

        try:
            import torch  # noqa: F401
        except ImportError:
            raise UsageError("recording needs torch (pip install 'conformance[record]')") from None
        path = recorder.record(
            args.output, selected, dtype=args.dtype, size=args.size, checkpoint=args.checkpoint,
            seed=args.seed if args.seed is not None else recorder.DEFAULT_SEED, threads=args.threads,
            modules=args.modules, oracle=oracle, attn_implementation=args.attn_implementation,
            command=_command_line(argv), storage=storage, on_case=on_case, on_call=on_call, on_skip=on_skip,
            determinism=args.determinism,
            reference64=args.reference64,
        )  # fmt: skip
        progress.update(task, completed=progress.tasks[0].total, description="done", status=f"{calls['n']} calls")
    console.print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, {calls['n']} calls)")
    twin = recorder.reference64_path(path)
    if args.reference64 and args.dtype != "float64":
        console.print(f"wrote {twin} ({twin.stat().st_size / 1e6:.1f} MB): its float64 reference, which `check` "
                      "finds through the store")  # fmt: skip
    return EXIT_OK


# -- dump ----------------------------------------------------------------------------------------------------


def _add_dump(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "dump",
        help="run the installed qwen_tts (the official package or a fork) on golden cases and write a port dump",
        description=(
            "Run whatever `qwen_tts` is importable (the official package, a fork of it, the official package on "
            "another transformers version) on the recorded inputs of golden cases, with the recorder's hooks on "
            "every module, and write <output>/<case>.safetensors with every call's outputs under their golden "
            "names: a dump in the port contract, checked by `conformance check --candidate dump:<output>` "
            "without a map. Weights come from the checkpoint the golden names (or --checkpoint)."
        ),
    )
    p.add_argument("--goldens", required=True, type=Path, help="golden store whose cases to run (.h5)")
    p.add_argument("--cases", nargs="+", metavar="CASE", help="cases to dump (default: all of the store)")
    p.add_argument("-o", "--output", required=True, type=Path, help="folder for <case>.safetensors")
    p.add_argument("--checkpoint", type=Path, help="checkpoint folder to load (default: the golden's provenance)")
    p.add_argument("--dtype", default="float32", choices=("float32", "float64", "bfloat16"),
                   help="precision to run in (default float32)")  # fmt: skip
    p.add_argument("--modules", nargs="+", metavar="GLOB", help="dump only modules whose key matches a glob")
    p.add_argument("--inputs", action="store_true", help="dump every call's tensor inputs too (larger files)")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    p.set_defaults(func=_cmd_dump)


def _cmd_dump(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from .compare.cli import _importable
    from .store import GoldenStore

    if not (_importable("torch") and _importable("qwen_tts")):
        raise UsageError("dump runs a torch implementation: it needs torch and an importable qwen_tts (the "
                         "official package or a fork; see docs/forks.md)")  # fmt: skip
    if args.output.exists() and not args.output.is_dir():
        raise UsageError("the output exists and is not a folder", path=args.output)
    from .subjects.qwen3_tts.dump import dump_cases

    def on_case(name: str, path: Path) -> None:
        if not args.quiet:
            print(f"dumped {name} -> {path} ({path.stat().st_size / 1e6:.1f} MB)")

    with GoldenStore(args.goldens) as store:
        dump_cases(store, args.cases, args.output, checkpoint=args.checkpoint, dtype=args.dtype, modules=args.modules,
                   inputs=args.inputs, on_case=on_case)  # fmt: skip
    if not args.quiet:
        print(f"check it: conformance check --goldens {shlex.quote(str(args.goldens))} "
              f"--candidate dump:{shlex.quote(str(args.output))}")  # fmt: skip
    return EXIT_OK


# -- inspect -------------------------------------------------------------------------------------------------


def _add_inspect(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("inspect", help="list the cases, modules, calls, shapes and provenance of a golden store",
                       description="Summarise a golden store: its cases, and with --case the modules of one case "
                                   "in execution order with their call counts, shapes and dtypes. With --verify, "
                                   "read every tensor back and check its checksum instead: exit 0 with one OK "
                                   "line, or 2 naming the first corrupted tensor.")  # fmt: skip
    p.add_argument("store", type=Path, help="golden store (.h5)")
    p.add_argument("--case", help="also list the modules of this case and its provenance")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.add_argument("--verify", action="store_true",
                   help="check every stored tensor against its recorded checksum (exit 2 on the first mismatch)")  # fmt: skip
    p.set_defaults(func=_cmd_inspect)


VERIFY_PROGRESS_BYTES = 64 << 20  # stores larger than this show a progress bar while verifying


def _cmd_inspect(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from .store import GoldenStore
    from .store.inspect import print_inspect

    with GoldenStore(args.store) as store:
        if args.verify:
            return _verify(store)
        print_inspect(store, args.case, args.json)
    return EXIT_OK


def _verify(store: Any) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    from .store.inspect import verify_store

    big = store.path.stat().st_size > VERIFY_PROGRESS_BYTES
    console = Console(stderr=True)
    if big:
        with Progress(TextColumn("[bold]verifying"), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                      console=console, transient=True) as progress:  # fmt: skip
            task = progress.add_task("verify", total=None)
            found = verify_store(store, lambda done, total: progress.update(task, completed=done, total=total))
    else:
        found = verify_store(store)
    summaries = f"; {found.summaries} kept as statistics or hash only" if found.summaries else ""
    print(f"OK: {store.path}: {found.tensors} tensors of {found.cases} case(s), {found.nbytes / 1e6:.1f} MB, "
          f"match their checksums{summaries}")  # fmt: skip
    return EXIT_OK


def _add_list_cases(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("list-cases", help="list the named cases that `record` knows")
    p.set_defaults(func=_cmd_list_cases)


def _cmd_list_cases(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from rich.console import Console
    from rich.table import Table

    from .subjects.qwen3_tts.cases import CASES

    table = Table(title="Qwen3-TTS cases")
    for column in ("case", "family", "model", "description"):
        table.add_column(column, overflow="fold")
    for case in CASES:
        table.add_row(case.name, case.family, case.model, case.description)
    Console().print(table)
    return EXIT_OK


# -- entry point ---------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="conformance",
        description="Differential conformance checking of model ports against the official model "
        "(first subject: Qwen3-TTS). Exit codes: 0 conform, 1 divergence beyond policy, 2 bad input or usage.",
    )
    parser.add_argument("--version", action="version", version=f"conformance {__import__('conformance').__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    _add_record(sub)
    _add_dump(sub)
    _add_inspect(sub)
    _add_list_cases(sub)
    from .compare import cli as compare_cli

    compare_cli.add_commands(sub)
    __import__(f"{__package__}.ports.cli", fromlist=["add_commands"]).add_commands(sub)  # export
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args, argv))
    except ConformanceError as exc:
        print(f"conformance: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("conformance: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
