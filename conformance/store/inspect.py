"""Summaries of a golden store for `conformance inspect` (tables with rich, or JSON), and `--verify`:
every stored tensor read back against the checksum recorded when it was written."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .reader import Case, GoldenStore


def _human(nbytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if nbytes < 1024 or unit == "GB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return f"{nbytes:.1f} GB"  # pragma: no cover


def case_summary(case: Case) -> dict[str, Any]:
    leaves = case.leaves()
    tensors = [leaf for leaf in leaves if leaf.is_tensor]
    unique = {(leaf.location, leaf.row) for leaf in tensors if leaf.location}
    sizes = {(leaf.location, leaf.row): leaf.nbytes for leaf in tensors if leaf.location}
    p = case.provenance
    return {
        "case": case.name,
        "subject": p.get("subject", ""),
        "family": p.get("family", ""),
        "dtype": p.get("dtype", ""),
        "size": p.get("size", ""),
        "modules": len(case.keys()),
        "calls": len(case.calls()),
        "tensor_leaves": len(tensors),
        "tensors_stored": len(unique),
        "bytes_stored": int(sum(sizes.values())),
        "oracle_records": len(case.oracle_records()),
        # did the official model compute every recorded tensor bit for bit again (None: not checked)
        "deterministic": (p.get("determinism") or {}).get("bitwise_identical"),
        "description": p.get("description", ""),
    }


def determinism_line(provenance: dict[str, Any]) -> str:
    """What the recorder's second run of the case found (provenance["determinism"])."""
    found = provenance.get("determinism")
    if not found:
        return "not checked (recorded without the second run)"
    if found.get("bitwise_identical"):
        return f"bitwise identical over {found.get('runs', 2)} runs ({found.get('tensors_compared', '?')} tensors)"
    first = ", ".join(found.get("differing", [])[:3] + found.get("extra_calls", [])[:1])
    return (f"NOT bitwise identical over {found.get('runs', 2)} runs: {found.get('differing_count', 0)} tensor(s) "
            f"differ, first {first}")  # fmt: skip


def module_summary(case: Case) -> list[dict[str, Any]]:
    calls: dict[str, int] = defaultdict(int)
    classes: dict[str, str] = {}
    for record in case.calls():
        calls[record.key] += 1
        classes[record.key] = record.class_name
    out = []
    for key in case.keys():  # noqa: SIM118 (Case.keys is a method, not a dict)
        leaves = [leaf for leaf in case.leaves(key, 0) if leaf.is_tensor]
        shapes = ", ".join(f"{leaf.role}:{leaf.dtype}{list(leaf.shape)}" for leaf in leaves[:4])
        if len(leaves) > 4:
            shapes += f", ... ({len(leaves)} tensors)"
        out.append({"module": key, "class": classes[key], "calls": calls[key], "call 0": shapes})
    return out


def store_summary(store: GoldenStore) -> dict[str, Any]:
    return {
        "path": str(store.path),
        "created_utc": store.created_utc,
        "command": store.command,
        "software": store.software,
        "cases": [case_summary(case) for case in store],
    }


def print_inspect(store: GoldenStore, case_name: str | None = None, as_json: bool = False) -> None:
    from rich.console import Console
    from rich.table import Table

    if as_json:
        data = store_summary(store)
        if case_name:
            case = store.case(case_name)
            data["modules"] = module_summary(case)
            data["provenance"] = case.provenance
        print(json.dumps(data, indent=2, default=str))
        return
    console = Console()
    sw = store.software
    console.print(f"[bold]{store.path}[/bold]  created {store.created_utc}")
    recorded = {(c.provenance.get("subject"), c.provenance.get("official_package"), c.provenance.get("official_version"))
                for c in store}  # fmt: skip
    official = "; ".join(f"{subject or '?'}: official {package or '?'} {version or '?'}"
                         for subject, package, version in sorted(recorded, key=str))  # fmt: skip
    libraries = " · ".join(f"{name} {sw[name]}" for name in ("torch", "transformers") if name in sw)
    console.print(f"{official} · {libraries} · cpu {sw.get('cpu', '?')} ({sw.get('torch_cpu_capability', '?')})")
    if store.command:
        console.print(f"command: {store.command}")
    table = Table(title="cases", show_lines=False)
    for column in ("case", "subject", "family", "dtype", "modules", "calls", "tensors", "stored", "oracle"):
        table.add_column(column, justify="right" if column in ("modules", "calls", "tensors", "oracle") else "left")
    for case in store:
        s = case_summary(case)
        table.add_row(s["case"], s["subject"], s["family"], s["dtype"], str(s["modules"]), str(s["calls"]), str(s["tensor_leaves"]),
                      f"{s['tensors_stored']} / {_human(s['bytes_stored'])}", str(s["oracle_records"]))  # fmt: skip
    console.print(table)
    flaky = [
        case.name for case in store if (case.provenance.get("determinism") or {}).get("bitwise_identical") is False
    ]
    if flaky:
        console.print(f"[red]the official model was not bitwise deterministic at record time: {', '.join(flaky)}[/red]",
                      soft_wrap=True)  # fmt: skip
    if case_name:
        case = store.case(case_name)
        p = case.provenance
        console.print(f"\n[bold]{case.name}[/bold]: {p.get('description', '')}")
        for field in ("dtype", "size", "seed", "threads", "attn_implementation", "official_version", "oracle"):
            console.print(f"  {field}: {p.get(field)}")
        console.print(f"  determinism: {determinism_line(p)}", highlight=False, soft_wrap=True)
        for name, hashes in (p.get("weights_sha256") or {}).items():
            for file, digest in hashes.items():
                console.print(f"  weights {name}/{file}: sha256 {digest[:16]}…")
        console.print(f"  inputs: {', '.join(case.input_names())}   outputs: {', '.join(case.output_names())}")
        modules = Table(title=f"modules of {case.name} (execution order)")
        for column in ("module", "class", "calls", "call 0"):
            modules.add_column(column, overflow="fold")
        for row in module_summary(case):
            modules.add_row(row["module"], row["class"], str(row["calls"]), row["call 0"])
        console.print(modules)


@dataclass
class Verified:
    """What `verify_store` read: every stored tensor (once, however many calls share it) and every case input
    and output, all matching their checksums; `summaries` tensors kept as statistics or a hash only."""

    cases: int = 0
    tensors: int = 0
    nbytes: int = 0
    summaries: int = 0


def verify_store(store: GoldenStore, on_progress: Callable[[int, int], None] | None = None) -> Verified:
    """Read every tensor of every case and check its checksum. Raises IntegrityError (a StoreError for an
    unreadable dataset) naming the store and the first corrupted tensor, in case and execution order.
    `on_progress(bytes done, bytes total)` is called after each tensor."""
    plan: list[tuple[Case, Any]] = []
    summaries = 0
    for case in store:
        seen: set[tuple[str, int]] = set()
        for leaf in case.leaves():
            if not leaf.is_tensor:
                continue
            if leaf.tier != "full":
                summaries += 1
                continue
            if (leaf.location, leaf.row) not in seen:  # a tensor passed on from call to call is stored once
                seen.add((leaf.location, leaf.row))
                plan.append((case, leaf))
    total = sum(leaf.nbytes for _, leaf in plan)
    done = Verified(cases=len(store.cases), summaries=summaries)
    for case, leaf in plan:
        for _ in case.iter_tensor_chunks(leaf, verify=True):  # streamed: a large tensor is never held whole
            pass
        done.tensors += 1
        done.nbytes += leaf.nbytes
        if on_progress is not None:
            on_progress(done.nbytes, total)
    for case in store:
        for name in case.input_names():
            case.input(name)  # checks the stored input's checksum
        for name in case.output_names():
            case.output(name)
    return done
