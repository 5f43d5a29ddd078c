"""`conformance record`, `conformance dump` and `conformance list-cases`: argument handling around the recording
session (conformance.capture.session) and the subjects' own dumps, found through the registry."""

from __future__ import annotations

import argparse
import importlib.util
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .. import precisions, subjects
from ..errors import UsageError
from ..store import GoldenStore, StoragePolicy
from .common import EXIT_OK, command_line


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "record",
        help="run the official model on named cases and record every module call into an HDF5 golden store",
        description=(
            "Load the official model of each case's subject through its own loading path, hook every module, run "
            "the cases and stream their args, kwargs and outputs into a golden store. Without --checkpoint, "
            "seeded random checkpoints of the chosen size are built (and cached). A float32 or bfloat16 recording "
            "also records the same cases in clean float64 beside it (<output>.float64.h5, named in the store), "
            "which `check` uses to calibrate chained thresholds. The output files are replaced only when the "
            "whole recording completes."
        ),
    )
    p.add_argument("-o", "--output", required=True, type=Path, help="golden store to write (.h5)")
    p.add_argument("--cases", nargs="+", metavar="CASE",
                   help="cases to record, by name or as SUBJECT:CASE (default: every case of --subject, or of every "
                        "subject; see list-cases)")  # fmt: skip
    p.add_argument("--subject", help="record the cases of this subject only (see list-cases)")
    p.add_argument("--dtype", default="float32", choices=("float32", "float64", "bfloat16"),
                   help="precision of the official model; float64 is the clean oracle (default float32)")  # fmt: skip
    p.add_argument("--size", default="tiny", choices=("tiny", "port", "full"),
                   help="seeded random model size (default tiny; port: a subject's constants that ports hard-code, "
                        "with small widths)")  # fmt: skip
    p.add_argument("--checkpoint", type=Path,
                   help="a local checkpoint folder of the subject's official model, in the layout its loader takes "
                        "(see the subject's documentation), or a folder of seeded checkpoints built by this tool; "
                        "the cases must come from one subject")  # fmt: skip
    p.add_argument("--seed", type=int, default=None, help="seed of the random checkpoints (default: the subject's)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads; results are bit-reproducible only at the same count (default 1)")  # fmt: skip
    p.add_argument("--modules", nargs="+", metavar="GLOB", help="record only modules whose path matches a glob")
    oracle = p.add_mutually_exclusive_group()
    oracle.add_argument("--oracle", dest="oracle", action="store_true", default=None,
                        help="re-run each call on a clean float64 twin to record its own noise (default for "
                             "float32/bfloat16 on tiny models)")  # fmt: skip
    oracle.add_argument("--oracle-sample", dest="oracle", action="store_const", const="sampled",
                        help="re-run only calls 0, 1, 2, 4, 8... of each module on the float64 twin: calibrated "
                             "thresholds at a fraction of the oracle's time (default at full size and for a "
                             "checkpoint; the twin model is in memory beside the recorded one)")  # fmt: skip
    oracle.add_argument("--no-oracle", dest="oracle", action="store_false", help="do not measure noise")
    p.add_argument("--no-determinism-check", dest="determinism", action="store_false",
                   help="skip the second run of each case that checks the official model computes every recorded "
                        "tensor bit for bit the same again (stored in the case provenance, shown by inspect); it "
                        "costs one unhooked-speed run per case")  # fmt: skip
    p.add_argument("--no-reference64", dest="reference64", action="store_false",
                   help="do not record the clean float64 twin (<output>.float64.h5) that float32 and bfloat16 "
                        "recordings get by default; without it a check calibrates chained thresholds on scaled "
                        "isolated noise (a looser fallback, reported as such)")  # fmt: skip
    p.add_argument("--precisions", default="", metavar="LIST",
                   help="precision twins to record the noise of, comma-separated: bfloat16, float16 (compute in that "
                        "dtype, weights cast); `check --precision NAME` judges a candidate on it (docs/precision.md)")  # fmt: skip
    p.add_argument("--weights-quant", default="", metavar="LIST",
                   help="weight-format twins to record the noise of, comma-separated: f16, q8_0, q4_0 (weights stored "
                        "as ggml does, float32 compute; judged with --precision f16-weights, q8_0, q4_0)")  # fmt: skip
    p.add_argument("--attn-implementation", default="eager", choices=("eager", "sdpa"),
                   help="attention implementation of the official model (default eager: explicit masks)")  # fmt: skip
    p.add_argument("--compression", choices=("gzip", "lzf"), help="compress large (chunked) datasets")
    p.add_argument("--stats-above", type=int, metavar="BYTES", help="store tensors larger than this as statistics")
    p.add_argument("--hash-above", type=int, metavar="BYTES", help="store tensors larger than this as a hash only")
    p.set_defaults(func=cmd_record)

    p = sub.add_parser(
        "dump",
        help="run the installed official package (or a fork of it) on golden cases and write a port dump",
        description=(
            "Run whatever implementation of the golden's subject is importable (the official package, a fork of it, "
            "the official package on another transformers version) on the recorded inputs of golden cases, with "
            "the recorder's hooks on every module, and write <output>/<case>.safetensors with every call's outputs "
            "under their golden names: a dump in the port contract, checked by `conformance check --candidate "
            "dump:<output>` without a map. Weights come from the checkpoint the golden names (or --checkpoint)."
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
    p.set_defaults(func=cmd_dump)


def add_list_cases(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("list-cases", help="list the named cases that `record` knows, per subject")
    p.add_argument("--subject", help="list the cases of this subject only")
    p.set_defaults(func=cmd_list_cases)


def cmd_record(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    selected = subjects.find_cases(args.cases, args.subject)
    if not selected:
        raise UsageError("no case to record (list-cases shows them)")
    by_subject: dict[str, tuple[Any, list[Any]]] = {}
    for subject, case in selected:
        by_subject.setdefault(subject.name, (subject, []))[1].append(case)
    if args.checkpoint is not None and len(by_subject) > 1:
        raise UsageError(f"--checkpoint is one subject's checkpoint, and these cases come from several "
                         f"({', '.join(by_subject)}): name one with --subject")  # fmt: skip
    if importlib.util.find_spec("torch") is None:
        raise UsageError("recording needs torch (pip install 'conformance[record]')")
    try:
        from ..capture import session

        parts = [(subject.recording(size=args.size, checkpoint=args.checkpoint, seed=args.seed,
                                    attn_implementation=args.attn_implementation), cases)
                 for subject, cases in by_subject.values()]  # fmt: skip
    except ImportError as exc:
        raise UsageError(f"recording needs the official stack: {exc}") from None
    storage = StoragePolicy(compression=args.compression, stats_above_bytes=args.stats_above,
                            hash_above_bytes=args.hash_above)  # fmt: skip
    tiny = args.size == "tiny" and args.checkpoint is None
    oracle = args.oracle if args.oracle is not None else (True if tiny else "sampled")
    twins = precisions.twins(args.precisions, args.weights_quant)
    if twins and args.oracle is None:
        oracle = True  # twins are measured by the oracle: asking for them asks for it
    console = Console(stderr=True)
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[status]}"), TimeElapsedColumn(), console=console) as progress:  # fmt: skip
        task = progress.add_task("loading official model", total=len(selected), status="")
        calls = {"n": 0}

        def on_case(name: str, index: int, total: int) -> None:
            progress.update(task, completed=index, total=total, description=name)

        def on_call(key: str) -> None:
            calls["n"] += 1
            if calls["n"] % 25 == 0:
                progress.update(task, status=f"{calls['n']} calls")

        def on_skip(name: str, why: str) -> None:
            console.print(f"[yellow]skipped {name}: {why}[/yellow]")

        path = session.record(args.output, parts, dtype=args.dtype, threads=args.threads, modules=args.modules,
                              oracle=oracle, command=command_line(argv), storage=storage, on_case=on_case,
                              on_call=on_call, on_skip=on_skip, determinism=args.determinism,
                              reference64=args.reference64, twins=twins)  # fmt: skip
        progress.update(task, completed=progress.tasks[0].total, description="done", status=f"{calls['n']} calls")
    console.print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, {calls['n']} calls)")
    twin = session.reference64_path(path)
    if args.reference64 and args.dtype != "float64":
        console.print(f"wrote {twin} ({twin.stat().st_size / 1e6:.1f} MB): its float64 reference, which `check` "
                      "finds through the store")  # fmt: skip
    return EXIT_OK


def cmd_dump(args: argparse.Namespace, argv: Sequence[str]) -> int:
    if args.output.exists() and not args.output.is_dir():
        raise UsageError("the output exists and is not a folder", path=args.output)

    def on_case(name: str, path: Path) -> None:
        if not args.quiet:
            print(f"dumped {name} -> {path} ({path.stat().st_size / 1e6:.1f} MB)")

    with GoldenStore(args.goldens) as store:
        names = list(args.cases or store.cases)
        for name in names:
            if name not in store.cases:
                raise UsageError(f"no case {name!r} in the golden store (cases: {', '.join(store.cases)})",
                                 path=store.path)  # fmt: skip
        by_subject: dict[str, list[str]] = {}
        for name in names:
            recorded = store.case(name).provenance.get("subject")
            if not recorded:
                raise UsageError(f"case {name!r} names no subject: dump runs a subject's official package",
                                 path=store.path)  # fmt: skip
            by_subject.setdefault(str(recorded), []).append(name)
        for name, cases in by_subject.items():
            subjects.get(name).dump(store, cases, args.output, checkpoint=args.checkpoint, dtype=args.dtype,
                                    modules=args.modules, inputs=args.inputs, on_case=on_case)  # fmt: skip
    if not args.quiet:
        print(f"check it: conformance check --goldens {shlex.quote(str(args.goldens))} "
              f"--candidate dump:{shlex.quote(str(args.output))}")  # fmt: skip
    return EXIT_OK


def cmd_list_cases(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from rich.console import Console
    from rich.table import Table

    chosen = [subjects.get(args.subject)] if args.subject else subjects.all()
    console = Console()
    for subject in chosen:
        table = Table(title=f"{subject.title or subject.name} cases (subject {subject.name})")
        for column in ("case", "family", "model", "description"):
            table.add_column(column, overflow="fold")
        for case in subject.cases():
            table.add_row(case.name, case.family, case.model, case.description)
        console.print(table)
    return EXIT_OK
