"""Tensors stored in the statistics or hash tier are judged on what the tier holds, and say so."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conformance.compare.engine import Judge
from conformance.compare.policy import Policy
from conformance.store import GoldenStore, GoldenWriter, StoragePolicy


@pytest.fixture(scope="module")
def tiered(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    arrays = {
        "stats": rng.standard_normal(4096).astype(np.float32),
        "hash": rng.standard_normal(65536).astype(np.float32),
    }
    path = tmp_path_factory.mktemp("tiers") / "g.h5"
    policy = StoragePolicy(stats_above_bytes=8 << 10, hash_above_bytes=128 << 10)
    with GoldenWriter(path, command="t", software={}, policy=policy) as writer, writer.case("c", {}) as case:
        for name, array in arrays.items():
            case.add_tensor(name, 0, "outputs/0", array)
            case.add_call(name, name, "forward", "M", 0, 0, 1, {"outputs": {"leaf": "outputs/0"}})
    return path, arrays


@pytest.mark.parametrize("tier", ["stats", "hash"])
def test_a_faithful_candidate_passes_on_what_the_tier_holds(tiered, tier: str) -> None:  # type: ignore[no-untyped-def]
    path, arrays = tiered
    with GoldenStore(path) as store:
        case = store.case("c")
        leaf = case.leaf(tier, 0, "outputs/0")
        assert leaf.tier == tier
        result = Judge(Policy(), case, None, "chained").judge(leaf, arrays[tier].copy(), (0, 1))
    assert result.status == "pass", result.message
    assert result.tier == tier and f"{tier} tier" in result.source


@pytest.mark.parametrize(("tier", "scale"), [("stats", 1.01), ("hash", 1 + 2**-20)])
def test_a_divergent_candidate_fails_on_what_the_tier_holds(tiered, tier: str, scale: float) -> None:  # type: ignore[no-untyped-def]
    path, arrays = tiered
    with GoldenStore(path) as store:
        case = store.case("c")
        leaf = case.leaf(tier, 0, "outputs/0")
        result = Judge(Policy(), case, None, "chained").judge(leaf, arrays[tier] * np.float32(scale), (0, 1))
    assert result.status == "fail"
    assert f"{tier} tier" in result.message
