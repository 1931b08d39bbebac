"""The leaderboard's fast paths give the same answers as the plain computation.

Filtered queries rank only the rows at or above the worst shown one, and the
Pareto front is found with anchors and ranked by counting, not by sorting
every row. On a small random store full of ties and NULLs, on every backend,
each must agree with a reference built here: ranks from ``rank_rows``
(pandas) over the unfiltered board, fronts by brute force, rank counts by
counting in Python.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest

from selection import HOST_DEVICE, DeviceResult, Store
from selection.leaderboard.frame import leaderboard
from selection.leaderboard.sql import better_counts
from selection.ranking.policies import RankingPolicy, get_policy, rank_rows

# The modules, not the function `selection` exports under the same name.
board_module = importlib.import_module("selection.leaderboard.frame")
sql_module = importlib.import_module("selection.leaderboard.sql")

POLICIES: list[Any] = [
    None, "accuracy", "latency", "size",
    RankingPolicy(name="by-p50", tie_breakers=("host_latency_p50_ms",)),
    RankingPolicy(name="by-train", objective="train_seconds", tie_breakers=("size_bytes",)),
]


def _fill(any_make, seed: int, n: int = 40) -> None:
    """``n`` candidates on host and "npu" with few distinct values (ties), NULLs and ineligible rows."""
    rng = np.random.default_rng(seed)
    any_make.sweep()
    for i in range(n):
        cid = f"c-{i:03d}"
        sha = any_make.candidate(cid, store=False).onnx_sha256
        results = []
        for device in (HOST_DEVICE, "npu"):
            acc = None if rng.random() < 0.1 else float(rng.choice([0.5, 0.6, 0.7, 0.8]))
            lat = None if rng.random() < 0.1 else float(rng.choice([0.1, 0.2, 0.3]))
            size = None if rng.random() < 0.1 else int(rng.choice([100, 200]))
            extra: dict[str, Any] = {}
            if device == "npu":
                extra = {"has_fallback": bool(rng.random() < 0.1),
                         "eligible": bool(rng.random() > 0.1),
                         "peak_activation_bytes": int(rng.choice([1, 10])), "memory_budget_bytes": 5}
            status = "failed" if rng.random() < 0.05 else "ok"
            results.append(DeviceResult(device, status, error=None if status == "ok" else "boom",
                                        accuracy=acc, latency_ms=lat, size_bytes=size,
                                        host_latency_p50_ms=None if lat is None else lat * 2,
                                        artifact_sha256=sha, extra=extra))
        any_make.candidate(cid, devices=tuple(results))


def _ranks(frame: pd.DataFrame) -> dict[str, Any]:
    return {cid: None if pd.isna(rank) else int(rank)
            for cid, rank in zip(frame["candidate_id"], frame["rank"])}


def _reference(store: Store, device: str, policy: Any) -> pd.DataFrame:
    """The unfiltered board with ``ref`` ranks from pandas (checked against the SQL ones)."""
    full = leaderboard(store, device=device, policy=policy)
    full["ref"] = rank_rows(full, policy).to_numpy()
    assert _ranks(full) == _ranks(full.assign(rank=full["ref"]))
    return full


def _brute_front(rows: pd.DataFrame) -> set[str]:
    points = [(r.candidate_id, r.accuracy, r.latency_ms, r.size_bytes) for r in rows.itertuples()
              if not (pd.isna(r.accuracy) or pd.isna(r.latency_ms) or pd.isna(r.size_bytes))]

    def dominates(q: tuple, p: tuple) -> bool:
        weakly = q[1] >= p[1] and q[2] <= p[2] and q[3] <= p[3]
        return weakly and (q[1] > p[1] or q[2] < p[2] or q[3] < p[3])

    return {p[0] for p in points if not any(dominates(q, p) for q in points)}


FILTERS: list[tuple[dict[str, Any], Callable[[pd.DataFrame], pd.Series]]] = [
    ({"where": ["latency_ms < 0.25"]}, lambda f: f["latency_ms"] < 0.25),
    ({"where": ["accuracy >= 0.6", "size_bytes <= 100"]},
     lambda f: (f["accuracy"] >= 0.6) & (f["size_bytes"] <= 100)),
    ({"where": ["accuracy == 0.7 or latency_ms is null"]},
     lambda f: (f["accuracy"] == 0.7) | f["latency_ms"].isna()),
    ({"where": ["rank <= 3"]}, lambda f: f["ref"] <= 3),
    ({"where": ["eligible == false"]}, lambda f: ~f["eligible"]),
    ({"where": ["seed == 1234", "eligible == true"]}, lambda f: f["eligible"]),
    ({"status": "failed"}, lambda f: f["status"] == "failed"),
    ({"slice_id": "slice-0", "where": ["host_latency_p50_ms > 0.3"]},
     lambda f: f["host_latency_p50_ms"] > 0.3),
]


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: getattr(p, "name", p) or "default")
def test_filtered_ranks_are_the_global_ranks(any_store: Store, any_make, seed: int, policy: Any) -> None:
    _fill(any_make, seed)
    for device in (HOST_DEVICE, "npu"):
        full = _reference(any_store, device, policy)
        for kwargs, keep in FILTERS:
            got = leaderboard(any_store, device=device, policy=policy, **kwargs)
            want = full[keep(full).fillna(False).astype(bool).to_numpy()]
            assert _ranks(got) == {c: None if pd.isna(r) else int(r)
                                   for c, r in zip(want["candidate_id"], want["ref"])}, kwargs
            # Same order as ever: rank, unranked last, then id.
            ordered = want.assign(key=want["ref"].astype("float64").fillna(np.inf))
            assert list(got["candidate_id"]) == list(
                ordered.sort_values(["key", "candidate_id"], kind="mergesort")["candidate_id"]), kwargs


@pytest.mark.parametrize("anchors", [(1000, 16, 200), (3, 1, 2), (1, 2, 1)])
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: getattr(p, "name", p) or "default")
def test_pareto_front_and_ranks_match_brute_force(
    any_store: Store, any_make, monkeypatch: pytest.MonkeyPatch, seed: int, policy: Any,
    anchors: tuple[int, int, int],
) -> None:
    # Few anchor rows: anchors that are not the whole front, so SQL drops only some rows;
    # few rank-count pieces per statement, so the counts span statements.
    monkeypatch.setattr(board_module, "_ANCHOR_ROWS", anchors[0])
    monkeypatch.setattr(board_module, "_MAX_ANCHORS", anchors[1])
    monkeypatch.setattr(sql_module, "_PIECES", anchors[2])
    _fill(any_make, seed)
    for device in (HOST_DEVICE, "npu"):
        full = _reference(any_store, device, policy)
        eligible = full[full["ref"].notna().to_numpy()]
        front = leaderboard(any_store, device=device, policy=policy, pareto=True)
        assert set(front["candidate_id"]) == _brute_front(eligible)
        ref = dict(zip(eligible["candidate_id"], eligible["ref"]))
        assert _ranks(front) == {c: int(ref[c]) for c in front["candidate_id"]}


def test_pareto_of_identical_points_keeps_them_all(any_store: Store, any_make) -> None:
    any_make.sweep()
    for i in range(12):
        any_make.candidate(f"c-{i:02d}", accuracy=0.8, latency_ms=0.5, size_bytes=300)
    front = leaderboard(any_store, device=HOST_DEVICE, pareto=True)
    assert _ranks(front) == {f"c-{i:02d}": i + 1 for i in range(12)}


@pytest.mark.parametrize("pieces", [200, 2, 1])
@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: getattr(p, "name", p) or "default")
def test_better_counts_match_counting(
    any_store: Store, any_make, monkeypatch: pytest.MonkeyPatch, policy: Any, pieces: int,
) -> None:
    """Rows with a strictly better objective, for values present (ties) and absent, best first."""
    monkeypatch.setattr(sql_module, "_PIECES", pieces)
    _fill(any_make, 3)
    chosen = get_policy(policy)
    objective, ascending = chosen.order[0]
    for device in (HOST_DEVICE, "npu"):
        full = _reference(any_store, device, policy)
        scores = full.loc[full["ref"].notna().to_numpy(), objective].astype("float64").to_numpy()
        present = sorted(set(scores.tolist()))
        values = sorted({*present, *((a + b) / 2 for a, b in zip(present, present[1:])),
                         present[0] - 1, present[-1] + 1}, reverse=not ascending)
        want = [int((scores < v).sum() if ascending else (scores > v).sum()) for v in values]
        with any_store.snapshot() as conn:
            assert better_counts(conn, "sw-1", device, chosen, values) == want
            assert better_counts(conn, "sw-1", device, chosen, []) == []


def test_pareto_rows_are_the_eligible_rows_with_a_front_point(any_store: Store, any_make) -> None:
    """Found by their metrics: equal eligible rows all are; a tied, an ineligible and an incomplete row are not."""
    any_make.sweep()
    point = {"accuracy": 0.8, "latency_ms": 0.1, "size_bytes": 100}
    rows = {
        "c-a": point, "c-b": point,  # equal: both on the front
        "c-slow": {**point, "latency_ms": 0.2},  # same accuracy, dominated
        "c-nolat": {**point, "latency_ms": None},  # same accuracy, missing a metric
        "c-fallback": point,  # the same metrics, ineligible on the device
        "c-best": {"accuracy": 0.9, "latency_ms": 0.5, "size_bytes": 500},
    }
    for cid, metrics in rows.items():
        sha = any_make.candidate(cid, store=False).onnx_sha256
        extra = {"has_fallback": cid == "c-fallback"}
        any_make.candidate(cid, devices=(DeviceResult("npu", "ok", artifact_sha256=sha, extra=extra,
                                                      **metrics),))
    front = leaderboard(any_store, device="npu", pareto=True)
    # Default order: accuracy, then latency, then size (NULL last), then id.
    assert _ranks(front) == {"c-best": 1, "c-a": 2, "c-b": 3}
    assert _ranks(leaderboard(any_store, device="npu"))["c-nolat"] == 5
