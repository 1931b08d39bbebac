"""Governance of ``mode = "propose"``: pending proposals, ``shadow approve ID``, ``shadow reject ID``.

No Ray: a real store with tiny real candidates, the real gate's decision, and a ``proposal``
event appended with the controller's evidence shape. The CLI runs in-process.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from selection.channels.promotion import current, history, promote
from selection.gate.decision import evaluate_gate
from selection.gate.record import GateDecision
from selection.home import Home
from selection.records import EventRecord
from selection.store import Store
from selection.testing import add_tiny_candidates
from shadow.loop.proposals import ProposalError, approve, pending_proposals, reject
from tests.bad_inputs.contract import assert_user_error, run_cli, snapshot
from tests.selection.conftest import backend_url  # noqa: F401  (fixture: SQLite, PostgreSQL)

CHANNEL = "production"


def propose(store: Store, candidate_id: str, *, channel: str = CHANNEL) -> EventRecord:
    """A proposal as the controller stores it (shadow.loop.decide.gate_and_act, mode = propose)."""
    decision = evaluate_gate(store, candidate_id, channel=channel)
    assert decision.passed, decision.reasons
    stored = store.append_event(EventRecord(
        channel=channel, kind="proposal", data_version="v" * 64, sweep_id="sw-tiny",
        candidate_id=candidate_id, reason=f"{candidate_id} passed the gate; awaiting a decision",
        evidence={"refit": False, "decision": decision.to_json()}))
    assert stored.event_id is not None
    return stored


@pytest.fixture
def home(tmp_path: Path) -> Home:
    return Home.resolve(tmp_path / "home")


@pytest.fixture
def store(home: Home, backend_url: str | None) -> Iterator[Store]:  # noqa: F811
    with Store.open(home, url=backend_url) as opened:
        add_tiny_candidates(opened, ["c-a", "c-b"])
        yield opened


@pytest.fixture
def where(home: Home, backend_url: str | None) -> list[str]:  # noqa: F811
    """The flags naming this test's store."""
    return ["--home", str(home.root), *(["--store", backend_url] if backend_url else [])]


def state(store: Store) -> tuple[object, ...]:
    """What a refused command must leave as it was, on any backend (rows, events, channel)."""
    return (history(store), store.list_events(), current(store, CHANNEL))


def test_approve_promotes_with_the_stored_decision_and_records_who(
        store: Store, capsys: pytest.CaptureFixture[str], where: list[str]) -> None:
    proposal = propose(store, "c-a")
    assert [p.event_id for p in pending_proposals(store)] == [proposal.event_id]
    result = run_cli(capsys, "approve", str(proposal.event_id), "--who", "alice",
                     "--reason", "looks right", "--format", "json", *where)
    assert result.code == 0, result.stderr
    out = json.loads(result.stdout)
    record = current(store, CHANNEL)
    assert record is not None and record.candidate_id == "c-a"
    assert out["history_id"] == record.history_id and out["decision"] == "approval"
    # The history row carries the proposal's gate decision, as stored.
    assert GateDecision.from_json(record.decision) == GateDecision.from_json(
        proposal.evidence["decision"])
    assert record.who == "alice" and f"approved proposal {proposal.event_id}" in (record.reason or "")
    (approval,) = store.list_events(kinds="approval")
    assert approval.event_id == out["event_id"] and approval.history_id == record.history_id
    assert approval.evidence["proposal_id"] == proposal.event_id
    assert approval.evidence["who"] == "alice" and approval.evidence["why"] == "looks right"
    # The channel link serves that model.
    served = store.home.root / "channels" / CHANNEL / "model.onnx"
    assert hashlib.sha256(served.read_bytes()).hexdigest() == record.sha256
    assert pending_proposals(store) == []


def test_reject_stores_a_rejection_and_changes_no_channel(
        store: Store, capsys: pytest.CaptureFixture[str], where: list[str]) -> None:
    proposal = propose(store, "c-a")
    result = run_cli(capsys, "reject", str(proposal.event_id), "--who", "bob",
                     "--reason", "too slow", *where)
    assert result.code == 0, result.stderr
    assert "rejection" in result.stdout and "bob" in result.stdout
    assert current(store, CHANNEL) is None and history(store) == []
    (rejection,) = store.list_events(kinds="rejection")
    assert rejection.evidence == {"proposal_id": proposal.event_id, "who": "bob",
                                  "why": "too slow"}
    assert rejection.candidate_id == "c-a" and rejection.history_id is None
    assert pending_proposals(store) == []


def test_library_refuses_what_is_not_pending(store: Store) -> None:
    proposal = propose(store, "c-a")
    reject(store, proposal.event_id or 0, "bob")
    with pytest.raises(ProposalError, match="already rejected by bob"):
        approve(store, proposal.event_id or 0, "alice")
    assert current(store, CHANNEL) is None


def test_a_newer_proposal_supersedes_and_a_channel_change_makes_stale(store: Store) -> None:
    first = propose(store, "c-a")
    second = propose(store, "c-b")
    assert [p.event_id for p in pending_proposals(store)] == [second.event_id]
    with pytest.raises(ProposalError, match=f"superseded by the newer proposal {second.event_id}"):
        reject(store, first.event_id or 0)
    promote(store, "c-a", channel=CHANNEL)  # by hand: the gate judged a channel with no model
    assert pending_proposals(store) == []
    with pytest.raises(ProposalError, match="is stale: channel 'production' changed"):
        approve(store, second.event_id or 0)


def test_another_channel_is_independent(store: Store) -> None:
    mine = propose(store, "c-a")
    other = propose(store, "c-b", channel="staging")
    assert {p.event_id for p in pending_proposals(store)} == {mine.event_id, other.event_id}
    assert [p.event_id for p in pending_proposals(store, "staging")] == [other.event_id]
    settled = approve(store, other.event_id or 0, "carol")
    assert settled.promotion is not None and settled.promotion.channel == "staging"
    assert [p.event_id for p in pending_proposals(store)] == [mine.event_id]


@pytest.mark.parametrize("verb", ["approve", "reject"])
@pytest.mark.parametrize("case", ["unknown", "not-a-proposal", "settled", "superseded", "stale"])
def test_not_pending_is_one_line_exit_2_and_nothing_changes(
        store: Store, capsys: pytest.CaptureFixture[str], where: list[str], verb: str,
        case: str) -> None:
    proposal = propose(store, "c-a")
    pid = proposal.event_id
    fragment = {"unknown": "no event 999", "not-a-proposal": "not a proposal",
                "settled": "already approved by alice", "superseded": "superseded",
                "stale": "is stale"}[case]
    if case == "unknown":
        pid = 999
    elif case == "not-a-proposal":
        pid = store.append_event(EventRecord(channel=CHANNEL, kind="trigger", reason="new rows",
                                             evidence={"rows": 5})).event_id
    elif case == "settled":
        approve(store, proposal.event_id or 0, "alice")
    elif case == "superseded":
        propose(store, "c-b")
    else:
        promote(store, "c-b", channel=CHANNEL)
    before, rows = snapshot(store.home.root), state(store)
    result = run_cli(capsys, verb, str(pid), "--reason", "x", *where)
    assert_user_error(result, f"shadow {verb}: error:", fragment, "nothing was changed")
    assert snapshot(store.home.root) == before
    assert state(store) == rows


def test_help_has_examples(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    for verb in ("approve", "reject"):
        result = run_cli(capsys, verb, "--help")
        assert result.code == 0
        assert "examples:" in result.stdout and f"shadow {verb} 42" in result.stdout
