"""benchmarks/summarize.py: the table docs/performance.md quotes from `nox -s benchmark`'s JSON."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "summarize.py"


@pytest.fixture(scope="module")
def summarize():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("benchmark_summary", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_one_row_per_benchmark_with_its_figures(summarize, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    results = {
        "datetime": "2026-11-25T10:00:00",
        "machine_info": {"cpu": {"brand_raw": "AMD EPYC", "count": 2}, "python_version": "3.11.7"},
        "commit_info": {"id": "0123456789abcdef"},
        "benchmarks": [
            {"group": "store-write", "name": "test_write[raw]", "stats": {"min": 0.5, "rounds": 5}, "extra_info": {}},
            {
                "group": "codec-recording",
                "name": "test_record[record]",
                "stats": {"min": 7.25, "rounds": 3},
                "extra_info": {"ratio_to_bare_forward": 1.21},
            },
        ],
    }
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    out = tmp_path / "summary.md"
    assert summarize.main([str(path), "-o", str(out)]) == 0
    table = out.read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ") and "test_" in line]
    assert rows == [
        "| codec-recording | test_record[record] | 7.250 | 3 | ratio_to_bare_forward=1.21 |",
        "| store-write | test_write[raw] | 0.500 | 5 |  |",
    ]
    assert "AMD EPYC (2 cores)" in table and "0123456789" in table


def test_unreadable_results_exit_2(summarize, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "results.json"
    path.write_text("{truncated")
    assert summarize.main([str(path)]) == 2
    assert str(path) in capsys.readouterr().err
