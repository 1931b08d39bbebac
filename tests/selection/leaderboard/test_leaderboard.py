"""Leaderboard rows, ranking and the best candidate."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest

from selection import (
    HOST_DEVICE,
    LEADERBOARD_COLUMNS,
    ConfigError,
    DeviceResult,
    NotFoundError,
    Store,
    best_candidate,
    leaderboard,
    rank_rows,
)


def _ranks(frame: pd.DataFrame) -> dict[str, object]:
    return {cid: (None if pd.isna(r) else int(r)) for cid, r in zip(frame["candidate_id"], frame["rank"])}


def test_empty_store_gives_empty_frame_with_columns(store: Store) -> None:
    for sweep in ("latest", "all"):
        frame = leaderboard(store, sweep=sweep)
        assert frame.empty
        assert tuple(frame.columns) == LEADERBOARD_COLUMNS
        assert str(frame["rank"].dtype) == "Int64"


def test_columns_order_and_values(store: Store, make) -> None:
    make.sweep()
    candidate = make.candidate("c-1", accuracy=0.75, latency_ms=2.0, size_bytes=4096)
    frame = leaderboard(store)
    assert tuple(frame.columns) == LEADERBOARD_COLUMNS
    row = frame.iloc[0]
    assert row["rank"] == 1
    assert row["params"] == {"hidden": 16, "lr": 0.01}
    assert (row["device"], row["status"], row["accuracy"]) == (HOST_DEVICE, "ok", 0.75)
    assert row["size_bytes"] == 4096 and row["seed"] == 1234
    assert row["artifact_sha256"] == candidate.onnx_sha256
    assert row["created_at"] == candidate.created_at


def test_ranking_breaks_ties_by_latency_size_then_id(store: Store, make) -> None:
    make.sweep()
    make.candidate("c-e", accuracy=0.80, latency_ms=1.0, size_bytes=10)
    make.candidate("c-d", accuracy=0.90, latency_ms=2.0, size_bytes=10)  # slower
    make.candidate("c-c", accuracy=0.90, latency_ms=1.0, size_bytes=20)  # bigger
    make.candidate("c-b", accuracy=0.90, latency_ms=1.0, size_bytes=10)  # full tie with c-a
    make.candidate("c-a", accuracy=0.90, latency_ms=1.0, size_bytes=10)
    frame = leaderboard(store)
    assert list(frame["candidate_id"]) == ["c-a", "c-b", "c-c", "c-d", "c-e"]
    assert list(frame["rank"]) == [1, 2, 3, 4, 5]


def test_failed_rows_get_no_rank_and_sort_last(store: Store, make) -> None:
    make.sweep()
    make.candidate("c-fail", status="failed", accuracy=None, latency_ms=None, size_bytes=None)
    make.candidate("c-ok", accuracy=0.5)
    # Failed before any device ran: no device rows at all.
    early = dataclasses.replace(
        make.candidate("c-early", store=False), status="failed", error="training diverged",
        devices=(), onnx_sha256=None,
    )
    store.add_candidate(early, {})
    frame = leaderboard(store)
    assert list(frame["candidate_id"]) == ["c-ok", "c-early", "c-fail"]
    assert _ranks(frame) == {"c-ok": 1, "c-early": None, "c-fail": None}
    early_row = frame[frame["candidate_id"] == "c-early"].iloc[0]
    assert (early_row["device"], early_row["status"], early_row["error"]) == (
        HOST_DEVICE, "failed", "training diverged")
    assert list(leaderboard(store, status="failed")["candidate_id"]) == ["c-early", "c-fail"]
    assert list(leaderboard(store, status="ok")["candidate_id"]) == ["c-ok"]


def test_failed_early_candidate_uses_the_sweeps_first_device(store: Store, make) -> None:
    make.sweep(config={"devices": ["hexagon-v73", HOST_DEVICE]}, devices=("hexagon-v73", HOST_DEVICE))
    early = dataclasses.replace(make.candidate("c-early", store=False), status="failed",
                                devices=(), onnx_sha256=None)
    store.add_candidate(early, {})
    assert list(leaderboard(store)["device"]) == ["hexagon-v73"]


def test_ranks_are_per_device(store: Store, make) -> None:
    make.sweep()
    sha_a = make.candidate("c-a", store=False).onnx_sha256
    sha_b = make.candidate("c-b", store=False).onnx_sha256
    make.candidate("c-a", devices=(
        DeviceResult(HOST_DEVICE, "ok", accuracy=0.9, latency_ms=1.0, artifact_sha256=sha_a),
        DeviceResult("npu", "ok", accuracy=0.7, latency_ms=1.0, artifact_sha256=sha_a),
    ))
    make.candidate("c-b", devices=(
        DeviceResult(HOST_DEVICE, "ok", accuracy=0.8, latency_ms=1.0, artifact_sha256=sha_b),
        DeviceResult("npu", "ok", accuracy=0.8, latency_ms=1.0, artifact_sha256=sha_b),
    ))
    frame = leaderboard(store)
    assert list(zip(frame["device"], frame["candidate_id"], frame["rank"])) == [
        (HOST_DEVICE, "c-a", 1), (HOST_DEVICE, "c-b", 2), ("npu", "c-b", 1), ("npu", "c-a", 2)]
    assert list(leaderboard(store, device="npu")["candidate_id"]) == ["c-b", "c-a"]
    assert best_candidate(store, device="npu") == "c-b"
    assert best_candidate(store) == "c-a"
    with pytest.raises(NotFoundError, match=f"devices present: npu, {HOST_DEVICE}|devices present: {HOST_DEVICE}, npu"):
        leaderboard(store, device="tpu")


def test_sweep_selection_latest_all_and_unknown(store: Store, make) -> None:
    make.sweep("sw-old")
    make.candidate("c-old", sweep_id="sw-old", accuracy=0.99)
    make.sweep("sw-new")
    make.candidate("c-new1", sweep_id="sw-new", accuracy=0.6)
    make.candidate("c-new2", sweep_id="sw-new", accuracy=0.7)
    latest = leaderboard(store)
    assert set(latest["sweep_id"]) == {"sw-new"}
    assert list(latest["candidate_id"]) == ["c-new2", "c-new1"]
    every = leaderboard(store, sweep="all")
    assert list(every["candidate_id"]) == ["c-new2", "c-new1", "c-old"]
    assert list(every["rank"]) == [1, 2, 1]  # ranked within each sweep
    assert list(leaderboard(store, sweep="sw-old")["candidate_id"]) == ["c-old"]
    with pytest.raises(NotFoundError, match="no sweep 'sw-x'.*`shadow leaderboard --sweep all`"):
        leaderboard(store, sweep="sw-x")
    assert best_candidate(store) == "c-new2"
    assert best_candidate(store, sweep="sw-old") == "c-old"
    with pytest.raises(ConfigError, match="within one sweep"):
        best_candidate(store, sweep="all")


def test_bad_status_filter(store: Store) -> None:
    with pytest.raises(ConfigError, match="--status must be one of ok, failed; got 'good'"):
        leaderboard(store, status="good")


def test_best_candidate_without_ok_rows(store: Store, make) -> None:
    with pytest.raises(NotFoundError, match="run `shadow sweep run CONFIG` first"):
        best_candidate(store)
    make.sweep()
    make.candidate("c-1", status="failed")
    with pytest.raises(NotFoundError,
                       match="no candidate of sweep 'sw-1' ran ok on device 'host-cpu' \\(1 failed\\).*--resume sw-1"):
        best_candidate(store)


def test_rank_rows_handles_duplicate_index_and_missing_metrics() -> None:
    frame = pd.DataFrame(
        {
            "sweep_id": ["s"] * 4,
            "device": ["d"] * 4,
            "status": ["ok", "ok", "failed", "ok"],
            "accuracy": [0.5, None, 0.9, 0.7],
            "latency_ms": [1.0, 1.0, 1.0, 1.0],
            "size_bytes": [1, 1, 1, 1],
            "candidate_id": ["a", "b", "c", "d"],
        },
        index=[0, 0, 1, 1],
    )
    ranks = rank_rows(frame)
    assert ranks.dtype == "Int64"
    # A row without the objective (accuracy) is not eligible, so it gets no rank.
    assert [None if pd.isna(r) else int(r) for r in ranks] == [2, None, None, 1]
    with pytest.raises(ConfigError, match="lacks accuracy"):
        rank_rows(frame.drop(columns=["accuracy"]))


def test_reading_a_board_holds_off_cyclic_collection_and_restores_it(
    store: Store, make, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The collector is off while the rows are read (they are all acyclic), and left as the
    caller had it afterwards: on, off, or after an error."""
    import gc
    import importlib

    # `selection.leaderboard` the attribute is the function: reach the module by its name.
    frame_module = importlib.import_module("selection.leaderboard.frame")

    make.sweep("sw-1")
    for i in range(30):
        make.candidate(f"c{i}", accuracy=0.5 + i / 100)
    seen: list[bool] = []
    read = frame_module.query_sweep

    def watched(*args: object, **kwargs: object) -> object:
        seen.append(gc.isenabled())
        return read(*args, **kwargs)

    monkeypatch.setattr(frame_module, "query_sweep", watched)
    try:
        assert len(leaderboard(store, sweep="sw-1")) == 30
        assert seen == [False] and gc.isenabled()
        gc.disable()
        leaderboard(store, sweep="sw-1")
        assert not gc.isenabled()  # an application that turned it off keeps it off
        gc.enable()
        with pytest.raises(ConfigError):
            leaderboard(store, sweep="sw-1", where="no_such_column > 1")
        assert gc.isenabled()
    finally:
        gc.enable()
