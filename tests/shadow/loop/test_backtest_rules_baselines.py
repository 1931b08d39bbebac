"""The backtest with baselines: a fixed rule retrains the sweep's own model, not its baseline."""

from __future__ import annotations

from selection.records import CandidateRecord, DeviceResult
from shadow.loop.backtest.rules import slice_bests


def _record(cid: str, slice_id: str, family: str, accuracy: float) -> CandidateRecord:
    return CandidateRecord(cid, "s", slice_id, family, {}, 0, "ok",
                           devices=(DeviceResult(device="host-cpu", status="ok", accuracy=accuracy),))


def test_a_fixed_rule_retrains_the_sweeps_own_model_not_its_baseline() -> None:
    records = [_record("c-mlp", "all", "mlp", 0.52), _record("c-prior", "all", "prior", 0.55)]
    assert slice_bests(records) == {"all": "c-prior"}
    assert slice_bests(records, frozenset({"prior"})) == {"all": "c-mlp"}
