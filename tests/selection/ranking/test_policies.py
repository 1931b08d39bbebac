"""Ranking policies: SQL eligibility agrees with the pandas explanation; Pareto fronts are exact."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from selection import DeviceResult, Store
from selection.leaderboard.frame import leaderboard
from selection.ranking.pareto import pareto_mask
from selection.ranking.policies import POLICIES, eligibility, policy_from_config, rank_rows


@pytest.mark.parametrize("policy", [*POLICIES, "tight"])
def test_sql_and_pandas_agree_on_eligibility_and_rank(store: Store, make, policy: str) -> None:
    chosen = policy_from_config({"max_latency_ms": 2.0, "min_accuracy": 0.3}, "[ranking]") \
        if policy == "tight" else POLICIES[policy]
    make.sweep()
    rng = np.random.default_rng(7)
    for i in range(40):
        sha = make.candidate(f"c-{i:02d}", store=False).onnx_sha256
        extra = {}
        if rng.random() < 0.7:
            extra = {"has_fallback": bool(rng.random() < 0.2),
                     "peak_activation_bytes": int(rng.integers(1, 20)), "memory_budget_bytes": 15,
                     "eligible": bool(rng.random() < 0.9)}
        accuracy = None if rng.random() < 0.05 else float(rng.random())
        make.candidate(f"c-{i:02d}", devices=(DeviceResult(
            "npu", "ok" if rng.random() < 0.9 else "failed", accuracy=accuracy,
            latency_ms=float(rng.uniform(0.5, 3)), size_bytes=int(rng.integers(100, 200)),
            artifact_sha256=sha, extra=extra),))
    frame = leaderboard(store, policy=chosen)
    eligible, reasons = eligibility(frame, chosen)
    assert list(eligible) == list(frame["eligible"])
    assert [r is None for r in reasons] == list(frame["eligible"])
    assert list(rank_rows(frame, chosen).fillna(0)) == list(frame["rank"].fillna(0))


def test_pareto_mask_matches_brute_force() -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        n = int(rng.integers(1, 60))
        acc = rng.integers(0, 5, n).astype(float)  # small ranges: many ties
        lat = rng.integers(0, 5, n).astype(float)
        size = rng.integers(0, 5, n).astype(float)
        acc[rng.random(n) < 0.1] = np.nan
        expected = []
        for i in range(n):
            if np.isnan(acc[i]):
                expected.append(False)
                continue
            dominated = any(
                not np.isnan(acc[j]) and acc[j] >= acc[i] and lat[j] <= lat[i] and size[j] <= size[i]
                and (acc[j] > acc[i] or lat[j] < lat[i] or size[j] < size[i])
                for j in range(n) if j != i)
            expected.append(not dominated)
        assert list(pareto_mask(acc, lat, size)) == expected


def test_eligibility_without_extra_columns() -> None:
    frame = pd.DataFrame({"status": ["ok", "failed"], "accuracy": [0.5, 0.9], "error": [None, "boom"]})
    eligible, reasons = eligibility(frame)
    assert list(eligible) == [True, False]
    assert reasons[1] == "status failed (boom)"
