"""The gate's view of a leaderboard row (``gate.checks.board_row``) is the row the leaderboard's SQL shows.

The status and the metric columns are derived twice: in SQL for ranking 100,000 rows
(``leaderboard.sql``) and in Python for the gate and refit, which judge one candidate
from its records. This test holds the two derivations together on the same stored rows.
"""

from __future__ import annotations

import dataclasses
import math

import pytest

from selection import HOST_DEVICE, DeviceResult, Store, leaderboard
from selection.gate.checks import board_row
from tests.selection.conftest import Factory

COLUMNS = ("status", "accuracy", "latency_ms", "size_bytes", "host_latency_p50_ms", "host_latency_p99_ms")


def _result(status: str, accuracy: float | None, latency: float | None, sha: str) -> DeviceResult:
    return DeviceResult(device=HOST_DEVICE, status=status,  # type: ignore[arg-type]
                        error=None if status == "ok" else "boom", accuracy=accuracy, latency_ms=latency,
                        host_latency_p50_ms=latency, host_latency_p99_ms=None if latency is None else 2 * latency,
                        size_bytes=1000, artifact_sha256=sha if status == "ok" else None, emulator=None)


@pytest.mark.parametrize("candidate_status", ["ok", "failed"])
def test_status_and_metrics_agree_with_the_leaderboard(store: Store, make: Factory, candidate_status: str) -> None:
    make.sweep()
    cases = {"c-ok": ("ok", 0.9, 1.0), "c-dev-failed": ("failed", None, None), "c-no-latency": ("ok", 0.8, None)}
    built = {}
    for cid, (status, accuracy, latency) in cases.items():
        base = make.candidate(cid, store=False)
        record = dataclasses.replace(
            base, status=candidate_status, error=None if candidate_status == "ok" else "crashed",
            devices=(_result(status, accuracy, latency, base.onnx_sha256),))
        store.add_candidate(record, {base.onnx_sha256: make.fake_onnx(cid)})
        built[cid] = record
    board = leaderboard(store, sweep="sw-1", device=HOST_DEVICE).set_index("candidate_id")
    assert set(board.index) == set(built)
    for cid, record in built.items():
        mine = board_row(record, record.devices[0])
        for column in COLUMNS:
            shown, derived = board.loc[cid, column], mine[column]
            if derived is None or (isinstance(shown, float) and math.isnan(shown)):
                assert derived is None and (shown is None or math.isnan(shown)), (cid, column, shown, derived)
            else:
                assert shown == derived, (cid, column, shown, derived)
