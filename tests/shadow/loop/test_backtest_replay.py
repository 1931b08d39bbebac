"""A tiny drift replay for real: sweeps on Ray, the gate, promote, scoring on unseen periods.

Two boundaries of NOAA weather with one trial per slice: enough to check that
the benchmark drives the product's real paths (every promotion is a history
row carrying a passed gate decision, and production ships refits of the gated
candidate) and that every score is on rows no sweep of that boundary could see.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from selection.channels.promotion import history
from selection.gate.record import GateDecision
from selection.store import Store

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from drift.replay import replay  # noqa: E402
from drift.report import APPROACHES, markdown, plot, summarize  # noqa: E402
from drift.shadow_step import ReplaySettings  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TINY = ReplaySettings(period=365, windows=(1, 2), recent_window=1, expanding_gap=2, trials=1, epochs=2)


def test_replay_promotes_through_the_gate_and_scores_unseen_periods(tmp_path, ray_local):
    home = tmp_path / "home"
    lines: list[str] = []
    result = replay("noaa-weather", TINY, home, lines.append, max_periods=2)

    assert result.boundaries == [1095, 1460]
    with Store.open(home, create=False) as store:
        promotions = [h for h in history(store, channel="production") if h.action == "promote"]
        gate_only = [h for h in history(store, channel="gate-only") if h.action == "promote"]
        strict_refit = [h for h in history(store, channel="refit-improvement") if h.action == "promote"]
        for period in result.periods:
            sweep = store.get_sweep(period.step.sweep_id)
            # The sweep saw rows [0, boundary) only, its holdout being the last period of them...
            assert sweep.holdout.stop == period.start and sweep.holdout.start == period.start - 365
            # ...and is scored on the next period.
            assert (period.start, period.stop) == (period.step.boundary, period.step.boundary + 365)
            # Every slice's best candidate was refit on its slice plus that holdout, no more.
            assert period.step.refits and not period.step.refit_errors
            for parent_id, refit_id in period.step.refits.items():
                refit = store.get_candidate(refit_id)
                assert refit.refit_of == parent_id and refit.refit["holdout"] == [sweep.holdout.start,
                                                                                sweep.holdout.stop]
        shipped = [store.get_candidate(h.candidate_id) for h in promotions]
    assert len(promotions) == sum(p.step.promoted for p in result.periods) >= 1
    assert len(gate_only) == sum(p.step.ablations["gate-only"] for p in result.periods) >= 1
    assert len(strict_refit) == sum(p.step.ablations["refit-improvement"] for p in result.periods) >= 1
    for record, model in zip(promotions, shipped):
        decision = GateDecision.from_json(record.decision)
        assert decision.passed is True and decision.checks
        # Production ships the refit of the candidate the gate judged.
        assert decision.refit is not None
        assert model.refit_of == decision.refit["of"] == decision.challenger.candidate_id
    gated = [GateDecision.from_json(row.decision) for row in gate_only]
    strict = [GateDecision.from_json(row.decision) for row in strict_refit]
    assert all(d.refit is None for d in gated)
    assert all(d.refit is not None and d.refit["of"] for d in strict)
    assert all(d.gate_policy["require"] == "improvement" for d in gated + strict)
    assert all(GateDecision.from_json(row.decision).gate_policy["require"] == "no-regression"
               for row in promotions)
    first = result.periods[0]
    assert first.step.promoted and first.production_id == first.step.refits[first.step.challenger_id]
    # The first champion is the static model, so they agree on the first period.
    assert first.accuracy["system"] == first.accuracy["static"]
    for period in result.periods:
        assert set(period.accuracy) == set(APPROACHES)
        assert all(0.0 <= v <= 1.0 for v in period.accuracy.values())
        # Every retraining rule deploys a refit of one slice's best: the refit oracle bounds them.
        assert period.accuracy["oracle_refit"] >= max(period.accuracy[k] for k in
                                                      ("retrain_all", "retrain_recent", "always_promote"))

    summary = summarize(result)
    assert summary["promotions"] == len(promotions) and summary["periods"] == 2
    assert summary["system_post"] is None  # NOAA's drift is at row 12,000: nothing post-drift here
    assert "| 1095-1459 |" in markdown(result, summary, "test")
    plot(result, tmp_path / "replay.png")
    assert (tmp_path / "replay.png").stat().st_size > 10_000
    assert any("river arf" in line for line in lines)
