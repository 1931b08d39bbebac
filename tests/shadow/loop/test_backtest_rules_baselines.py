"""The backtest's fixed rules: each retrains the sweep's own model on one slice (no baseline, no ensemble)."""

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


def test_the_sweeps_ensemble_is_no_fixed_rule() -> None:
    # A vote among slices is the system's choice (policy = "ensemble"), not a slice retrained:
    # as a "rule" it would make the best rule the system itself.
    records = [_record("c-mlp", "all", "mlp", 0.52), _record("c-ens", "ensemble-top3", "ensemble", 0.60)]
    assert slice_bests(records) == {"all": "c-mlp"}
