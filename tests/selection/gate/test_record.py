"""The gate's decision is a frozen typed record; what is stored is its JSON, in the shape stores hold."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping

import pytest

from selection import ConfigError, GateRefused, Store
from selection.channels.promotion import history, promote
from selection.gate.decision import evaluate_gate, force_decision, promote_through_gate
from selection.gate.record import GateCheck, GateDecision, ModelSummary
from selection.store.rows import decode_json, encode_json
from tests.selection.gate.test_gate import HALF, PERFECT, Lab

#: The keys a stored decision has (what stores already hold; `shadow history --format json` shows them).
KEYS = {"passed", "forced", "channel", "device", "decided_at", "ranking_policy", "gate_policy",
        "challenger", "champion", "holdout", "test", "improvement", "guards", "checks", "reasons"}
SUMMARY = {"candidate_id", "sweep_id", "device", "accuracy", "latency_ms", "size_bytes", "sha256"}


@pytest.fixture
def lab(store: Store) -> Lab:
    return Lab(store)


def test_a_compared_decision_is_typed_and_stored_in_the_old_shape(store: Store, lab: Lab) -> None:
    h = lab.sweep("sw-1", 0)
    lab.candidate("c-half", "sw-1", HALF, h)
    lab.candidate("c-best", "sw-1", PERFECT, h, latency=1.05)
    promote(store, "c-half")
    decision = evaluate_gate(store, "c-best")
    assert isinstance(decision, GateDecision) and decision.passed and not decision.forced
    assert decision.test is not None and decision.test.p_value < 1e-6
    assert decision.champion is not None and decision.champion.rescored is False
    assert [g.status for g in decision.guards] == ["pass"]
    assert [c.check for c in decision.checks] == [
        "constraints", "improvement", "significance", "guard latency_ms"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        decision.channel = "other"  # type: ignore[misc]

    data = decision.to_json()
    assert set(data) == KEYS
    assert set(data["challenger"]) == SUMMARY | {"scored_by", "accuracy_on_holdout"}
    assert set(data["champion"]) == SUMMARY | {"history_id", "rescored", "scored_by", "accuracy_on_holdout"}
    assert set(data["test"]) == {"name", "alternative", "b_challenger_only", "c_champion_only", "rows",
                                 "p_value", "alpha", "passed"}
    assert set(data["guards"][0]) == {"metric", "challenger", "champion", "champion_device",
                                      "max_worse_pct", "status", "worse_by_pct", "detail"}
    assert data["checks"][0] == {"check": "constraints", "passed": True,
                                 "detail": "meets the ranking policy 'default'"}
    assert data["reasons"] == [] and data["passed"] is True
    assert data["test"]["p_value"] == decision.test.p_value
    # The record is read by its attributes only; the JSON is what is stored, not a second way in.
    assert not isinstance(decision, Mapping)
    with pytest.raises(TypeError):
        decision["passed"]  # type: ignore[index]

    record = promote_through_gate(store, "c-best")
    stored = history(store)[0].decision
    assert stored == json.loads(encode_json(data, what="d")) | {"decided_at": stored["decided_at"]}
    assert record.decision == stored
    again = GateDecision.from_json(stored)
    assert again.to_json() == stored  # read back by the same code, losslessly
    assert again == dataclasses.replace(decision, decided_at=stored["decided_at"])


def test_refusals_forced_overrides_and_a_first_model(store: Store, lab: Lab) -> None:
    h = lab.sweep("sw-1", 0)
    lab.candidate("c-best", "sw-1", PERFECT, h)
    lab.candidate("c-half", "sw-1", HALF, h)
    first = evaluate_gate(store, "c-best")
    assert first.champion is None and first.test is None and first.to_json()["holdout"] is None
    assert set(first.to_json()["challenger"]) == SUMMARY  # not scored against anyone yet
    promote_through_gate(store, "c-best")

    with pytest.raises(GateRefused) as refused:
        promote_through_gate(store, "c-half")
    decision = refused.value.decision
    assert isinstance(decision, GateDecision) and not decision.passed
    assert decision.reasons and decision.reasons == [c.detail for c in decision.checks if not c.passed]
    assert decision.check("improvement").passed is False

    forced = force_decision(decision, "field test", "me@host")
    data = forced.to_json()
    assert set(data) == KEYS | {"forced_reason", "forced_by", "gate_passed"}
    assert (data["forced"], data["gate_passed"], data["passed"], data["forced_by"]) == (True, False, False, "me@host")
    assert decision.override is None  # the original is untouched
    promote_through_gate(store, "c-half", force=True, reason="field test", who="me@host")
    stored = history(store)[0].decision
    assert stored["forced"] is True and stored["forced_reason"] == "field test"
    assert GateDecision.from_json(stored).override is not None
    assert GateDecision.from_json(stored).to_json() == stored

    # Already the model: the champion check refuses, and the record says who the champion is.
    same = evaluate_gate(store, "c-half")
    assert not same.passed and same.champion is not None and same.champion.candidate_id == "c-half"
    assert "already the model" in same.check("champion").detail


def test_from_json_refuses_what_the_gate_did_not_write() -> None:
    with pytest.raises(ConfigError, match="lacks channel, device, decided_at, challenger"):
        GateDecision.from_json({"passed": True, "checks": [{"check": "x"}]})


def test_records_round_trip_through_json() -> None:
    summary = ModelSummary("c-1", "sw-1", "npu", 0.9, None, 10, "a" * 64, history_id=3)
    decision = GateDecision("production", "npu", "2024-05-01T12:00:00+00:00", {"name": "default"},
                            {"alpha": 0.05}, summary, (GateCheck("constraints", False, "no"),),
                            refit={"of": "c-0", "rows": 5})
    data = decode_json(encode_json(decision.to_json(), what="decision"))
    assert data["reasons"] == ["no"] and data["refit"] == {"of": "c-0", "rows": 5}
    assert GateDecision.from_json(data) == decision
