"""``shadow promote CANDIDATE --evidence live``: the gate on the labelled requests both answered."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from selection import Store, promote
from selection.channels.promotion import current, history
from selection.gate.live import evaluate_live_gate
from selection.home import Home
from selection.live import Feedback, ModelRef, PredictionLog, live_log_path
from selection.testing import add_tiny_candidates
from shadow.cli.main import main


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    monkeypatch.delenv("SHADOW_STORE", raising=False)
    monkeypatch.delenv("SHADOW_HOME", raising=False)
    with Store.open(Home.resolve(tmp_path / "home")) as opened:
        add_tiny_candidates(opened, ["c-a", "c-b"])
        promote(opened, "c-a")
        yield opened


def _log(store: Store, shadow_right: int, both_right: int, champion_right: int) -> None:
    """Champion c-a and shadow c-b on the same labelled requests, outcomes as asked."""
    ref = {c: ModelRef(c, store.get_candidate(c).onnx_sha256 or "", ("dry", "rain"))
           for c in ("c-a", "c-b")}
    labels = []
    with PredictionLog(live_log_path(store.home.root, "production")) as log:
        plan = [("dry", "rain")] * shadow_right + [("rain", "rain")] * both_right \
            + [("rain", "dry")] * champion_right
        for i, (champ, shadow) in enumerate(plan):
            log.log_champion(f"r{i}", ref["c-a"], [champ], "0" * 64)
            log.log_shadow(f"r{i}", ref["c-b"], [shadow], [champ])
            labels.append(Feedback(f"r{i}", "rain"))
        log.add_feedback(labels)


def test_live_evidence_promotes_and_is_recorded(store: Store,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    _log(store, shadow_right=30, both_right=20, champion_right=2)
    home = str(store.home.root)
    assert main(["promote", "c-b", "--evidence", "live", "--dry-run", "--home", home,
                 "--format", "json"]) == 0
    capsys.readouterr()
    assert main(["promote", "c-b", "--evidence", "live", "--home", home]) == 0
    assert current(store, "production").candidate_id == "c-b"  # type: ignore[union-attr]
    decision = history(store, channel="production")[0].decision
    assert decision["evidence"]["kind"] == "live" and decision["evidence"]["rows"] == 52
    assert decision["test"]["b_challenger_only"] == 30
    assert decision["test"]["c_champion_only"] == 2
    assert decision["holdout"] is None and decision["passed"] is True
    assert any("labelled live request rows" in c["detail"] for c in decision["checks"])
    json.dumps(decision)


def test_live_evidence_refuses_a_worse_or_unseen_challenger(
        store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    home = str(store.home.root)
    decision = evaluate_live_gate(store, "c-b")
    assert not decision.passed and "has no prediction log" in decision.reasons[0]
    _log(store, shadow_right=3, both_right=20, champion_right=3)
    assert main(["promote", "c-b", "--evidence", "live", "--home", home]) == 2
    err = capsys.readouterr().err
    assert "the gate refused c-b" in err and len(err.strip().splitlines()) == 1
    assert current(store, "production").candidate_id == "c-a"  # type: ignore[union-attr]
